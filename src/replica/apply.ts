/**
 * Applying snapshots to a replica's database file so that other processes reading it with SQLite see
 * each snapshot all at once or not at all (docs/ARCHITECTURE.md, "Replica").
 *
 * The pages are written through SQLite itself: one `BEGIN IMMEDIATE … COMMIT` on an uncaptured
 * connection of the Mycelite VFS, writing whole pages into `sqlite_dbpage`. SQLite's own rollback
 * journal and locks make the transaction atomic for readers and after a crash. Two things SQLite does
 * differently from the writer are finished afterwards, under SQLite's EXCLUSIVE lock (the **post step**):
 * SQLite's commit sets the change counter (page 1, bytes 24–27 and 92–99) to its old value + 1, which is
 * the writer's value in the usual case but not always; and a shrinking snapshot is not truncated by
 * SQLite (its page 1 carries the new size, which readers trust). Runtime-neutral.
 */
import { Database } from '../engine/database.js';
import type { Sqlite3 } from '../engine/sqlite.js';
import { type FileHandle, type FileSystem, readAt } from '../files/file-system.js';
import {
  FLAG_FULL_IMAGE,
  hex64,
  memorySource,
  pageTerm,
  type SnapshotHeader,
  sameBytes,
  samePage,
  walkPatches,
} from '../format/index.js';
import { readDbPages, readPageSize } from '../journal/sqlite-header.js';
import { type EncodedSnapshot, unpackSnapshot } from '../protocol/stream.js';

/** What must hold after a snapshot is applied: its txid, size, and the change-counter bytes of page 1. */
export interface PostStep {
  txid: bigint;
  pageSize: number;
  dbPages: number;
  /** Page 1 bytes 24–27 and 92–99, as the writer has them. */
  counter: Uint8Array;
  /**
   * Page 1 bytes 18–19 (the file format: 2 for a WAL database that `mycelite replicate` captured), as the
   * writer has them. SQLite here sees a WAL-format file as rollback format (the VFS reads 2 as 1; it has
   * no shared memory for a WAL), so what it writes to page 1 says 1: the post step puts the writer's
   * bytes back. Absent in a step read back from the inflight marker.
   */
  format?: Uint8Array;
}

/**
 * The snapshot with its body inflated, once, for walking it several times (plan and apply): the
 * parser's `raw` when it kept it, else inflated here. Only for walking, never for storing.
 */
export function unpack(s: EncodedSnapshot): EncodedSnapshot {
  if (s.raw) return s.raw;
  try {
    return unpackSnapshot(s.bytes, s.header);
  } catch (e) {
    throw new ChecksumMismatchError(`snapshot ${s.header.txid}: bad body (${(e as Error).message})`);
  }
}

/** The snapshot does not lead to the database it names: nothing was applied (the follower resets). */
export class ChecksumMismatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ChecksumMismatchError';
  }
}

/**
 * A full image (a new replica's or a reset's) does not give the database its header names: the hub sent
 * a damaged or lying image. Nothing was changed; the replica stays where it was.
 */
export class ImageMismatchError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ImageMismatchError';
  }
}

/**
 * The database checksum of the database a full image gives (pages it does not name are zeros), computed
 * from its bytes alone, before anything is written. Throws ImageMismatchError when it is not the image's
 * postChecksum, or when its body does not walk.
 */
export function checkImage(bytes: Uint8Array, h: SnapshotHeader): void {
  const what = `the hub's image of txid ${h.txid}`;
  let sum = 0n;
  try {
    let next = 1;
    let pgno = 0;
    let page: Uint8Array | undefined;
    const zeros = (upTo: number): void => {
      for (; next <= upTo; next++) sum ^= pageTerm(new Uint8Array(h.pageSize), next);
    };
    walkPatches(memorySource(bytes), 0, h, (p, offset, run) => {
      if (p !== pgno) {
        if (page) sum ^= pageTerm(page, pgno);
        zeros(p - 1);
        pgno = p;
        next = p + 1;
        page = new Uint8Array(h.pageSize);
      }
      page!.set(run, offset);
    });
    if (page) sum ^= pageTerm(page, pgno);
    zeros(h.dbPages);
  } catch (e) {
    throw new ImageMismatchError(`${what} is damaged (${(e as Error).message}): nothing was changed`, {
      cause: e,
    });
  }
  if (sum !== h.postChecksum) {
    throw new ImageMismatchError(
      `${what} gives checksum ${hex64(sum)}, not its postChecksum ${hex64(h.postChecksum)}: ` +
        'the hub sent a damaged image, nothing was changed',
    );
  }
}

/** A reader kept SQLite's lock too long: nothing was applied; try again. */
export class ApplyBusyError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ApplyBusyError';
  }
}

/** How long one apply waits for readers to let go of the database (ms). */
const BUSY_TIMEOUT_MS = 250;
const COUNTER_BYTES = 12;

const isBusy = (e: unknown): boolean => /SQLITE_BUSY|database is locked/.test(String((e as Error)?.message));

/** The replica's database file, open for applying snapshots. */
export class ReplicaFile {
  private db: Database;
  private readonly zeroTerms = new Map<string, bigint>();

  constructor(
    private readonly sqlite3: Sqlite3,
    private readonly fs: FileSystem,
    readonly path: string,
    private readonly vfs: string,
  ) {
    this.db = this.connect();
  }

  private connect(): Database {
    const db = Database.open(this.sqlite3, this.path, { vfs: this.vfs });
    try {
      db.pragma('journal_mode = DELETE');
      // EXTRA: the commit fsyncs the directory after deleting the rollback journal. Under FULL a power
      // loss could bring the journal back and roll back an apply the marker already counts as done.
      db.pragma('synchronous = EXTRA');
      db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      // A read: SQLite rolls back a hot journal a crash left behind.
      db.pragma('schema_version');
    } catch (e) {
      db.close();
      throw e;
    }
    return db;
  }

  /**
   * Lets SQLite roll back what a failed commit left (a hot journal: the commit did not happen), so that
   * the file can be checked as it is. A read does it, as when the connection is opened.
   */
  settle(): void {
    try {
      // A page size change that failed to reconnect left the connection closed: open it again.
      if (!this.db.open) this.db = this.connect();
      this.db.pragma('schema_version');
    } catch (e) {
      if (isBusy(e)) throw new ApplyBusyError('the replica database is busy', { cause: e });
      throw e;
    }
  }

  /**
   * Reading and writing pages through `sqlite_dbpage` for one apply: the file's size in pages before it,
   * a page as it was (undefined past that size), and a page written (in the format the file keeps).
   */
  private pageAccess(): {
    oldPages: number;
    oldPage: (pgno: number) => Uint8Array | undefined;
    put: { run: (pgno: number, page: Uint8Array) => void };
  } {
    const db = this.db;
    const oldPages = Number(db.pragma('page_count', { simple: true }));
    const read = db.prepare('SELECT data FROM sqlite_dbpage WHERE pgno = ?').pluck();
    const format = this.fileFormat();
    const oldPage = (pgno: number): Uint8Array | undefined =>
      pgno <= oldPages ? withFormat(read.get(pgno) as Uint8Array, pgno, format) : undefined;
    const sqlitePut = db.prepare('INSERT INTO sqlite_dbpage(pgno, data) VALUES (?, ?)');
    const put = {
      run: (pgno: number, page: Uint8Array): void => {
        sqlitePut.run(pgno, asRollback(page, pgno));
      },
    };
    return { oldPages, oldPage, put };
  }

  /** Page 1 bytes 18–19 as they are in the file (SQLite here may be shown other values, see PostStep). */
  private fileFormat(): Uint8Array | undefined {
    if (this.fs.fileSize(this.path) < 100) return undefined;
    const f = this.fs.open(this.path, { readonly: true });
    try {
      return readAt(f, 18, 2);
    } finally {
      f.close();
    }
  }

  /** Page size and size in pages of the file as it is (0, 0 when empty). */
  shape(): { pageSize: number; pages: number } {
    const size = this.fs.fileSize(this.path);
    if (size < 100) return { pageSize: 0, pages: 0 };
    const f = this.fs.open(this.path, { readonly: true });
    try {
      const pageSize = readPageSize(f);
      return { pageSize, pages: readDbPages(f, pageSize) };
    } finally {
      f.close();
    }
  }

  /** The database checksum of the file (pages 1..n of the header's size, with `counter` patched in). */
  checksum(shape = this.shape(), counter?: Uint8Array): bigint {
    if (shape.pages === 0) return 0n;
    const f = this.fs.open(this.path, { readonly: true });
    try {
      let sum = 0n;
      const per = Math.max(1, Math.floor((1 << 20) / shape.pageSize));
      for (let first = 1; first <= shape.pages; first += per) {
        const n = Math.min(per, shape.pages - first + 1);
        const chunk = readAt(f, (first - 1) * shape.pageSize, n * shape.pageSize);
        if (first === 1 && counter) setCounter(chunk, counter);
        for (let i = 0; i < n; i++) {
          sum ^= pageTerm(chunk.subarray(i * shape.pageSize, (i + 1) * shape.pageSize), first + i);
        }
      }
      return sum;
    } finally {
      f.close();
    }
  }

  /** What the post step of `snapshot` must make true (computed before anything is written). */
  plan(bytes: Uint8Array, h: SnapshotHeader): PostStep {
    return this.planBatch([{ bytes, header: h }]);
  }

  /**
   * What the post step after a batch of snapshots must make true: page 1 as the file has it (zeros
   * before a full image), with each snapshot's runs on page 1 laid on in order.
   */
  planBatch(items: readonly EncodedSnapshot[]): PostStep {
    const first = items[0]!.header;
    const last = items[items.length - 1]!.header;
    let page1: Uint8Array;
    if ((first.flags & FLAG_FULL_IMAGE) === 0) {
      const f = this.fs.open(this.path, { readonly: true });
      try {
        page1 = readAt(f, 0, first.pageSize);
      } finally {
        f.close();
      }
    } else {
      page1 = new Uint8Array(first.pageSize);
    }
    const stop = new Error('past page 1');
    for (const { bytes, header } of items) {
      try {
        walkPatches(memorySource(bytes), 0, header, (pgno, offset, run) => {
          if (pgno > 1) throw stop;
          page1.set(run, offset);
        });
      } catch (e) {
        if (e !== stop) throw e;
      }
    }
    return {
      txid: last.txid,
      pageSize: last.pageSize,
      dbPages: last.dbPages,
      counter: getCounter(page1),
      format: page1.slice(18, 20),
    };
  }

  /**
   * Applies one validated snapshot in one SQLite transaction, checking that the database moves from
   * `current` (its checksum now, which must be the snapshot's preChecksum unless it is a full image) to
   * the snapshot's postChecksum. On a mismatch nothing is applied (ChecksumMismatchError); when readers
   * hold the database too long, nothing is applied (ApplyBusyError). Call `finish` afterwards.
   */
  apply(bytes: Uint8Array, h: SnapshotHeader, current: bigint): void {
    const full = (h.flags & FLAG_FULL_IMAGE) !== 0;
    if (!full && h.preChecksum !== current) {
      throw new ChecksumMismatchError(
        `snapshot ${h.txid} starts from checksum ${hex64(h.preChecksum)} but the replica is at ${hex64(current)}`,
      );
    }
    const shape = this.shape();
    if (shape.pages > 0 && shape.pageSize !== h.pageSize) {
      if (!full) {
        throw new ChecksumMismatchError(
          `snapshot ${h.txid} has page size ${h.pageSize} but the replica's is ${shape.pageSize}`,
        );
      }
      this.changePageSize(h.pageSize);
    } else if (shape.pages === 0) {
      this.db.pragma(`page_size = ${h.pageSize}`);
    }
    this.transaction(`snapshot ${h.txid}`, h.postChecksum, () =>
      this.write(bytes, h, full ? 0n : current, full),
    );
  }

  /**
   * Applies consecutive validated snapshots, none a full image, in one SQLite transaction: the newest
   * version of each page wins, pages past the last snapshot's size are dropped. The database must move
   * from `current` (the first one's preChecksum) to the last one's postChecksum, else nothing is
   * applied (ChecksumMismatchError). Call `finish` with `planBatch`'s step afterwards.
   */
  applyBatch(items: readonly EncodedSnapshot[], current: bigint): void {
    const first = items[0]!.header;
    const last = items[items.length - 1]!.header;
    const what = `snapshots ${first.txid}..${last.txid}`;
    if (first.preChecksum !== current) {
      throw new ChecksumMismatchError(
        `${what} start from checksum ${hex64(first.preChecksum)} but the replica is at ${hex64(current)}`,
      );
    }
    const shape = this.shape();
    for (const { header: h } of items) {
      if ((h.flags & FLAG_FULL_IMAGE) !== 0) throw new Error(`${what}: a batch cannot hold a full image`);
      if (h.pageSize !== shape.pageSize || shape.pages === 0) {
        throw new ChecksumMismatchError(
          `snapshot ${h.txid} has page size ${h.pageSize} but the replica's is ${shape.pageSize}`,
        );
      }
    }
    this.transaction(what, last.postChecksum, () => this.writeBatch(items, current));
  }

  /** Runs `write` in one IMMEDIATE transaction; commits only when it returns `expect`. */
  private transaction(what: string, expect: bigint, write: () => bigint): void {
    const db = this.db;
    try {
      db.exec('BEGIN IMMEDIATE');
    } catch (e) {
      if (isBusy(e)) throw new ApplyBusyError(`${what}: the replica database is busy`, { cause: e });
      throw e;
    }
    try {
      const sum = write();
      if (sum !== expect) {
        throw new ChecksumMismatchError(
          `${what} would give checksum ${hex64(sum)}, not the postChecksum ${hex64(expect)}: ` +
            'the replica database differs from the history it follows',
        );
      }
      db.exec('COMMIT');
    } catch (e) {
      if (db.inTransaction) db.exec('ROLLBACK');
      if (isBusy(e)) throw new ApplyBusyError(`${what}: readers kept the replica busy`, { cause: e });
      throw e;
    }
  }

  /**
   * Writes the merged pages of a batch; returns the database checksum they lead to. Each page named by
   * a snapshot starts from its newest version so far (in memory), else from the file — or zeros when a
   * snapshot before cut the database below it. Pages no snapshot names between the smallest size of
   * the batch and its final size are zeros.
   */
  private writeBatch(items: readonly EncodedSnapshot[], start: bigint): bigint {
    const pageSize = items[0]!.header.pageSize;
    const { oldPages, oldPage, put } = this.pageAccess();
    const pages = new Map<number, Uint8Array>();
    /** Pages at or below this still hold the file's content where no snapshot named them. */
    let floor = oldPages;
    for (const { bytes, header: h } of items) {
      walkPatches(memorySource(bytes), 0, h, (pgno, offset, run) => {
        let page = pages.get(pgno);
        if (!page) {
          const whole = offset === 0 && run.length === pageSize;
          page = (!whole && pgno <= floor ? oldPage(pgno) : undefined) ?? new Uint8Array(pageSize);
          pages.set(pgno, page);
        }
        page.set(run, offset);
      });
      if (h.dbPages < floor) floor = h.dbPages;
      for (const pgno of pages.keys()) if (pgno > h.dbPages) pages.delete(pgno);
    }
    const final = items[items.length - 1]!.header.dbPages;
    const zero = new Uint8Array(pageSize);
    let sum = start;
    for (const pgno of [...pages.keys()].sort((a, b) => a - b)) {
      const page = pages.get(pgno)!;
      const old = oldPage(pgno);
      if (old) sum ^= pageTerm(old, pgno);
      sum ^= pageTerm(page, pgno);
      if (!old || !samePage(old, page)) put.run(pgno, page);
    }
    for (let pgno = floor + 1; pgno <= Math.max(oldPages, final); pgno++) {
      if (pages.has(pgno)) continue;
      const old = oldPage(pgno);
      if (old) sum ^= pageTerm(old, pgno);
      if (pgno > final) continue;
      sum ^= this.zeroTerm(pageSize, pgno);
      if (old && !samePage(old, zero)) put.run(pgno, zero);
    }
    // The file must reach the new size: SQLite extends it to the highest page written.
    if (final > oldPages && !pages.has(final)) put.run(final, zero);
    return sum;
  }

  /** Writes the pages; returns the database checksum they lead to. */
  private write(bytes: Uint8Array, h: SnapshotHeader, start: bigint, full: boolean): bigint {
    const { oldPages, oldPage, put } = this.pageAccess();
    let sum = start;
    let next = 1; // the lowest page not yet looked at
    let pgno = 0;
    let page: Uint8Array | undefined;
    let old: Uint8Array | undefined;
    const zero = new Uint8Array(h.pageSize);
    const flush = (): void => {
      if (!page) return;
      if (!full && old) sum ^= pageTerm(old, pgno);
      sum ^= pageTerm(page, pgno);
      if (!old || !samePage(old, page)) put.run(pgno, page);
      page = undefined;
    };
    /** Pages `next..upTo` that the snapshot does not name: zeros in a full image or past the old end. */
    const gap = (upTo: number): void => {
      for (let p = next; p <= upTo; p++) {
        if (full) {
          sum ^= this.zeroTerm(h.pageSize, p);
          const o = oldPage(p);
          if (o && !samePage(o, zero)) put.run(p, zero);
        } else if (p > oldPages) {
          sum ^= this.zeroTerm(h.pageSize, p);
        }
      }
    };
    walkPatches(memorySource(bytes), 0, h, (p, offset, run) => {
      if (p !== pgno) {
        flush();
        gap(p - 1);
        pgno = p;
        next = p + 1;
        old = oldPage(p);
        page = old && !(offset === 0 && run.length === h.pageSize) ? old.slice() : new Uint8Array(h.pageSize);
      }
      page!.set(run, offset);
    });
    flush();
    gap(h.dbPages);
    // The file must reach the new size: SQLite extends it to the highest page written.
    if (h.dbPages > oldPages && next <= h.dbPages) put.run(h.dbPages, zero);
    if (!full) for (let p = h.dbPages + 1; p <= oldPages; p++) sum ^= pageTerm(oldPage(p)!, p);
    return sum;
  }

  /**
   * Makes the page size `pageSize` without changing what the database holds (VACUUM, in a fresh
   * connection so that it sees the current schema); readers see the same data throughout.
   */
  private changePageSize(pageSize: number): void {
    this.db.close();
    const v = Database.open(this.sqlite3, this.path, { vfs: this.vfs });
    try {
      v.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      v.pragma('journal_mode = DELETE');
      v.pragma('synchronous = EXTRA');
      v.pragma(`page_size = ${pageSize}`);
      v.exec('VACUUM');
    } catch (e) {
      if (isBusy(e))
        throw new ApplyBusyError('changing the page size: the replica database is busy', { cause: e });
      throw e;
    } finally {
      v.close();
      this.db = this.connect();
    }
  }

  /**
   * The post step: sets page 1's change-counter bytes to the writer's and cuts the file to the
   * snapshot's size, under SQLite's EXCLUSIVE lock. Idempotent. Returns false (doing nothing) when
   * readers kept the lock; call again later.
   */
  finish(step: PostStep): boolean {
    const want = step.dbPages * step.pageSize;
    const f = this.fs.open(this.path, { sqliteLocks: true });
    try {
      const head = readAt(f, 0, 100);
      const formatOk = !step.format || sameBytes(head.subarray(18, 20), step.format);
      if (f.size() === want && sameBytes(getCounter(head), step.counter) && formatOk) return true;
      if (!lockExclusive(f)) return false;
      try {
        const page1 = readAt(f, 0, 100);
        setCounter(page1, step.counter);
        f.write(page1.subarray(24, 28), 24);
        f.write(page1.subarray(92, 100), 92);
        if (step.format) f.write(step.format, 18);
        if (f.size() > want) f.truncate(want);
        f.sync();
      } finally {
        f.unlock?.(0);
      }
      return true;
    } finally {
      f.close();
    }
  }

  private zeroTerm(pageSize: number, pgno: number): bigint {
    const key = `${pageSize}:${pgno}`;
    let t = this.zeroTerms.get(key);
    if (t === undefined) {
      t = pageTerm(new Uint8Array(pageSize), pgno);
      if (this.zeroTerms.size < 4096) this.zeroTerms.set(key, t);
    }
    return t;
  }

  close(): void {
    this.db.close();
  }
}

/** Takes SQLite's EXCLUSIVE lock on `f`, waiting up to the busy timeout for readers. */
function lockExclusive(f: FileHandle): boolean {
  if (!f.lock) return true;
  const until = Date.now() + BUSY_TIMEOUT_MS;
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    if (f.lock(1) && f.lock(2) && f.lock(4)) return true;
    if (Date.now() > until) {
      f.unlock?.(0);
      return false;
    }
    try {
      Atomics.wait(sleeper, 0, 0, 1);
    } catch {
      // no blocking wait on a browser's main thread: spin
    }
  }
}

function getCounter(page1: Uint8Array): Uint8Array {
  const out = new Uint8Array(COUNTER_BYTES);
  out.set(page1.subarray(24, 28), 0);
  out.set(page1.subarray(92, 100), 4);
  return out;
}

/** Page 1 as SQLite here showed it, with the file's real format bytes (18–19) for checksums. */
function withFormat(page: Uint8Array, pgno: number, format: Uint8Array | undefined): Uint8Array {
  if (pgno !== 1 || !format || (page[18] === format[0] && page[19] === format[1])) return page;
  const copy = page.slice();
  copy.set(format, 18);
  return copy;
}

/** What SQLite here gets to write for page 1 of a WAL-format database: the rollback-format bytes. */
function asRollback(page: Uint8Array, pgno: number): Uint8Array {
  if (pgno !== 1 || page[18] !== 2 || page[19] !== 2) return page;
  const copy = page.slice();
  copy[18] = 1;
  copy[19] = 1;
  return copy;
}

function setCounter(page1: Uint8Array, counter: Uint8Array): void {
  page1.set(counter.subarray(0, 4), 24);
  page1.set(counter.subarray(4, 12), 92);
}

export { getCounter, setCounter };
