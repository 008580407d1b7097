/**
 * The swap (the reader's read transaction moved to the WAL's end, with a checkpoint, under SQLite's
 * write lock) and the yield to an application's blocking checkpoint: the fourth layer (see
 * sidecar-state.ts).
 */
import * as fs from 'node:fs';
import { findConflictingLock } from '../node/file-lock.js';
import { HeadCheck } from './checks.js';
import { sameGeneration, type WalHeader, walIndexEnd } from './wal-file.js';

/** The lock bytes of the wal-index (SQLite's os_unix.c): base offset, then WRITE, CKPT, RECOVER, READ(0..4). */
const SHM_LOCKS = 120;
const WAL_WRITE_LOCK = 0;
const WAL_CKPT_LOCK = 1;

/** Swap and yield (see above). */
export abstract class WalSwap extends HeadCheck {
  /** Runs `fn` holding SQLite's write lock (taken here unless a swap or startup holds it already). */
  protected override underWriteLock<T>(fn: () => T): T {
    const writer = this.writer!;
    if (writer.inTransaction) return fn();
    writer.pragma('busy_timeout = 10000');
    try {
      writer.exec('BEGIN IMMEDIATE');
    } finally {
      writer.pragma('busy_timeout = 0');
    }
    try {
      const r = fn();
      this.swapInside();
      return r;
    } finally {
      writer.exec('COMMIT');
    }
  }

  /**
   * The swap, with the write lock held: copy everything, move the reader's read transaction to the end
   * (checkpointing in between), so SQLite may copy those frames into the file and later restart the WAL.
   */
  protected swapInside(): void {
    const reader = this.reader!;
    this.capture();
    if (reader.inTransaction) reader.exec('COMMIT');
    reader.pragma('wal_checkpoint(PASSIVE)');
    reader.exec('BEGIN');
    reader.prepare('SELECT count(*) FROM sqlite_schema').get();
    this.swapFrame = this.cursor.frame;
    this.swapAt = Date.now();
    this.yielded = false;
  }

  /**
   * Tries a swap (and with `check`, checkHead after it); false when an application holds the write lock
   * (try again later).
   */
  protected trySwap(opts: { check?: string } = {}): boolean {
    const writer = this.writer!;
    try {
      writer.exec('BEGIN IMMEDIATE');
    } catch (e) {
      if ((e as { code?: string }).code?.startsWith('SQLITE_BUSY')) return false;
      throw e;
    }
    try {
      this.swapInside();
      if (opts.check) this.checkHead(opts.check);
    } finally {
      writer.exec('COMMIT');
    }
    return true;
  }

  /**
   * The process (pid) holding both SQLite's write lock and its checkpoint lock on the database: an
   * application's FULL, RESTART or TRUNCATE checkpoint, waiting for readers (the sidecar's) to finish.
   */
  protected blockingCheckpointer(): number | undefined {
    const w = findConflictingLock(this.shmFd!, 'write', SHM_LOCKS + WAL_WRITE_LOCK, 1);
    if (!w || w.pid === process.pid || w.pid <= 0) return undefined;
    const c = findConflictingLock(this.shmFd!, 'write', SHM_LOCKS + WAL_CKPT_LOCK, 1);
    return c && c.pid === w.pid ? w.pid : undefined;
  }

  /**
   * Lets an application's blocking checkpoint (process `pid`) finish instead of waiting its whole busy
   * timeout for the sidecar's read transaction: with every committed frame copied, the reader ends its
   * transaction; if the checkpointer still holds the write lock then (so no frame can follow the ones
   * copied until its restart), the reader waits until every frame is in the database file and begins
   * again on the file alone, which lets the checkpointer restart or truncate the WAL. A restart seen
   * afterwards is checked (the database file must be the journal's head, see unsafeChange).
   */
  protected async yieldTo(pid: number): Promise<void> {
    const reader = this.reader!;
    const h = this.wal.header();
    if (!h || !this.cursor.header || !sameGeneration(h, this.cursor.header)) return;
    if (walIndexEnd(this.shmFd!, h) !== this.cursor.frame) return;
    this.yielding = true;
    reader.exec('COMMIT');
    this.yielded = true;
    try {
      const h2 = this.wal.header();
      const still =
        this.blockingCheckpointer() === pid &&
        h2 !== undefined &&
        sameGeneration(h, h2) &&
        walIndexEnd(this.shmFd!, h) === this.cursor.frame;
      if (!still) return;
      this.swapFrame = this.cursor.frame;
      const until = Date.now() + 2000;
      while (Date.now() < until && !this.stopped) {
        await new Promise((r) => setTimeout(r, 1));
        if (this.blockingCheckpointer() !== pid) break;
        const b = new Uint8Array(100);
        fs.readSync(this.shmFd!, b, 0, 100, 0);
        const v = new DataView(b.buffer);
        if (v.getUint32(96, true) >= v.getUint32(16, true)) break;
      }
    } finally {
      if (!this.stopped) {
        reader.exec('BEGIN');
        reader.prepare('SELECT count(*) FROM sqlite_schema').get();
        this.noteFileAhead(h);
      }
      this.yielding = false;
    }
  }

  /**
   * After the reader was off the WAL (generation `h`) and began again: frames the application committed
   * in that window lie past the cursor and under the reader's new read mark, so a checkpoint may copy
   * them into the database file — already done in the window, or at any time until they are copied
   * into the journal. The file is then no longer the old content of the pages they write. Until the
   * cursor passes the reader's read mark (at most the WAL's committed end now; nothing past it can be
   * copied while the reader holds it), captures take old content from the journal's head state instead
   * (fromHead).
   */
  private noteFileAhead(h: WalHeader): void {
    const now = this.wal.header();
    if (!now || !sameGeneration(now, h)) return; // a restart: unsafeChange decides
    const end = this.committedEnd(now);
    if (end > this.cursor.frame) this.fileAheadUntil = Math.max(this.fileAheadUntil, end);
  }
}
