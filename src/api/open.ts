/**
 * Opening a database through Mycelite: take the writer lock, recover from a crash, bootstrap an existing
 * database into a new journal, then hand out a better-sqlite3-like connection whose every committed
 * transaction becomes one snapshot. Runtime-neutral: the runtime (Node, browser) supplies the files.
 */
import { Capture } from '../capture/capture.js';
import { Database } from '../engine/database.js';
import { loadSqlite } from '../engine/sqlite.js';
import { JournalReader, loadHash, type SnapshotInfo } from '../format/index.js';
import type { CompactResult } from '../history/compact.js';
import { parseRetention } from '../history/policy.js';
import { openHistory } from '../history/source.js';
import type { JournalWriter, Position } from '../journal/journal-writer.js';
import { journalPaths, missingDirectory } from '../journal/paths.js';
import { isWalDatabase } from '../journal/sqlite-header.js';
import { readSyncedMarker, setSyncedMarker } from '../journal/synced-marker.js';
import { beforeRecovery, openDeviceState, type SharedOptions, startDevice } from '../shared/open-shared.js';
import type { PendingQueue } from '../shared/pending.js';
import type { FileHandle, FileSystem, Runtime } from '../storage/file-system.js';
import { SyncError } from '../sync/push-errors.js';
import type { Pusher, WriterSync } from '../sync/pusher.js';
import { checkHubOptions, type HubOptions, reopenJournal, startWriterSync } from '../sync/writer-start.js';
import { historyPages } from '../timetravel/history-pages.js';
import type { ViewTarget } from '../timetravel/page-index.js';
import { installMyceliteVfs } from '../vfs/vfs.js';
import { type CompactCallOptions, type HistoryOptions, WriterCompactor } from './compact.js';
import { checkHistory, type HistoryCheck } from './history-check.js';
import { type OpenWarning, RecoveryError, recordOutsideChange, recoverWriter } from './recovery.js';

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
  /**
   * A database that many devices write (docs/ARCHITECTURE.md, "Shared databases"): every transaction
   * commits locally at once and is also kept as a logical change until the hub's history holds it; with
   * `hub`, the device syncs by itself (others' changes come in, its own are applied on top and pushed).
   */
  shared?: boolean | SharedOptions;
  /**
   * Called for each thing Mycelite did to keep your data that you must hear about: a damaged or missing
   * journal set aside, a change another program made to the database recorded as a snapshot (see
   * `OpenWarning`). Default: `console.warn`. Every warning is also kept in `db.warnings`.
   */
  onWarning?: (warning: OpenWarning) => void;
  /**
   * How long a statement waits for a lock another connection holds (a native SQLite process reading the
   * file, say) before it fails with SQLITE_BUSY, in milliseconds (`PRAGMA busy_timeout`). Default 5000,
   * as better-sqlite3.
   */
  timeout?: number;
  /** Fail (an OpenError, nothing created) when the database file does not exist, as better-sqlite3. */
  fileMustExist?: boolean;
}

/** better-sqlite3's default busy timeout, in milliseconds. */
export const DEFAULT_TIMEOUT = 5000;

/** Why `timeout` is not a number of milliseconds, or undefined. */
export function badTimeout(timeout: unknown): string | undefined {
  if (timeout === undefined) return undefined;
  if (typeof timeout === 'number' && Number.isInteger(timeout) && timeout >= 0 && timeout <= 0x7fffffff) {
    return undefined;
  }
  return `timeout must be a whole number of milliseconds from 0 to 2147483647, not ${String(timeout)}`;
}

/** A connection to a database replicated by Mycelite: a Database plus its journal. */
export interface MyceliteDatabase extends Database {
  /** Path of the journal file. */
  readonly journalPath: string;
  /** What open() (and the connection since) did to keep the data that the user must hear about. */
  readonly warnings: readonly OpenWarning[];
  /**
   * The background check of the history's snapshot bodies that open() starts (only those not checked by
   * an earlier open): resolves when it ends; damage is also a `history_damaged` warning.
   */
  readonly historyCheck: Promise<HistoryCheck>;
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
  /**
   * Takes the database back to an earlier point of its history (a txid, or the last snapshot at or
   * before a time) as one new snapshot: the history stays linear, nothing after the point is lost from it,
   * and replicas follow. Between transactions only; throws ViewRangeError for a point retention dropped.
   */
  revert(at: ViewTarget): RevertResult;
}

/** What a revert did. */
export interface RevertResult {
  /** The point the database went back to. */
  target: { txid: bigint; timestamp: number };
  /** The new snapshot that holds the revert (undefined: the database already was at that state). */
  snapshot: SnapshotInfo | undefined;
}

export type { HistoryCheck, HubOptions, OpenWarning };

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
  if (options.fileMustExist === true && !fs.exists(dbPath)) {
    throw new OpenError(`cannot open ${path}: it does not exist (fileMustExist)`);
  }
  const timeoutError = badTimeout(options.timeout);
  if (timeoutError) throw new OpenError(`cannot open ${path}: ${timeoutError}`);
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
        "Read it with openReplica() or openReadonly() (`mycelite query` on the command line), or write to the writer's database",
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
  const warnings: OpenWarning[] = [];
  const warn = (w: OpenWarning): void => {
    warnings.push(w);
    if (options.onWarning) options.onWarning(w);
    else console.warn(`mycelite: warning: ${w.message}`);
  };
  let journal: JournalWriter | undefined;
  let db: Database | undefined;
  let inflight: FileHandle | undefined;
  let synced: FileHandle | undefined;
  let pusher: Pusher | undefined;
  let queue: PendingQueue | undefined;
  let device: ReturnType<typeof startDevice> | undefined;
  try {
    if (fs.fileSize(dbPath) > 0) refuseWal(fs, dbPath, path);
    const vfs = installMyceliteVfs(sqlite3, VFS_NAME, { fs, tempPath: rt.tempPath });
    fs.delete(p.rollback);
    const holdsWrites = durability === 'journal';
    // A device of a shared database stays one: every writer of it records its changes.
    const shared =
      options.shared === true || (options.shared === undefined && fs.exists(p.shared))
        ? {}
        : options.shared || undefined;
    if (shared) beforeRecovery(fs, p);
    const recovered = recoverWriter({
      fs,
      sqlite3,
      vfsName: VFS_NAME,
      dbPath,
      name: path,
      paths: p,
      holdsWrites,
      warn,
    });
    journal = recovered.journal;
    const checkedTxid = recovered.checkedTxid;
    // Once the background check passed, every snapshot is known good: checked, or appended by this writer.
    let historyGood = false;
    synced = setSyncedMarker(fs, dbPath, p.synced, journal.position, {
      checkedTxid,
      holdsWrites,
      offset: journal.headOffset,
    });
    inflight = fs.open(p.inflight, { create: true });
    if (shared) queue = openDeviceState(fs, p, dbPath, journal, { checkedTxid, holdsWrites });

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
        hubTxid: () =>
          queue ? queue.base.txid : options.hub ? (pusher?.status().hubTxid ?? null) : undefined,
        rebased: () => pusher?.rebase(reopenJournal(fs, p.journal, writer.end)),
        busy: () => db?.inTransaction === true,
        checkpoint: () => capture.checkpoint(),
      },
      options.history,
    );
    const noteSnapshot = (snapshot: SnapshotInfo): void => {
      device?.device.noteSnapshot(snapshot);
      pusher?.noteSnapshot(snapshot);
      options.onSnapshot?.(snapshot);
      compactor.noteCommit();
    };
    const capture = new Capture(journal, {
      fs,
      spillPath: p.spill,
      memoryBudget: options.memoryBudget,
      onSnapshot: noteSnapshot,
      inflight,
      holdWrites: holdsWrites ? { rollbackPath: p.rollback } : undefined,
      synced: { file: synced, checkedTxid: () => (historyGood ? writer.position.txid : checkedTxid) },
      onOutsideChange: () => {
        const snap = recordOutsideChange(fs, p, writer, dbPath);
        if (!snap) return;
        noteSnapshot(snap);
        warn({
          code: 'outside_change',
          message: `${path} was changed by another program (not through Mycelite) while open: the change was recorded as snapshot ${snap.txid} (an outside change)`,
          txid: snap.txid,
        });
      },
    });
    vfs.expect(dbPath, capture);
    db = Database.open(sqlite3, dbPath, { vfs: VFS_NAME });
    db.pragma(`busy_timeout = ${options.timeout ?? DEFAULT_TIMEOUT}`);
    if (creating) fs.syncDir(dbPath);

    if (journal.position.txid === 0n && fs.fileSize(dbPath) > 0) capture.bootstrap();
    capture.resetCounter();
    if (shared && queue) {
      device = startDevice({
        fs,
        paths: p,
        dbPath,
        db,
        capture,
        journal,
        queue,
        options: shared,
        hub: options.hub,
      });
    } else if (options.hub) {
      try {
        // Indexed from the head on: the whole journal only if the hub is behind it.
        const at = journal.headOffset;
        const from = at === undefined ? undefined : { offset: at, ...journal.position };
        pusher = await startWriterSync(fs, p.journal, journal.end, options.hub, from);
      } catch (e) {
        if (!(e instanceof SyncError)) throw e;
        const { url, db } = options.hub;
        throw new OpenError(`cannot open ${path} as the writer of ${db} on ${url}: ${e.message}`, {
          cause: e,
        });
      }
    }
    const sync: WriterSync | undefined = pusher ?? device?.sync;
    const conn = db;
    const revert = (at: ViewTarget): RevertResult => {
      if (conn.inTransaction) throw new Error('revert: commit or roll back the open transaction first');
      if (device)
        throw new Error('revert: not on a shared database yet (its other devices would not see it)');
      const { pages, snapshot: target } = historyPages(fs, p, at);
      try {
        // SQLite's EXCLUSIVE lock keeps other connections out while the file changes under it.
        const snapshot = capture.exclusively(() => capture.revert(pages));
        // Its cached pages and schema are of the state before: let SQLite read the file again.
        conn.resetCache();
        return { target: { txid: target.txid, timestamp: target.timestamp }, snapshot };
      } finally {
        pages.close?.();
      }
    };
    // Snapshot bodies not known good yet are checked in the background; damage is a warning at once.
    let closing = false;
    const historyCheck = checkHistory(fs, p, checkedTxid, journal.position.txid, () => closing).then((r) => {
      if (r.ok) historyGood = true;
      if (r.damage) {
        warn({
          code: 'history_damaged',
          message:
            `${path}: snapshot ${r.damage.txid} of its history is damaged (${r.damage.message}): points from txid ` +
            `${r.damage.txid} on cannot be restored from this copy (a hub's copy may be whole); the database ` +
            'itself is fine and goes on. `mycelite verify` shows the details',
          txid: r.damage.txid,
        });
      }
      return r;
    });
    const extras = { warnings, revert, historyCheck };
    return decorate(db, journal, p.journal, sync, compactor, extras, () => {
      closing = true;
      const dev = device;
      void (dev ? dev.close() : sync?.close());
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
    if (e instanceof RecoveryError) throw new OpenError(e.message);
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

/** Throws an OpenError when the database at `dbPath` is in WAL mode (Mycelite reads and writes no WAL). */
export function refuseWal(fs: FileSystem, dbPath: string, path: string): void {
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
    if (marker !== 'bad' && (marker.txid >= head || !marker.holdsWrites)) return undefined;
    return `its last writer did not close it (a crash), so the file may lag its journal: open it for writing once with open() (or run \`mycelite verify\`), which brings it up to date`;
  } finally {
    lock?.release();
  }
}

function decorate(
  db: Database,
  journal: JournalWriter,
  journalPath: string,
  sync: WriterSync | undefined,
  compactor: WriterCompactor,
  extras: Pick<MyceliteDatabase, 'warnings' | 'revert' | 'historyCheck'>,
  cleanup: () => Error | undefined,
): MyceliteDatabase {
  const engineClose = db.close.bind(db);
  let closed = false;
  return Object.defineProperties(db, {
    journalPath: { value: journalPath, enumerable: true },
    warnings: { value: extras.warnings, enumerable: true },
    historyCheck: { value: extras.historyCheck },
    sync: { value: sync, enumerable: true },
    position: { value: () => journal.position },
    compact: { value: (o?: CompactCallOptions) => compactor.compact(o ?? {}) },
    revert: { value: extras.revert },
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
