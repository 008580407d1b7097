/**
 * Opening a database through Mycelite: take the writer lock, recover from a crash, bootstrap an existing
 * database into a new journal, then hand out a better-sqlite3-like connection whose every committed
 * transaction becomes one snapshot. Runtime-neutral: the runtime (Node, browser) supplies the files.
 */
import { Capture } from '../capture/capture.js';
import { isWalDatabase, readDbPages, readPageSize } from '../capture/sqlite-header.js';
import { readSyncedMarker, writeSyncedMarker } from '../capture/synced-marker.js';
import { Database } from '../engine/database.js';
import { loadSqlite } from '../engine/sqlite.js';
import { JournalReader, loadHash, type SnapshotInfo } from '../format/index.js';
import type { CompactResult } from '../history/compact.js';
import { parseRetention } from '../history/policy.js';
import { openHistory } from '../history/source.js';
import { databaseChecksum } from '../journal/db-checksum.js';
import { JournalWriter, type Position } from '../journal/journal-writer.js';
import { redo, replay } from '../restore/replay.js';
import { type FileHandle, type FileSystem, writeFileAtomic } from '../storage/file-system.js';
import { SyncError } from '../sync/push-errors.js';
import type { Pusher, WriterSync } from '../sync/pusher.js';
import { checkHubOptions, type HubOptions, reopenJournal, startWriterSync } from '../sync/writer-start.js';
import { installMyceliteVfs } from '../vfs/vfs.js';
import { type CompactCallOptions, type HistoryOptions, WriterCompactor } from './compact.js';
import { journalPaths, missingDirectory } from './paths.js';

/** What the runtime provides. */
export interface Runtime {
  fs: FileSystem;
  /** An absolute, normalized path for `path`. */
  resolve(path: string): string;
  tempPath(): string;
}

/** Options of `open`. */
export interface MyceliteOptions {
  /** Old page content held in memory per transaction before spilling to disk (bytes, default 32 MiB). */
  memoryBudget?: number;
  /** Called after each committed snapshot. */
  onSnapshot?: (snapshot: SnapshotInfo) => void;
  /** Push every committed snapshot to a hub, in the background (docs/ARCHITECTURE.md, "Writer sync"). */
  hub?: HubOptions;
  /**
   * Retention and automatic compaction of the history (docs/ARCHITECTURE.md, "History"); `false` turns
   * automatic compaction off. Default: compact once the journal passes 64 MiB, keeping every transaction
   * of the last 24 h, one point per hour for 30 days, one per day after that.
   */
  history?: HistoryOptions | false;
  /**
   * What makes a commit durable (docs/ARCHITECTURE.md, "Journal durability"):
   * - 'journal' (default): our journal. SQLite's writes to the database are held until the commit's
   *   snapshot is fsynced to the journal (the commit's one fsync), then written to the file; SQLite's
   *   rollback journal never reaches `DB-journal`. After a crash the file may lag the journal (or, after a
   *   power loss, be torn) until open() redoes the snapshots since the last checkpoint.
   * - 'sqlite': SQLite's rollback journal, as without Mycelite, plus our journal's fsync (five fsyncs
   *   per commit in DELETE/FULL). The file alone is always a consistent database, whatever crashed.
   */
  durability?: 'journal' | 'sqlite';
}

/** A connection to a database replicated by Mycelite: a Database plus its journal. */
export interface MyceliteDatabase extends Database {
  /** Path of the journal file. */
  readonly journalPath: string;
  /** The journal's position: last txid and the database checksum after it. */
  position(): Position;
  /**
   * Pushing to the hub, when opened with `hub`: status(), on('status' | 'pushed'), flush(), close().
   * `close()` of the database stops pushing at once; `await db.sync.flush()` first to push everything.
   */
  readonly sync?: WriterSync;
  /**
   * Compacts the history now (between transactions): keeps the points the retention policy names, moves
   * older snapshots from the journal into the history file, writes checkpoints. See `mycelite compact`.
   */
  compact(options?: CompactCallOptions): CompactResult;
}

export type { HubOptions };

/** Errors a user can act on when opening. */
export class OpenError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'OpenError';
  }
}

const VFS_NAME = 'mycelite';
/** Zeros kept written past the end of the journal (JournalWriter.preallocate). */
const JOURNAL_AHEAD = 1 << 20;

/** Opens (creating if missing) the database at `path` through Mycelite. */
export async function openWith(
  rt: Runtime,
  path: string,
  options: MyceliteOptions = {},
): Promise<MyceliteDatabase> {
  const [sqlite3] = await Promise.all([loadSqlite(), loadHash()]);
  const { fs } = rt;
  const dbPath = rt.resolve(path);
  const p = journalPaths(dbPath);
  const missing = missingDirectory((f) => fs.exists(f), dbPath);
  if (missing) throw new OpenError(`cannot open ${path}: ${missing}`);
  const durability = options.durability ?? 'journal';
  if (durability !== 'journal' && durability !== 'sqlite') {
    throw new OpenError(
      `cannot open ${path}: durability must be 'journal' or 'sqlite', not ${String(durability)}`,
    );
  }
  if (options.hub) {
    const bad = checkHubOptions(options.hub);
    if (bad) throw new OpenError(`cannot open ${path}: ${bad}`);
  }
  if (fs.exists(p.replica)) {
    throw new OpenError(
      `${path} is a replica (it follows a hub; see ${p.replica}): writing to it would fork its history. ` +
        "Read it with openReplica() or openReadonly(), or write to the writer's database",
    );
  }
  // A new database file or journal directory is durable only once its directory is fsynced (below).
  const creating = !fs.exists(dbPath) || !fs.exists(p.dir);
  fs.mkdir(p.dir);
  const writerLock = fs.tryLockExclusive?.(p.lock);
  if (fs.tryLockExclusive && !writerLock) {
    throw new OpenError(
      `${path} is already open for writing (a connection in this or another process holds ${p.lock}); Mycelite allows one writer per database: close it first, or open read-only`,
    );
  }
  let journal: JournalWriter | undefined;
  let db: Database | undefined;
  let inflight: FileHandle | undefined;
  let synced: FileHandle | undefined;
  let pusher: Pusher | undefined;
  try {
    journal = JournalWriter.open(fs, p.journal);
    const dbSize = fs.fileSize(dbPath);
    if (dbSize > 0) refuseWal(fs, dbPath, path);
    // First: a snapshot SQLite's hot journal rolls back is cut (after a power loss the file may be empty).
    const hot = recoverHotJournal(fs, dbPath, journal);
    // Journal durability may have left the file behind (even empty): redo below brings it up to date.
    const marker = readSyncedMarker(fs, p.synced);
    const behind = marker === 'bad' || (marker !== undefined && marker.txid < journal.position.txid);
    if (dbSize === 0 && journal.position.txid > 0n && !behind) {
      throw new OpenError(
        `${path} is missing or empty but its journal holds ${journal.position.txid} snapshots: ` +
          `restore it with \`mycelite restore ${path} --output ${path}\` or move ${p.dir} away`,
      );
    }
    const vfs = installMyceliteVfs(sqlite3, VFS_NAME, { fs, tempPath: rt.tempPath });
    if (hot) {
      // Let SQLite roll back its hot journal through a connection that is not captured.
      const r = Database.open(sqlite3, dbPath, { vfs: VFS_NAME });
      try {
        r.pragma('schema_version');
      } finally {
        r.close();
      }
    }
    inflight = fs.open(p.inflight, { create: true });
    const flag = new Uint8Array(1);
    inflight.read(flag, 0);
    // Mycelite was writing when it crashed (inflight), or the journal lost its tail, or SQLite rolled
    // back (which leaves freelist pages it never journaled as they were): the file may differ from
    // the journal's last state. The journal holds every committed transaction, so it wins.
    // Journal durability's marker: redo what the file lacks (that ends with the same check as below).
    // A crash there always leaves a torn tail (the zeros written ahead): redo, not a rebuild, handles it.
    fs.delete(p.rollback);
    if (marker !== undefined) redoFromMarker(fs, dbPath, journal, marker);
    else if (flag[0] === 1 || journal.tornBytes > 0 || (hot && journal.position.txid > 0n)) {
      rebuildIfDiffers(fs, dbPath, journal);
    }
    if (flag[0] === 1) {
      inflight.write(new Uint8Array([0]), 0);
      inflight.sync();
    }
    if (durability === 'journal') {
      synced = openSyncedMarker(fs, dbPath, p.synced, journal.position, marker === undefined);
    } else if (marker !== undefined) {
      fs.delete(p.synced, true);
    }

    // Appends overwrite zeros written ahead: their fdatasync does not change the file's size.
    journal.preallocate(JOURNAL_AHEAD);
    if (options.history !== false) parseHistoryOptions(options.history, path);
    const writer = journal;
    const compactor: WriterCompactor = new WriterCompactor(
      {
        fs,
        dbPath,
        paths: p,
        journal: writer,
        hubTxid: () => (options.hub ? (pusher?.status().hubTxid ?? null) : undefined),
        rebased: () => pusher?.rebase(reopenJournal(fs, p.journal, writer.end)),
        busy: () => db?.inTransaction === true,
        checkpoint: () => capture.checkpoint(),
      },
      options.history,
    );
    const capture = new Capture(journal, {
      fs,
      spillPath: p.spill,
      memoryBudget: options.memoryBudget,
      onSnapshot: (snapshot) => {
        pusher?.noteSnapshot(snapshot);
        options.onSnapshot?.(snapshot);
        compactor.noteCommit();
      },
      inflight,
      holdWrites: synced ? { synced, rollbackPath: p.rollback } : undefined,
    });
    vfs.expect(dbPath, capture);
    db = Database.open(sqlite3, dbPath, { vfs: VFS_NAME });
    if (creating) fs.syncDir(dbPath);

    if (journal.position.txid === 0n && fs.fileSize(dbPath) > 0) capture.bootstrap();
    checkSize(fs, dbPath, journal, path);
    if (options.hub) {
      try {
        pusher = await startWriterSync(fs, p.journal, journal.end, options.hub);
      } catch (e) {
        if (!(e instanceof SyncError)) throw e;
        const { url, db } = options.hub;
        throw new OpenError(`cannot open ${path} as the writer of ${db} on ${url}: ${e.message}`, {
          cause: e,
        });
      }
    }
    const sync = pusher;
    return decorate(db, journal, p.journal, sync, compactor, () => {
      void sync?.close();
      vfs.forget(dbPath);
      journal?.close();
      inflight?.close();
      synced?.close();
      writerLock?.release();
      return capture.closeError;
    });
  } catch (e) {
    db?.close();
    journal?.close();
    inflight?.close();
    synced?.close();
    writerLock?.release();
    if (e instanceof OpenError) throw e;
    throw new OpenError(`open ${path}: ${(e as Error).message}`, { cause: e });
  }
}

/** Checks the history options up front, so a bad policy fails open() rather than a later commit. */
function parseHistoryOptions(o: HistoryOptions | undefined, path: string): void {
  try {
    if (o?.retain !== undefined) parseRetention(o.retain);
  } catch (e) {
    throw new OpenError(`cannot open ${path}: history.retain: ${(e as Error).message}`);
  }
}

function refuseWal(fs: FileSystem, dbPath: string, path: string): void {
  const f = fs.open(dbPath, { readonly: true });
  try {
    if (f.size() >= 100 && isWalDatabase(f)) {
      throw new OpenError(
        `${path} is in WAL mode, which Mycelite does not support yet: convert it with ` +
          `\`sqlite3 ${path} "PRAGMA journal_mode=DELETE"\``,
      );
    }
  } finally {
    f.close();
  }
}

/**
 * A hot rollback journal means SQLite crashed inside a transaction and will roll it back. If our last
 * snapshot carries that journal's nonce, it was appended for the transaction being rolled back: cut it.
 */
function recoverHotJournal(fs: FileSystem, dbPath: string, journal: JournalWriter): boolean {
  const rj = `${dbPath}-journal`;
  if (fs.fileSize(rj) < 28) return false;
  const f = fs.open(rj, { readonly: true });
  const head = new Uint8Array(28);
  try {
    f.read(head, 0);
  } finally {
    f.close();
  }
  if (head[0] === 0) return false;
  const nonce = ((head[12]! << 24) | (head[13]! << 16) | (head[14]! << 8) | head[15]!) >>> 0;
  const last = journal.last;
  if (last && nonce !== 0 && last.commitTag === nonce) journal.dropLast(last);
  return true;
}

/**
 * Makes the database equal the journal's last state: when its checksum differs, replay the journal into
 * a temporary file, fsync it and rename it over the database.
 */
function rebuildIfDiffers(fs: FileSystem, dbPath: string, journal: JournalWriter): void {
  const last = journal.last;
  if (fs.exists(dbPath)) {
    const f = fs.open(dbPath, { readonly: true });
    try {
      const size = f.size();
      const sum = size >= 100 ? databaseChecksum(f, readPageSize(f)) : 0n;
      const want = last ? last.dbPages * last.pageSize : size;
      if (size === want && sum === journal.position.checksum) return;
    } finally {
      f.close();
    }
  }
  // The journal may start after a compacted history (docs/FORMAT.md, "History"): replay both.
  const paths = journalPaths(dbPath);
  const history = openHistory(fs, paths, () => new Error(`${paths.journal} is missing`));
  try {
    writeFileAtomic(fs, dbPath, (out) => replay(history.source, out));
  } finally {
    history.close();
  }
}

/**
 * Why the database file at `dbPath` may lag its journal for a reader, or undefined: a writer with
 * journal durability ended without closing (its synced marker is behind the journal's head and no writer
 * holds the database). Open it for writing once (open() redoes what is missing).
 */
export async function lagsJournal(rt: Runtime, dbPath: string): Promise<string | undefined> {
  const { fs } = rt;
  const p = journalPaths(dbPath);
  if (!fs.exists(p.synced)) return undefined;
  await loadHash();
  const lock = fs.tryLockExclusive?.(p.lock);
  if (fs.tryLockExclusive && !lock) return undefined; // a live writer: the file has every commit SQLite shows
  try {
    const marker = readSyncedMarker(fs, p.synced);
    if (marker === undefined) return undefined;
    const history = openHistory(fs, p, () => new Error(`${p.journal} is missing`));
    let head = 0n;
    try {
      for (const snap of new JournalReader(history.source, { merged: true }).snapshots()) head = snap.txid;
    } finally {
      history.close();
    }
    if (marker !== 'bad' && marker.txid >= head) return undefined;
    return `its last writer did not close it (a crash), so the file may lag its journal: open it for writing once with open() (or run \`mycelite verify\`), which brings it up to date`;
  } finally {
    lock?.release();
  }
}

/**
 * Redo after journal durability: the file holds the marker's state or a later one (possibly torn between
 * later ones, after a power loss). Apply the snapshots after the marker again; if that cannot be done or
 * does not give the journal's last state, rebuild the file from the journal.
 */
function redoFromMarker(
  fs: FileSystem,
  dbPath: string,
  journal: JournalWriter,
  marker: ReturnType<typeof readSyncedMarker>,
): void {
  const head = journal.position;
  if (
    marker !== 'bad' &&
    marker !== undefined &&
    marker.txid === head.txid &&
    marker.checksum === head.checksum
  ) {
    return;
  }
  if (marker !== 'bad' && marker !== undefined && fs.exists(dbPath)) {
    const paths = journalPaths(dbPath);
    const history = openHistory(fs, paths, () => new Error(`${paths.journal} is missing`));
    const f = fs.open(dbPath);
    try {
      redo(history.source, f, marker);
      f.sync();
    } catch {
      // Not a point of the history any more (compacted away) or unreadable: rebuild below.
    } finally {
      f.close();
      history.close();
    }
  }
  rebuildIfDiffers(fs, dbPath, journal);
}

/**
 * Journal durability's marker, open for the writer and set to the journal's head (recovery above made the
 * file equal it). The file is fsynced first, and the marker made durable (its creation too), before any
 * write can lag behind it.
 */
function openSyncedMarker(
  fs: FileSystem,
  dbPath: string,
  path: string,
  head: Position,
  create: boolean,
): FileHandle {
  const f = fs.open(path, { create: true });
  try {
    if (fs.exists(dbPath)) {
      const d = fs.open(dbPath);
      try {
        d.sync();
      } finally {
        d.close();
      }
    }
    writeSyncedMarker(f, head);
    f.sync();
    if (create) fs.syncDir(path);
    return f;
  } catch (e) {
    f.close();
    throw e;
  }
}

/** The database's size must be the last snapshot's (a cheap check for changes made without Mycelite). */
function checkSize(fs: FileSystem, dbPath: string, journal: JournalWriter, path: string): void {
  const last = journal.last;
  if (!last) return;
  const f = fs.open(dbPath);
  try {
    let size = f.size();
    const want = last.dbPages * last.pageSize;
    if (size > want && size >= 100 && readDbPages(f, last.pageSize) === last.dbPages) {
      // A crash between SQLite's commit point and its truncation of a shrunk file: finish the truncation.
      f.truncate(want);
      f.sync();
      size = want;
    }
    if (size !== want) {
      throw new OpenError(
        `${path} (${size} bytes) does not match its journal (snapshot ${last.txid}: ${want} bytes): it was ` +
          `changed without Mycelite. Run \`mycelite verify ${path}\`; \`mycelite restore\` rebuilds it from the journal`,
      );
    }
  } finally {
    f.close();
  }
}

function decorate(
  db: Database,
  journal: JournalWriter,
  journalPath: string,
  sync: WriterSync | undefined,
  compactor: WriterCompactor,
  cleanup: () => Error | undefined,
): MyceliteDatabase {
  const engineClose = db.close.bind(db);
  let closed = false;
  return Object.defineProperties(db, {
    journalPath: { value: journalPath, enumerable: true },
    sync: { value: sync, enumerable: true },
    position: { value: () => journal.position },
    compact: { value: (o?: CompactCallOptions) => compactor.compact(o ?? {}) },
    close: {
      value: () => {
        engineClose();
        if (!closed) {
          closed = true;
          // A close whose final checkpoint failed (fsync): the journal has everything, open() redoes it.
          const failed = cleanup();
          if (failed) throw failed;
        }
        return db;
      },
    },
  }) as MyceliteDatabase;
}
