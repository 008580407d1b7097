/**
 * The sidecar's checks: before anything is created, that the file is a SQLite database in WAL mode
 * (`checkDatabase`); at start and at a clean stop, that the journal's head is the database
 * (`checkHead`, the third layer, see sidecar-state.ts).
 */
import * as fs from 'node:fs';
import { pageTerm } from '../format/index.js';
import { ReplicateError } from './replicator.js';
import { WalCapture } from './wal-capture.js';

/** Refuses, before anything is created, a file that is not a SQLite database in WAL mode. */
export function checkDatabase(file: string, shown: string): void {
  let head: Buffer;
  try {
    const fd = fs.openSync(file, 'r');
    try {
      head = Buffer.alloc(100);
      fs.readSync(fd, head, 0, 100, 0);
    } finally {
      fs.closeSync(fd);
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ReplicateError(code === 'ENOENT' ? `${shown} does not exist` : `cannot read ${shown}: ${code}`);
  }
  if (head.subarray(0, 16).toString('latin1') !== 'SQLite format 3\0') {
    throw new ReplicateError(`${shown} is not a SQLite database (or is still empty)`);
  }
  if (head[18] !== 2 || head[19] !== 2) {
    throw new ReplicateError(
      `${shown} is not in WAL mode: replicate follows WAL databases (the application sets PRAGMA journal_mode=WAL); open other databases through Mycelite instead`,
    );
  }
}

/** The check of the journal's head (see above). */
export abstract class HeadCheck extends WalCapture {
  /**
   * Under SQLite's write lock, with every committed transaction copied: checks that the database as
   * SQLite's readers see it (the file with the WAL's committed frames over it, read afresh) is the
   * journal's head (its checksum). If not — a defect, never expected — the difference is recorded as one
   * outside snapshot and said loudly, so the journal never ends short of or apart from the database.
   * Reads the whole database: done at start and at a clean stop only.
   */
  protected checkHead(when: string): void {
    const head = this.journal.position;
    if (head.txid === 0n) return;
    const h = this.wal.header();
    const end = this.committedEnd(h);
    const { frames } = this.scanGeneration(h, end);
    const now = this.currentPages(h, end, frames);
    const page = this.page(now.pageSize, 2);
    let sum = 0n;
    for (let pgno = 1; pgno <= now.dbPages; pgno++) {
      now.readPage(pgno, page);
      sum ^= pageTerm(page, pgno);
    }
    if (sum === head.checksum && now.dbPages === this.headPages) return;
    this.recordDifference(
      `check ${when}: the journal's head (txid ${head.txid}) is not ${this.file} as it is (a defect of the sidecar: please report it with this line)`,
    );
  }
}
