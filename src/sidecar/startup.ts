/**
 * Startup (the fifth layer, see sidecar-state.ts): the journal and the native connections are opened,
 * then, under SQLite's write lock, the journal is brought up to the database — resumed exactly at its
 * head when the state file and the WAL still describe it, else the difference recorded once — and
 * checked.
 */
import * as fs from 'node:fs';
import { JournalWriter } from '../journal/journal-writer.js';
import { nodeRuntime } from '../node/runtime.js';
import { historyPages } from '../timetravel/history-pages.js';
import { NativeDatabase } from './native.js';
import { ReplicateError } from './replicator.js';
import { WalSwap } from './swap.js';
import { type WalHeader, walIndexEnd } from './wal-file.js';
import { readWalState, type WalPosition, WalStateFile } from './wal-state.js';

/** Startup and resume (see above). */
export abstract class Startup extends WalSwap {
  start(): void {
    const { paths } = this;
    const fsys = nodeRuntime.fs;
    if (fsys.exists(paths.replica)) {
      throw new ReplicateError(
        `${this.file} is a replica (${paths.replica}): replicate follows the writer's database`,
      );
    }
    if (!fsys.exists(paths.dir)) fsys.mkdir(paths.dir);
    this.lock = fsys.tryLockExclusive?.(paths.lock);
    if (!this.lock) {
      throw new ReplicateError(
        `${this.file}'s journal is held by another process (another mycelite replicate, or an application writing through Mycelite)`,
      );
    }
    const reader = new NativeDatabase!(this.file, { fileMustExist: true });
    this.reader = reader;
    const writer = new NativeDatabase!(this.file, { fileMustExist: true });
    this.writer = writer;
    const mode = String(writer.pragma('journal_mode', { simple: true }));
    if (mode !== 'wal') {
      throw new ReplicateError(`${this.file} is not in WAL mode (journal_mode=${mode})`);
    }
    writer.pragma(`busy_timeout = ${this.options.startTimeoutMs ?? 30_000}`);
    reader.pragma('busy_timeout = 5000');
    this.dbFd = fs.openSync(this.file, 'r');
    // The wal-index exists once a connection has read the database in WAL mode.
    reader.prepare('SELECT count(*) FROM sqlite_schema').get();
    this.shmFd = fs.openSync(`${this.file}-shm`, 'r');
    if (fsys.fileSize(paths.journal) === 0) JournalWriter.create(fsys, paths.journal);
    this.journal = JournalWriter.open(fsys, paths.journal);
    this.journal.preallocate(1 << 20);
    const last = this.journal.last;
    if (last) {
      this.headPages = last.dbPages;
      this.headPageSize = last.pageSize;
    } else if (this.journal.position.txid > 0n) {
      const { pages } = historyPages(fsys, paths, this.journal.position.txid);
      this.headPages = pages.dbPages;
      this.headPageSize = pages.pageSize;
      pages.close?.();
    }
    const saved = readWalState(paths.wal);
    this.state = new WalStateFile(paths.wal);
    // Freeze: no transaction can commit while the journal is brought up to the database.
    writer.exec('BEGIN IMMEDIATE');
    writer.pragma('busy_timeout = 0');
    try {
      this.bringUp(saved);
      this.swapInside();
      this.checkHead('at start');
    } finally {
      writer.exec('COMMIT');
    }
  }

  /** Startup, under the write lock: resume at the journal's head, or record the difference once. */
  private bringUp(saved: WalPosition[] | undefined): void {
    const head = this.journal.position;
    const h = this.wal.header();
    const end = this.committedEnd(h);
    const scan = this.scanGeneration(h, end);
    const match = this.resumePoint(saved?.[0], h, scan.commits);
    if (head.txid > 0n && match && h) {
      // Resume exactly: the transactions after the head's commit frame become snapshots. Their pages'
      // old content comes from the WAL (frames after the head) or from the journal's head state: the
      // database file may already hold later frames that a checkpoint copied while the sidecar was down.
      this.frames = this.scanGeneration(h, match.frame).frames;
      this.cursor = { header: h, frame: match.frame, ck0: match.ck0, ck1: match.ck1 };
      this.genSalt1 = h.salt1;
      this.fromHead(() => this.capture());
      this.say(`resumed at txid ${head.txid}; the journal is at txid ${this.journal.position.txid}`);
      return;
    }
    if (head.txid === 0n) {
      const snap = this.recordDifference(undefined);
      this.say(
        `bootstrapped ${this.file}: txid ${this.journal.position.txid} is the database as it is (${snap?.dbPages ?? 0} pages)`,
      );
      return;
    }
    this.recordDifference(
      `the WAL the journal's head (txid ${head.txid}) came from is gone (checkpointed and reset, or the journal mode switched, while the sidecar was stopped)`,
    );
  }

  /**
   * Where in the WAL the journal's head came from, when the state file's position `p` still describes
   * the WAL and the journal: same generation, its commit frame still there with the same running
   * checksum, the journal's snapshot at its txid with its checksum. The head is then the commit that
   * many transactions after it (each commit frame became exactly one snapshot).
   */
  private resumePoint(
    p: WalPosition | undefined,
    h: WalHeader | undefined,
    commits: Map<number, [number, number]>,
  ): { frame: number; ck0: number; ck1: number } | undefined {
    const head = this.journal.position;
    if (!p || !h || head.txid === 0n || p.txid > head.txid) return undefined;
    if (this.restartedAfter(p, h)) return { frame: 0, ck0: h.ck0, ck1: h.ck1 };
    if (p.salt1 !== h.salt1 || p.salt2 !== h.salt2 || p.pageSize !== h.pageSize) return undefined;
    if (p.frame === 0 ? p.ck0 !== h.ck0 || p.ck1 !== h.ck1 : !sameCk(commits.get(p.frame), p))
      return undefined;
    if (this.journalChecksumAt(p.txid) !== p.checksum) return undefined;
    const need = Number(head.txid - p.txid);
    if (need === 0) return { frame: p.frame, ck0: p.ck0, ck1: p.ck1 };
    const later = [...commits.keys()].filter((f) => f > p.frame);
    const frame = later[need - 1];
    if (frame === undefined) return undefined;
    const [ck0, ck1] = commits.get(frame)!;
    return { frame, ck0, ck1 };
  }

  /**
   * True when the WAL restarted exactly once since the head's position `p` (salt-1 one more), from the
   * head: the database file is the head's state (checksum) and holds no frame of the new generation yet
   * (the wal-index's nBackfill is 0 before and after the check). What SQLite does when the application
   * writes after a clean stop of the sidecar (whose last swap checkpointed everything): its frames are
   * all still there, so the sidecar resumes at the new generation's first frame.
   */
  private restartedAfter(p: WalPosition, h: WalHeader): boolean {
    const head = this.journal.position;
    if (p.txid !== head.txid || p.checksum !== head.checksum || p.salt1 === 0) return false;
    if (h.salt1 !== (p.salt1 + 1) >>> 0 || h.pageSize !== this.headPageSize) return false;
    const backfilled = (): number | undefined =>
      walIndexEnd(this.shmFd!, h) === undefined ? undefined : this.backfilled();
    return backfilled() === 0 && this.fileIsHead() && backfilled() === 0;
  }
}

function sameCk(ck: [number, number] | undefined, p: WalPosition): boolean {
  return ck !== undefined && ck[0] === p.ck0 && ck[1] === p.ck1;
}
