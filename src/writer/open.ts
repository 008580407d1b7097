/**
 * Opening a database through Mycelite: take the writer lock, recover from a crash, bootstrap an existing
 * database into a new journal, then hand out a better-sqlite3-like connection whose every committed
 * transaction becomes one snapshot. Runtime-neutral: the runtime (Node, browser) supplies the files.
 */

import { Capture } from '../capture/capture.js';
import { SyncError } from '../client/push-errors.js';
import type { Pusher, WriterSync } from '../client/pusher.js';
import { checkHubOptions, type HubOptions, reopenJournal, startWriterSync } from '../client/writer-start.js';
import { Database } from '../engine/database.js';
import { loadSqlite, type Sqlite3 } from '../engine/sqlite.js';
import type { FileHandle, FileSystem, Runtime } from '../files/file-system.js';
import { JournalReader, loadHash, type Position, type SnapshotInfo } from '../format/index.js';
import type { CompactResult } from '../history/compact.js';
import { parseRetention } from '../history/policy.js';
import { openHistory } from '../history/source.js';
import type { JournalWriter } from '../journal/journal-writer.js';
import { type JournalPaths, journalPaths, missingDirectory } from '../journal/paths.js';
import { isWalDatabase } from '../journal/sqlite-header.js';
import { readSyncedMarker, setSyncedMarker } from '../journal/synced-marker.js';
import { beforeRecovery, openDeviceState, type SharedOptions, startDevice } from '../shared/open-shared.js';
import type { PendingQueue } from '../shared/pending.js';
import { historyPages } from '../timetravel/history-pages.js';
import type { ViewTarget } from '../timetravel/page-index.js';
import { installMyceliteVfs, MYCELITE_VFS } from '../vfs/vfs.js';
import { type CompactCallOptions, type HistoryOptions, WriterCompactor } from './compact.js';
import { OpenError, RecoveryError, step } from './errors.js';
import { checkHistory, type HistoryCheck } from './history-check.js';
import { type OpenWarning, recordOutsideChange, recoverWriter } from './recovery.js';

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

/** Zeros kept written past the end of the journal (JournalWriter.preallocate). */
const JOURNAL_AHEAD = 1 << 20;

/**
 * Opens (creating if missing) the database at `path` through Mycelite: a list of named steps, each adding
 * its name to the error it throws (docs/ARCHITECTURE.md, "Recovery (at open)"). The options are checked
 * before anything is created; recovery runs under the writer lock; then the parts of the writer are made
 * in order, each from those made before it.
 */
export async function openWith(
  rt: Runtime,
  path: string,
  options: MyceliteOptions = {},
): Promise<MyceliteDatabase> {
  const [sqlite3] = await Promise.all([loadSqlite(), loadHash()]);
  const plan = checkOptions(rt, path, options);
  const w = new Writer(rt.fs, plan, options);
  // Its errors say all there is (another writer holds it; the file-lock addon did not load): as they are.
  w.takeLock();
  try {
    step('check the database is not in WAL mode', () => w.refuseWal());
    const vfs = step('install the VFS', () =>
      installMyceliteVfs(sqlite3, MYCELITE_VFS, { fs: w.fs, tempPath: rt.tempPath }),
    );
    step('delete the moved rollback journal', () => w.fs.delete(plan.paths.rollback));
    if (plan.shared) step('prepare the shared device', () => beforeRecovery(w.fs, plan.paths));
    w.recover(sqlite3); // recoverWriter: its own named steps
    step('set the synced marker', () => w.setMarkers());
    if (plan.shared) step('open the shared device state', () => w.openDeviceState());
    step('write zeros ahead of the journal', () => w.journal!.preallocate(JOURNAL_AHEAD));
    const capture = step('start the capture', () => w.startCapture());
    vfs.expect(plan.dbPath, capture);
    const db = step('open the database', () => w.openDatabase(sqlite3));
    step('bootstrap the journal from the database', () => w.bootstrap());
    if (plan.shared) step('start the shared device', () => w.startDevice(plan.shared!));
    else if (options.hub) await w.startPushing(options.hub);
    const historyCheck = w.checkHistoryInBackground();
    return decorate(db, w, historyCheck, () => w.close(() => vfs.forget(plan.dbPath)));
  } catch (e) {
    w.abandon();
    if (e instanceof OpenError) throw e;
    if (e instanceof RecoveryError) throw new OpenError(e.message);
    throw new OpenError(`open ${path}: ${(e as Error).message}`, { cause: e });
  }
}

/** What the options of one open() come to, once checked. */
interface OpenPlan {
  /** The path as the user gave it (for messages). */
  name: string;
  dbPath: string;
  paths: JournalPaths;
  holdsWrites: boolean;
  /** A shared database's device options (undefined: not shared). */
  shared: SharedOptions | undefined;
  /** The database file or its journal directory is new: their directory is fsynced once SQLite made them. */
  creating: boolean;
}

/**
 * Checks the options and the place before anything is created or locked: each thing open() would
 * otherwise fail on later is an OpenError that says what to change (a bad retention policy fails open(),
 * not a later commit).
 */
function checkOptions(rt: Runtime, name: string, options: MyceliteOptions): OpenPlan {
  const { fs } = rt;
  const dbPath = rt.resolve(name);
  const paths = journalPaths(dbPath);
  const refuse = (why: string): OpenError => new OpenError(`cannot open ${name}: ${why}`);
  const missing = missingDirectory((f) => fs.exists(f), dbPath);
  if (missing) throw refuse(missing);
  if (options.fileMustExist === true && !fs.exists(dbPath)) throw refuse('it does not exist (fileMustExist)');
  const timeoutError = badTimeout(options.timeout);
  if (timeoutError) throw refuse(timeoutError);
  const durability = options.durability ?? 'journal';
  if (durability !== 'journal' && durability !== 'sqlite') {
    throw refuse(`durability must be 'journal' or 'sqlite', not ${String(durability)}`);
  }
  const badHub = options.hub ? checkHubOptions(options.hub) : undefined;
  if (badHub) throw refuse(badHub);
  if (fs.exists(paths.replica)) {
    throw new OpenError(
      `${name} is a replica (it follows a hub; see ${paths.replica}): writing to it would fork its history. ` +
        "Read it with openReplica() or openReadonly() (`mycelite query` on the command line), or write to the writer's database",
    );
  }
  const retain = options.history === false ? undefined : options.history?.retain;
  try {
    if (retain !== undefined) parseRetention(retain);
  } catch (e) {
    throw refuse(`history.retain: ${(e as Error).message}`);
  }
  // A device of a shared database stays one: every writer of it records its changes.
  const shared =
    options.shared === true || (options.shared === undefined && fs.exists(paths.shared))
      ? {}
      : options.shared || undefined;
  return {
    name,
    dbPath,
    paths,
    holdsWrites: durability === 'journal',
    shared,
    creating: !fs.exists(dbPath) || !fs.exists(paths.dir),
  };
}

/**
 * The parts of a writer, made one step at a time by openWith, each from those made before it. The
 * callbacks the parts give each other (a commit noted to the device, pusher and compactor; a checkpoint
 * the compactor asks of the capture; the hub's txid it asks of the pusher) go through here: until a part
 * exists, a callback to it has nothing to do.
 */
class Writer {
  readonly warnings: OpenWarning[] = [];
  private lock: { release(): void } | undefined;
  journal: JournalWriter | undefined;
  /** Snapshot bodies known good up to this txid (recovery carries it over from the marker). */
  private checkedTxid = 0n;
  /** Once the background check passed, every snapshot is known good: checked, or appended by this writer. */
  private historyGood = false;
  private closing = false;
  private synced: FileHandle | undefined;
  private inflight: FileHandle | undefined;
  private queue: PendingQueue | undefined;
  private capture: Capture | undefined;
  private db: Database | undefined;
  compactor: WriterCompactor | undefined;
  private pusher: Pusher | undefined;
  device: ReturnType<typeof startDevice> | undefined;

  constructor(
    readonly fs: FileSystem,
    readonly plan: OpenPlan,
    private readonly options: MyceliteOptions,
  ) {}

  /** What the connection syncs through: the pusher, or the shared device's sync. */
  get sync(): WriterSync | undefined {
    return this.pusher ?? this.device?.sync;
  }

  /** Makes the journal directory and takes the writer lock (one writer per database). */
  takeLock(): void {
    const { fs, plan } = this;
    fs.mkdir(plan.paths.dir);
    this.lock = fs.tryLockExclusive?.(plan.paths.lock);
    if (fs.tryLockExclusive && !this.lock) {
      throw new OpenError(
        `${plan.name} is already open for writing (a connection in this or another process holds ${plan.paths.lock}); Mycelite allows one writer per database: close it first, or open read-only`,
      );
    }
  }

  refuseWal(): void {
    if (this.fs.fileSize(this.plan.dbPath) > 0) refuseWal(this.fs, this.plan.dbPath, this.plan.name);
  }

  warn(w: OpenWarning): void {
    this.warnings.push(w);
    if (this.options.onWarning) this.options.onWarning(w);
    else console.warn(`mycelite: warning: ${w.message}`);
  }

  /** Brings the database file and the journal into agreement (src/writer/recovery.ts) and opens the journal. */
  recover(sqlite3: Sqlite3): void {
    const { fs, plan } = this;
    const recovered = recoverWriter({
      fs,
      sqlite3,
      vfsName: MYCELITE_VFS,
      dbPath: plan.dbPath,
      name: plan.name,
      paths: plan.paths,
      holdsWrites: plan.holdsWrites,
      warn: (w) => this.warn(w),
    });
    this.journal = recovered.journal;
    this.checkedTxid = recovered.checkedTxid;
  }

  /** Writes the synced marker for the journal's head and opens the inflight marker. */
  setMarkers(): void {
    const { fs, plan } = this;
    const journal = this.journal!;
    this.synced = setSyncedMarker(fs, plan.dbPath, plan.paths.synced, journal.position, {
      checkedTxid: this.checkedTxid,
      holdsWrites: plan.holdsWrites,
      offset: journal.headOffset,
    });
    this.inflight = fs.open(plan.paths.inflight, { create: true });
  }

  openDeviceState(): void {
    const { fs, plan } = this;
    this.queue = openDeviceState(fs, plan.paths, plan.dbPath, this.journal!, {
      checkedTxid: this.checkedTxid,
      holdsWrites: plan.holdsWrites,
    });
  }

  /** Makes the compactor and the Capture that turns each commit into a snapshot. */
  startCapture(): Capture {
    const { fs, plan, options } = this;
    const journal = this.journal!;
    this.compactor = new WriterCompactor(
      {
        fs,
        dbPath: plan.dbPath,
        paths: plan.paths,
        journal,
        hubTxid: () => this.hubTxid(),
        rebased: () => this.pusher?.rebase(reopenJournal(fs, plan.paths.journal, journal.end)),
        busy: () => this.db?.inTransaction === true,
        checkpoint: () => this.capture?.checkpoint(),
      },
      options.history,
    );
    this.capture = new Capture(journal, {
      fs,
      spillPath: plan.paths.spill,
      memoryBudget: options.memoryBudget,
      onSnapshot: (snapshot) => this.noteSnapshot(snapshot),
      inflight: this.inflight,
      holdWrites: plan.holdsWrites ? { rollbackPath: plan.paths.rollback } : undefined,
      synced: {
        file: this.synced!,
        checkedTxid: () => (this.historyGood ? journal.position.txid : this.checkedTxid),
      },
      onOutsideChange: () => this.recordOutsideChange(),
    });
    return this.capture;
  }

  /** The txid the hub holds, for compaction (undefined: no hub; null: not known yet). */
  private hubTxid(): bigint | undefined | null {
    if (this.queue) return this.queue.base.txid;
    return this.options.hub ? (this.pusher?.status().hubTxid ?? null) : undefined;
  }

  private noteSnapshot(snapshot: SnapshotInfo): void {
    this.device?.device.noteSnapshot(snapshot);
    this.pusher?.noteSnapshot(snapshot);
    this.options.onSnapshot?.(snapshot);
    this.compactor?.noteCommit();
  }

  /** Another program wrote the database between two transactions: its change becomes a snapshot. */
  private recordOutsideChange(): void {
    const { fs, plan } = this;
    const snap = recordOutsideChange(fs, plan.paths, this.journal!, plan.dbPath);
    if (!snap) return;
    this.noteSnapshot(snap);
    this.warn({
      code: 'outside_change',
      message: `${plan.name} was changed by another program (not through Mycelite) while open: the change was recorded as snapshot ${snap.txid} (an outside change)`,
      txid: snap.txid,
    });
  }

  openDatabase(sqlite3: Sqlite3): Database {
    const { fs, plan } = this;
    this.db = Database.open(sqlite3, plan.dbPath, { vfs: MYCELITE_VFS });
    this.db.pragma(`busy_timeout = ${this.options.timeout ?? DEFAULT_TIMEOUT}`);
    if (plan.creating) fs.syncDir(plan.dbPath);
    return this.db;
  }

  /** A database with content and an empty journal (opened through Mycelite for the first time): snapshot 1. */
  bootstrap(): void {
    const capture = this.capture!;
    if (this.journal!.position.txid === 0n && this.fs.fileSize(this.plan.dbPath) > 0) capture.bootstrap();
    capture.resetCounter();
  }

  startDevice(options: SharedOptions): void {
    const { fs, plan } = this;
    this.device = startDevice({
      fs,
      paths: plan.paths,
      dbPath: plan.dbPath,
      db: this.db!,
      capture: this.capture!,
      journal: this.journal!,
      queue: this.queue!,
      options,
      hub: this.options.hub,
    });
  }

  /** Takes the hub's write lease and starts pushing; a hub that refuses is an OpenError saying why. */
  async startPushing(hub: HubOptions): Promise<void> {
    const journal = this.journal!;
    // Indexed from the head on: the whole journal only if the hub is behind it.
    const at = journal.headOffset;
    const from = at === undefined ? undefined : { offset: at, ...journal.position };
    try {
      this.pusher = await startWriterSync(this.fs, this.plan.paths.journal, journal.end, hub, from);
    } catch (e) {
      if (!(e instanceof SyncError))
        throw new Error(`start pushing to the hub: ${(e as Error).message}`, { cause: e });
      throw new OpenError(
        `cannot open ${this.plan.name} as the writer of ${hub.db} on ${hub.url}: ${e.message}`,
        {
          cause: e,
        },
      );
    }
  }

  /** Snapshot bodies not known good yet are checked in the background; damage is a warning at once. */
  checkHistoryInBackground(): Promise<HistoryCheck> {
    const { fs, plan } = this;
    const head = this.journal!.position.txid;
    return checkHistory(fs, plan.paths, this.checkedTxid, head, () => this.closing).then((r) => {
      if (r.ok) this.historyGood = true;
      if (r.damage) {
        this.warn({
          code: 'history_damaged',
          message:
            `${plan.name}: snapshot ${r.damage.txid} of its history is damaged (${r.damage.message}): points from txid ` +
            `${r.damage.txid} on cannot be restored from this copy (a hub's copy may be whole); the database ` +
            'itself is fine and goes on. `mycelite verify` shows the details',
          txid: r.damage.txid,
        });
      }
      return r;
    });
  }

  /** Takes the database back to an earlier point as one new snapshot (see MyceliteDatabase.revert). */
  revert(at: ViewTarget): RevertResult {
    const conn = this.db!;
    const capture = this.capture!;
    if (conn.inTransaction) throw new Error('revert: commit or roll back the open transaction first');
    if (this.device)
      throw new Error('revert: not on a shared database yet (its other devices would not see it)');
    const { pages, snapshot: target } = historyPages(this.fs, this.plan.paths, at);
    try {
      // SQLite's EXCLUSIVE lock keeps other connections out while the file changes under it.
      const snapshot = capture.exclusively(() => capture.revert(pages));
      // Its cached pages and schema are of the state before: let SQLite read the file again.
      conn.resetCache();
      return { target: { txid: target.txid, timestamp: target.timestamp }, snapshot };
    } finally {
      pages.close?.();
    }
  }

  /** At the connection's close: stops syncing, closes the files, releases the lock. */
  close(forgetVfs: () => void): Error | undefined {
    this.closing = true;
    const dev = this.device;
    void (dev ? dev.close() : this.sync?.close());
    forgetVfs();
    this.closeFiles();
    return this.capture!.closeError;
  }

  /** After a failed open: closes what was made, releases the lock. */
  abandon(): void {
    this.db?.close();
    this.closeFiles();
  }

  private closeFiles(): void {
    this.journal?.close();
    this.inflight?.close();
    this.synced?.close();
    this.lock?.release();
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
  w: Writer,
  historyCheck: Promise<HistoryCheck>,
  cleanup: () => Error | undefined,
): MyceliteDatabase {
  const engineClose = db.close.bind(db);
  const journal = w.journal!;
  const compactor = w.compactor!;
  let closed = false;
  return Object.defineProperties(db, {
    journalPath: { value: w.plan.paths.journal, enumerable: true },
    warnings: { value: w.warnings, enumerable: true },
    historyCheck: { value: historyCheck },
    sync: { value: w.sync, enumerable: true },
    position: { value: () => journal.position },
    compact: { value: (o?: CompactCallOptions) => compactor.compact(o ?? {}) },
    revert: { value: (at: ViewTarget) => w.revert(at) },
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
