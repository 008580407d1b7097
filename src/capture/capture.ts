/**
 * Turns the writes SQLite makes to one database file into snapshots, one per committed transaction.
 *
 * The VFS calls in here. Before a page is first overwritten (or cut off by a truncate) in a transaction
 * its old content is kept (OldPages). When SQLite has written every page of a commit it sends
 * SQLITE_FCNTL_SYNC (whatever `synchronous` is): the snapshot is built then by diffing each kept page
 * against the file and appended to the journal as *tentative*. The journal is fsynced when SQLite
 * fsyncs the database (so never under synchronous=OFF), which is before SQLite's own commit point (the
 * rollback journal's deletion). SQLITE_FCNTL_COMMIT_PHASETWO confirms the snapshot; an unlock without it
 * means the transaction did not commit, and the snapshot is cut off again. See docs/ARCHITECTURE.md.
 *
 * With journal durability (`holdWrites`) SQLite's writes to the database are held in a PageOverlay
 * instead: the file keeps the old content, the snapshot is diffed against it, our journal's fsync is the
 * commit's only one, and the writes reach the file after the commit (docs/ARCHITECTURE.md, "Journal
 * durability").
 */

import { type FileHandle, type FileSystem, readAt } from '../files/file-system.js';
import { ShadowFile } from '../files/shadow-file.js';
import {
  BODY_CHUNK_SIZE,
  BodyCompressor,
  FLAG_FULL_IMAGE,
  pageTerm,
  SnapshotBodyWriter,
  type SnapshotInfo,
  samePage,
} from '../format/index.js';
import type { JournalWriter } from '../journal/journal-writer.js';
import { readDbPages, readPageSize, rollbackJournalNonce } from '../journal/sqlite-header.js';
import { fingerprintOf, writeSyncedMarker } from '../journal/synced-marker.js';
import { MovedRollback } from './moved-rollback.js';
import { OldPages } from './old-pages.js';
import { appendChange, type ChangeOptions, filePages, type Pages } from './outside.js';
import { PageOverlay } from './overlay.js';

/** Options of a Capture. */
export interface CaptureOptions {
  fs: FileSystem;
  /** Scratch file for old pages past the memory budget. */
  spillPath: string;
  /** Bytes of old page content held in memory before spilling (default 32 MiB). */
  memoryBudget?: number;
  /** Called after each confirmed snapshot. */
  onSnapshot?: (s: SnapshotInfo) => void;
  /**
   * A one-byte marker file, set from a transaction's first page write until it committed or was fully
   * rolled back, so that open() knows a crash may have left the file differing from the journal.
   */
  inflight?: FileHandle;
  /**
   * Journal durability: hold SQLite's writes to the database until the commit's snapshot is in the
   * journal.
   */
  holdWrites?: HoldOptions;
  /** The synced marker, moved to the journal's head at each checkpoint (docs/FORMAT.md). */
  synced?: SyncedOptions;
  /**
   * Called when a transaction starts and the database file is not what the last commit left: another
   * program wrote it (SQLite's file change counter moved). It must record the change as a snapshot of its
   * own (the journal is idle then) and return; an error fails SQLite's read.
   */
  onOutsideChange?: () => void;
}

/** Options of journal durability. */
export interface HoldOptions {
  /**
   * Where SQLite's rollback journal goes past the memory budget, instead of `DB-journal`: it is never
   * fsynced and never hot (the database file holds no uncommitted writes); only SQLite's ROLLBACK,
   * savepoints and cache spill read it (moved-rollback.ts).
   */
  rollbackPath: string;
}

/** The synced marker and when to move it. */
export interface SyncedOptions {
  file: FileHandle;
  /** Snapshot bodies known good up to this txid (written into the marker). */
  checkedTxid: () => bigint;
  /** fsync the database and move the marker once this many bytes were written back (default 64 MiB). */
  checkpointBytes?: number;
  /** … or this many commits were made (default 1000). */
  checkpointCommits?: number;
}

/** Another connection (or an open transaction) holds a lock on the database: try again later. */
export class LockBusyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LockBusyError';
  }
}

/** Raised for every access to the database after its file could not be brought up to date. */
export class DatabaseBehindError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DatabaseBehindError';
  }
}

/** Capture state of one database file. */
export class Capture {
  private db: FileHandle | undefined;
  private readonly old: OldPages;
  /** Page size and size in pages of the database when the current transaction began. */
  private prePageSize = 0;
  private prePages = 0;
  private nonce = 0;
  private unsynced = false;
  private inflightSet = false;
  private last: SnapshotInfo | undefined;
  /** SQLITE_FCNTL_SYNC came for the current transaction. */
  private phaseOne = false;
  /** Journal durability: the transaction's writes, and the file as SQLite sees it. */
  private overlay: PageOverlay | undefined;
  private view: FileHandle | undefined;
  /** Bytes and commits written back since the database file was last fsynced. */
  private sinceBytes = 0;
  private sinceCommits = 0;
  /** Set when a write-back failed: the file lags the journal until it is opened again. */
  private behind: Error | undefined;
  /** The first chunk of every snapshot body (see SnapshotBodyWriter). */
  private scratch: Uint8Array | undefined;

  constructor(
    readonly journal: JournalWriter,
    private readonly options: CaptureOptions,
  ) {
    this.old = new OldPages(options.fs, options.spillPath, options.memoryBudget ?? 32 << 20);
    const hold = options.holdWrites;
    this.rollback =
      hold && new MovedRollback(options.fs, hold.rollbackPath, options.memoryBudget ?? 32 << 20);
  }

  /** Journal durability: SQLite's writes are held until the commit's snapshot is in the journal. */
  get holdsWrites(): boolean {
    return this.options.holdWrites !== undefined;
  }

  /** With journal durability: where SQLite's rollback journal is kept instead of at its own path. */
  readonly rollback: MovedRollback | undefined;

  /**
   * The VFS opened the main database file: returns the handle SQLite's calls go to (with journal
   * durability, one that holds writes until the commit).
   */
  attach(db: FileHandle): FileHandle {
    this.db = db;
    if (!this.options.holdWrites) return db;
    this.overlay = new PageOverlay(
      db,
      this.options.fs,
      this.options.spillPath,
      this.options.memoryBudget ?? 32 << 20,
    );
    this.view = this.holdingHandle(db, this.overlay);
    return this.view;
  }

  /** Why the last `detach` could not make the database durable (SQLite does not report xClose's errors). */
  closeError: Error | undefined;

  /** The VFS closed the main database file (with journal durability, it is made durable first). */
  detach(): void {
    try {
      if (!this.behind) {
        this.overlay?.clear();
        this.checkpoint();
      }
    } catch (e) {
      this.closeError = e as Error;
      throw e;
    } finally {
      this.overlay?.clear();
      this.overlay = undefined;
      this.view = undefined;
      this.db = undefined;
    }
  }

  /**
   * Makes the database file durable and records the journal position it is at, with its fingerprint, in
   * the synced marker (so a crash redoes only what follows, and a clean open checks the file in constant
   * time). Between transactions only. The marker itself is fsynced only with `durable` (an older marker
   * that a power cut brings back merely redoes more), which a rewrite of the journal needs: the older one
   * may name a txid the rewrite gave to another state. True when the journal and the file were fsynced.
   */
  checkpoint({ force = false, durable = false }: { force?: boolean; durable?: boolean } = {}): boolean {
    const synced = this.options.synced;
    if (!synced || !this.db || this.behind || this.journal.pending) return false;
    if (!force && this.sinceCommits === 0 && this.sinceBytes === 0) return false;
    try {
      // The marker must name a snapshot the journal holds durably (it is not fsynced under synchronous=OFF).
      this.journal.handle.sync();
      this.db.sync();
    } catch (e) {
      // After a failed fsync the kernel may drop the pages it could not write and report success next
      // time (fsyncgate): only rewriting them makes them durable. Refuse everything until open() redoes.
      this.behind = new DatabaseBehindError(
        `making ${this.db.path} durable failed (${(e as Error).message}): writes since the last checkpoint ` +
          'may not be on disk; close it and open it again (open() writes them again from the journal)',
        { cause: e },
      );
      throw this.behind;
    }
    writeSyncedMarker(synced.file, {
      ...this.journal.position,
      fingerprint: fingerprintOf(this.db),
      checkedTxid: synced.checkedTxid(),
      holdsWrites: this.options.holdWrites !== undefined,
      offset: this.journal.headOffset,
    });
    if (durable) synced.file.sync();
    this.sinceBytes = 0;
    this.sinceCommits = 0;
    return true;
  }

  /**
   * The change counter (bytes 24–27 of the database header) as the last commit left it: a transaction
   * that starts and reads another one sees a file some other program wrote.
   */
  private counter: number | undefined;
  /** The counter of the commit in progress (from its page 1), kept once it commits. */
  private nextCounter: number | undefined;
  /** SQLite's lock level on the database (0 none, 1 shared, 2+ writing). */
  private lockLevel = 0;

  /** Where the change counter stands now (after open's recovery, or after recording an outside change). */
  resetCounter(): void {
    const db = this.db;
    if (!db) return;
    this.counter = db.size() >= 28 ? readCounter(readAt(db, 24, 4), 0) : undefined;
  }

  /** SQLite took a lock on the database. */
  onLock(level: number): void {
    this.lockLevel = level;
  }

  /**
   * SQLite read `bytes` at `offset` of the database. At the start of a transaction (shared lock, no
   * write in progress) a change counter other than the last commit's means another program wrote the
   * file: let the owner record it before SQLite goes on.
   */
  onRead(offset: number, bytes: Uint8Array): void {
    if (offset > 24 || offset + bytes.length < 28 || this.lockLevel !== 1) return;
    if (this.prePageSize !== 0 || this.journal.pending || this.counter === undefined) return;
    if (readCounter(bytes, 24 - offset) === this.counter) return;
    // Copies of the file's pages kept from our own commits are stale now.
    this.overlay?.forgetClean();
    this.options.onOutsideChange?.();
    this.resetCounter();
  }

  /** Before SQLite writes `length` bytes at `offset` of the database. */
  beforeWrite(offset: number, length: number): void {
    if (!this.db || this.overlay) return;
    this.begin();
    if (!this.inflightSet) this.setInflight(1);
    const unit = this.prePageSize;
    const first = Math.floor(offset / unit);
    const last = Math.floor((offset + length - 1) / unit);
    for (let i = first; i <= last; i++) this.keep(i);
  }

  /** Before SQLite truncates the database to `size` bytes. */
  beforeTruncate(size: number): void {
    if (!this.db || this.overlay) return;
    this.begin();
    const unit = this.prePageSize;
    for (let i = Math.ceil(size / unit); i < this.prePages; i++) this.keep(i);
  }

  /** SQLite wrote to the database's rollback journal: remember the nonce of its first header. */
  onRollbackJournalWrite(offset: number, bytes: Uint8Array): void {
    if (offset !== 0 || bytes.length < 16) return;
    const nonce = rollbackJournalNonce(bytes);
    if (nonce !== 0) this.nonce = nonce;
  }

  /** SQLITE_FCNTL_SYNC: every page of the commit is written. Appends the tentative snapshot. */
  onCommitPhaseOne(superJournal = false): void {
    if (!this.db) return;
    if (superJournal && this.overlay) {
      // Its commit point is SQLite's deletion of the super-journal, after ours: a crash in between would
      // redo this database's part while SQLite rolls the other databases' parts back.
      throw new Error(
        "a transaction that writes to this database and an ATTACHed one cannot commit with durability 'journal' " +
          "(both must commit or neither): write them in separate transactions, or open with durability 'sqlite'",
      );
    }
    // A snapshot already appended for this transaction: SQLite's backup path, or the playback of a
    // commit that failed after our journal took its snapshot (a failed database fsync). The cut is
    // fsynced: SQLite's rollback is made durable next (database fsync, journal deleted), and a snapshot
    // surviving it would be redone at open as a commit that was reported failed.
    if (this.journal.pending) this.journal.abandon(true);
    if (this.prePageSize === 0) return;
    this.phaseOne = true;
    this.last = this.writeSnapshot();
    this.unsynced = this.last !== undefined;
  }

  /**
   * SQLite fsyncs the database file: the tentative snapshot must be durable by the time that returns
   * (SQLite's commit point comes after it). Where the runtime can, the journal's fsync runs beside the
   * database's: the returned function waits for it (call it after the database's fsync, even if that
   * failed). Otherwise the journal is fsynced here, first.
   */
  beforeDatabaseSync(): (() => void) | undefined {
    if (!this.unsynced) return undefined;
    const h = this.journal.handle;
    if (!h.syncBegin || this.overlay) {
      h.sync();
      this.unsynced = false;
      return undefined;
    }
    const wait = h.syncBegin();
    return () => {
      wait();
      this.unsynced = false;
    };
  }

  /** SQLITE_FCNTL_COMMIT_PHASETWO: the transaction committed. */
  onCommitPhaseTwo(): void {
    if (!this.db) return;
    if (!this.phaseOne && this.prePageSize !== 0) {
      // A commit without SQLITE_FCNTL_SYNC: not expected from SQLite's pager, but never lose it.
      this.last = this.writeSnapshot();
      if (this.overlay && this.last) this.journal.handle.sync();
    }
    const last = this.journal.pending ? this.last : undefined;
    if (this.journal.pending) this.journal.confirm();
    if (this.nextCounter !== undefined) this.counter = this.nextCounter;
    let failed: Error | undefined;
    if (this.overlay) failed = this.writeBack();
    if (last) {
      this.sinceCommits++;
      this.options.onSnapshot?.(last);
    }
    this.end();
    if (failed) throw failed;
    this.checkpointIfDue();
  }

  /** Moves the synced marker once enough was committed since the last checkpoint. */
  private checkpointIfDue(): void {
    const synced = this.options.synced;
    if (!synced) return;
    if (
      this.sinceBytes < (synced.checkpointBytes ?? 64 << 20) &&
      this.sinceCommits < (synced.checkpointCommits ?? 1000)
    ) {
      return;
    }
    try {
      this.checkpoint();
    } catch (e) {
      // With the rollback journal (durability 'sqlite') SQLite made the file durable at commit: the
      // marker merely stays behind, and the next open checks a little more. With journal durability the
      // file may not hold what was written back: refuse further use until open() redoes it.
      if (!this.overlay) return;
      if (e instanceof DatabaseBehindError) throw e;
      this.behind = new DatabaseBehindError(
        `making ${this.db?.path} durable at snapshot ${this.journal.position.txid} failed (${(e as Error).message}): ` +
          'the commits are in the journal, but the database file may lag it; close it and open it again (open() brings it up to date)',
        { cause: e },
      );
      throw this.behind;
    }
  }

  /** Journal durability, after the commit: copies the held writes to the database file. */
  private writeBack(): Error | undefined {
    try {
      this.sinceBytes += this.overlay!.writeBack();
      this.overlay!.clear();
      return undefined;
    } catch (e) {
      if (e instanceof DatabaseBehindError) return e;
      this.behind = new DatabaseBehindError(
        `the commit of snapshot ${this.journal.position.txid} is in the journal, but writing it to ${this.db?.path} failed ` +
          `(${(e as Error).message}): the database file lags its journal; close it and open it again (open() brings it up to date)`,
        { cause: e },
      );
      return this.behind;
    }
  }

  /** A FileHandle for SQLite: reads and writes through the overlay, sync is our journal's (see xSync). */
  private holdingHandle(db: FileHandle, overlay: PageOverlay): FileHandle {
    const check = (): void => {
      if (this.behind) throw this.behind;
    };
    const unit = (): number => {
      this.begin();
      return this.prePageSize;
    };
    return {
      path: db.path,
      read: (buf, offset) => {
        check();
        return overlay.read(buf, offset);
      },
      write: (buf, offset) => {
        check();
        overlay.write(buf, offset, unit());
      },
      truncate: (size) => {
        check();
        overlay.truncate(size, unit());
      },
      sync: check,
      size: () => {
        check();
        return overlay.size();
      },
      close: () => db.close(),
      lock: db.lock ? (level) => db.lock!(level) : undefined,
      unlock: db.unlock ? (level) => db.unlock!(level) : undefined,
      checkReserved: db.checkReserved ? () => db.checkReserved!() : undefined,
    };
  }

  /**
   * SQLite dropped its lock to `level`. A transaction that wrote pages and did not confirm did not
   * commit: SQLite has rolled back what its rollback journal holds, but it never journals pages it took
   * from the freelist, so those can keep the rolled-back bytes. Put back every kept page that differs,
   * so the file equals the journal's last state byte for byte.
   */
  onUnlock(level: number): void {
    this.lockLevel = level;
    if (level > 1 || !this.db) return;
    if (this.journal.pending) {
      this.journal.abandon(true);
      this.unsynced = false;
    }
    if (this.prePageSize === 0) return;
    // Held writes never reached the file: dropping them is the rollback.
    if (this.overlay) this.overlay.clear();
    else this.restoreKept();
    this.end();
  }

  /**
   * Puts back every kept page that differs. Made durable when it changes anything: SQLite may already
   * have fsynced the pages it put there (a commit whose journal deletion failed after its database fsync
   * is abandoned here), and a power loss must not leave half of each. The inflight marker is fsynced
   * first, so that open() checks the file against the journal if the power goes in between.
   */
  private restoreKept(): void {
    const db = this.db!;
    const unit = this.prePageSize;
    const current = new Uint8Array(unit);
    let marked = false;
    const mark = (): void => {
      if (marked) return;
      marked = true;
      this.setInflight(1);
      this.options.inflight?.sync();
    };
    for (const index of this.old.indexes()) {
      const old = this.old.get(index, unit);
      if (!old) continue;
      db.read(current, index * unit);
      if (samePage(old, current)) continue;
      mark();
      db.write(old, index * unit);
    }
    if (db.size() > this.prePages * unit) {
      mark();
      db.truncate(this.prePages * unit);
    }
    if (marked) db.sync();
  }

  /**
   * Takes the database back to the state `to` (an earlier point, read from the history) as one new
   * snapshot: the pages that differ are appended to the journal and fsynced (the commit point), then
   * written to the file (made durable by the next checkpoint, as a commit's write-back). The caller holds SQLite's EXCLUSIVE lock
   * (an empty `BEGIN EXCLUSIVE`) and drops SQLite's page cache after. A failure after the commit point
   * leaves the file behind the journal: every later access fails until the database is opened again.
   */
  revert(to: Pages, options: Pick<ChangeOptions, 'pages' | 'expect'> = {}): SnapshotInfo | undefined {
    const db = this.db;
    if (!db || this.prePageSize !== 0 || this.journal.pending) {
      throw new Error('revert: not between transactions');
    }
    if (this.behind) throw this.behind;
    const shadow = new ShadowFile(db, this.options.fs, this.options.spillPath);
    let snap: SnapshotInfo | undefined;
    try {
      snap = appendChange(this.journal, filePages(db), to, {
        ...options,
        changed: (pgno, page) => shadow.write(page, (pgno - 1) * to.pageSize),
      });
      if (!snap) return undefined;
      shadow.truncate(to.dbPages * to.pageSize);
    } catch (e) {
      shadow.discard();
      throw e;
    }
    try {
      // The journal holds it durably: like a commit's write-back, the file is made durable by the next
      // checkpoint (a crash before it redoes it).
      shadow.commit();
      this.overlay?.forgetClean();
      this.resetCounter();
      this.sinceCommits++;
      this.checkpointIfDue();
    } catch (e) {
      shadow.discard();
      this.behind = new DatabaseBehindError(
        `the revert (snapshot ${snap.txid}) is in the journal, but writing it to ${db.path} failed (${(e as Error).message}): ` +
          'the database file lags its journal; close it and open it again (open() brings it up to date)',
        { cause: e },
      );
      throw this.behind;
    }
    this.options.onSnapshot?.(snap);
    return snap;
  }

  /**
   * Runs `write` holding SQLite's EXCLUSIVE lock on the database file, taken here on the file directly
   * (not through a transaction, which would have SQLite write page 1 of an empty database at its
   * commit): other connections wait while the file changes under them. Between transactions only.
   * Throws LockBusyError when another connection holds a lock.
   */
  exclusively<T>(write: () => T): T {
    const f = this.db;
    if (!f) throw new Error('the database file is not open');
    if (this.lockLevel !== 0 || this.prePageSize !== 0) {
      throw new LockBusyError('SQLite is in a transaction: try again between transactions');
    }
    if (!f.lock || !f.unlock) return write(); // locks only within this process: SQLite holds none now
    if (!f.lock(1) || !f.lock(2) || !f.lock(4)) {
      f.unlock(0);
      throw new LockBusyError(`another connection holds a lock on ${f.path}: try again`);
    }
    try {
      return write();
    } finally {
      f.unlock(0);
    }
  }

  /** The database file itself (writes to it bypass SQLite: see afterRawWrite). */
  get file(): FileHandle | undefined {
    return this.db;
  }

  /**
   * The caller wrote the database file directly (a shared database taking the hub's snapshots), after the
   * journal holds what it wrote, under SQLite's EXCLUSIVE lock: forget copies of the old pages, take the
   * new change counter as ours, and count it towards the next checkpoint (as a commit's write-back).
   */
  afterRawWrite(): void {
    this.overlay?.forgetClean();
    this.resetCounter();
    this.sinceCommits++;
    this.checkpointIfDue();
  }

  /** Writes the whole current database as a full-image snapshot (bootstrap of an existing database). */
  bootstrap(): SnapshotInfo | undefined {
    this.begin();
    this.prePages = 0;
    const s = this.writeSnapshot();
    this.journal.handle.sync();
    this.journal.confirm();
    this.end();
    // The file is the image: let the synced marker say so (or every open would redo it).
    if (s) {
      this.sinceCommits++;
      this.checkpoint();
    }
    this.resetCounter();
    return s;
  }

  private begin(): void {
    if (this.prePageSize !== 0) return;
    const db = this.db!;
    const size = db.size();
    this.prePageSize = size > 0 ? readPageSize(db) : 4096;
    this.prePages = Math.floor(size / this.prePageSize);
  }

  private end(): void {
    // The state is reset first: a failed write below must not leave the next transaction diffing against
    // this one's kept pages (that wrote snapshots whose checksums did not match).
    this.nonce = 0;
    this.prePageSize = 0;
    this.prePages = 0;
    this.last = undefined;
    this.phaseOne = false;
    this.nextCounter = undefined;
    try {
      this.old.clear();
      this.overlay?.clear();
    } finally {
      if (this.inflightSet) {
        try {
          this.setInflight(0);
        } catch {
          // The marker is a hint: left set, the next open checks the database against the journal.
        }
      }
    }
  }

  private setInflight(v: 0 | 1): void {
    const f = this.options.inflight;
    if (!f) return;
    f.write(new Uint8Array([v]), 0);
    this.inflightSet = v === 1;
  }

  private keep(index: number): void {
    if (this.old.has(index)) return;
    if (index >= this.prePages) {
      this.old.set(index, null);
      return;
    }
    this.old.set(index, readAt(this.db!, index * this.prePageSize, this.prePageSize));
  }

  /** Diffs the kept pages against the file and appends a tentative snapshot; undefined if nothing changed. */
  private writeSnapshot(): SnapshotInfo | undefined {
    const file = this.db!;
    // The database as SQLite sees it now (with journal durability the file itself is the old content).
    const db = this.view ?? file;
    const size = db.size();
    const pageSize = size > 0 ? readPageSize(db) : this.prePageSize;
    const dbPages = size > 0 ? readDbPages(db, pageSize) : 0;
    if (dbPages * pageSize > size) {
      throw new Error(
        `database header says ${dbPages} pages of ${pageSize} bytes but the file has ${size} bytes`,
      );
    }
    const full = this.prePages === 0 || pageSize !== this.prePageSize;
    const appender = this.journal.begin();
    const packer = new BodyCompressor(appender.sink, undefined, true); // the appender copies or writes
    // Every chunk is consumed (compressed, or written to the journal) before this returns: reuse the first.
    this.scratch ??= new Uint8Array(BODY_CHUNK_SIZE);
    const body = new SnapshotBodyWriter(pageSize, packer.sink, this.scratch);
    let checksum = full ? 0n : this.journal.position.checksum;
    // One buffer for every page read back, one for old pages read from the file: the body writer copies
    // what it keeps.
    const page = new Uint8Array(pageSize);
    const read = (pgno: number): Uint8Array => {
      db.read(page, (pgno - 1) * pageSize);
      if (pgno === 1) this.nextCounter = readCounter(page, 24);
      return page;
    };
    const oldPage = new Uint8Array(pageSize);
    const readOld = (index: number): Uint8Array => {
      const copy = this.overlay?.oldPage(index, pageSize);
      if (copy) return copy;
      oldPage.fill(0);
      file.read(oldPage, index * pageSize);
      return oldPage;
    };
    try {
      if (full) {
        for (let pgno = 1; pgno <= dbPages; pgno++) {
          const page = read(pgno);
          body.addFullPage(pgno, page);
          checksum ^= pageTerm(page, pgno);
        }
      } else {
        for (const index of this.touched(dbPages)) {
          const pgno = index + 1;
          const old = this.old.has(index)
            ? this.old.get(index, pageSize)
            : index < this.prePages
              ? readOld(index)
              : undefined;
          if (pgno > dbPages) {
            if (old) checksum ^= pageTerm(old, pgno);
            continue;
          }
          const neu = read(pgno);
          if (body.addDiff(pgno, old, neu) || !old) {
            checksum ^= (old ? pageTerm(old, pgno) : 0n) ^ pageTerm(neu, pgno);
          }
        }
      }
      body.finish();
      if (!full && body.patchCount === 0 && dbPages === this.prePages) {
        appender.cancel();
        return undefined;
      }
      const compressed = packer.finish();
      return appender.finish(
        {
          pageSize,
          dbPages,
          flags: (full ? FLAG_FULL_IMAGE : 0) | compressed,
          postChecksum: checksum,
          commitTag: this.nonce,
        },
        body.patchCount,
        false,
      );
    } catch (e) {
      appender.cancel();
      throw e;
    }
  }

  /**
   * Indexes of pages to look at: every kept page, every page past the old end of the file, and every
   * page cut off by a shrink (SQLite truncates the file only after its commit point).
   */
  private touched(dbPages: number): Int32Array {
    const o = this.overlay;
    const kept = o ? o.pageIndexes(this.prePageSize) : this.old.indexes();
    // Pages a truncate cut off read as zeros even where the file grew back over them.
    const cut = o ? Math.min(Math.floor(o.cutFrom / this.prePageSize), this.prePages) : this.prePages;
    const from = Math.min(dbPages, this.prePages, cut);
    const to = Math.max(dbPages, this.prePages);
    if (from === to) return kept;
    // The union of `kept` (ascending) and [from, to), merged in order.
    const out = new Int32Array(kept.length + (to - from));
    let n = 0;
    let i = 0;
    while (i < kept.length && kept[i]! < from) out[n++] = kept[i++]!;
    for (let p = from; p < to; p++) out[n++] = p;
    while (i < kept.length && kept[i]! < to) i++;
    while (i < kept.length) out[n++] = kept[i++]!;
    return out.subarray(0, n);
  }
}

/** The big-endian u32 at `at` of `bytes` (SQLite's file change counter at header offset 24). */
function readCounter(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>> 0;
}
