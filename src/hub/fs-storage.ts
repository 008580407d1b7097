/**
 * HubStorage on the filesystem: `DATA/dbs/<name>/journal` in the exact journal format (docs/FORMAT.md),
 * `DATA/dbs/<name>/mode` (src/hub/fs-mode.ts) and `DATA/dbs/<name>/lease.json`. Writes to one database
 * are serialized; an append is durable (fsync) before it resolves. An index of offsets on disk
 * (`DATA/dbs/<name>/offsets`, src/hub/fs-index.ts) serves reads from any position: the hub holds no
 * per-snapshot state in memory, and opening a database reads only the journal's tail after the index.
 *
 * Every push is checked against the database's pages at the head (`DATA/dbs/<name>/head.db`,
 * src/hub/heads.ts) before it is appended. A journal is checked whole when it is first opened (every
 * snapshot's checksum and structure: the tail at once, the part the index covers in a worker thread,
 * reads of that part waiting for it): a damaged one is cut back to before its first damaged snapshot,
 * the damaged file kept beside it (`journal.damaged-TIME`), so the writer's next push re-supplies the rest.
 *
 * Compaction (src/hub/compaction.ts): once a journal grows past its threshold, its older snapshots move
 * into `DATA/dbs/<name>/history`; the journal then starts after them (its base moves up) and reads
 * from before the base fail with BeforeBaseError (readers reset from a full image). The swap happens in
 * the database's append order; reads in flight keep the old journal file open and finish from it.
 */

import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { writeFileAtomic } from '../files/file-system.js';
import {
  decodeSnapshotHeader,
  encodeFileHeader,
  FILE_HEADER_SIZE,
  FORMAT_VERSION,
  JournalReader,
  type Position,
  SNAPSHOT_HEADER_SIZE,
  type SnapshotHeader,
} from '../format/index.js';
import { installHistory } from '../history/compact.js';
import { fileSource } from '../journal/file-source.js';
import { type KnownPoint, scanJournal } from '../journal/journal-scan.js';
import { JournalWriter } from '../journal/journal-writer.js';
import { NodeFileSystem } from '../node/node-fs.js';
import { checkDbName, type DbMode, type EncodedSnapshot } from '../protocol/index.js';
import type { CheckJob } from './check-worker.js';
import type { CompactJob, CompactOutcome } from './compact-worker.js';
import { CompactionRuns, compactionSettings, type HubCompaction } from './compaction.js';
import { OffsetIndex } from './fs-index.js';
import { FsLeases } from './fs-leases.js';
import { readModeFile, writeModeFile } from './fs-mode.js';
import {
  DamageListeners,
  type DamageReport,
  DoesNotApplyError,
  Heads,
  type Staged,
  StoredCopyDamagedError,
} from './heads.js';
import { type Damage, findDamage, keepAndCut } from './journal-check.js';
import { Mutex } from './mutex.js';
import type { AppendListener, AppendResult, DbState, HubStorage, StoredLease } from './storage.js';
import { appendRefusal, BeforeBaseError, checkAppend } from './storage.js';
import { ViewUse } from './view-use.js';
import { runJob } from './worker.js';

const READ_CHUNK = 1 << 20;
const nodeFs = new NodeFileSystem();

/** An open database: its writer, a read handle and the offsets of its snapshots. */
interface Entry {
  writer: JournalWriter;
  reader: fsp.FileHandle;
  journalId: Uint8Array;
  base: Position;
  mode: DbMode;
  /** Entry i is where snapshot base.txid + 1 + i starts (on disk). */
  offsets: OffsetIndex;
  /**
   * The check of the snapshots before `checkedFrom` (checked by an earlier run, when their index entries
   * were written) running in a worker: reads of them wait for it. Resolves with the damage it found.
   */
  olderCheck?: Promise<Damage | undefined>;
  checkedFrom: number;
  /** The durable head and the offset after it (appends in progress are not visible before their fsync). */
  head: Position;
  end: number;
  headTimestamp: number;
  /** Size of the database at the head (bytes), for the compaction threshold. */
  dbBytes: number;
  /** Reads in progress on `reader`; a retired entry (replaced by a compaction) closes it after the last. */
  users: number;
  retired: boolean;
}

export interface FsStorageOptions {
  /** Automatic compaction (default: on, with the defaults of src/hub/compaction.ts); false: never. */
  compaction?: HubCompaction | false;
  /** Called when a stored journal or a head file is found damaged (and what was done about it). */
  onDamage?: (db: string, report: DamageReport) => void;
  /** Called when the check of a journal's older part after a start ends (bytes checked, its time). */
  onChecked?: (db: string, check: { bytes: number; ms: number; damaged: boolean }) => void;
  /**
   * An open database (five file descriptors: its journal's writer and reader, its offset index, its head
   * file) nobody has used for this long is closed (default 60 s; Infinity: never), and so is the least
   * recently used one past `maxOpen` open databases (default 200). The next request opens it again.
   */
  idleMs?: number;
  maxOpen?: number;
}

/** Databases a hub on files keeps open at most (5 file descriptors each: ~1,000 under a limit of 1,024). */
const MAX_OPEN = 200;

export class FsStorage implements HubStorage {
  private readonly entries = new Map<string, Entry>();
  private readonly locks = new Map<string, Mutex>();
  private readonly listeners = new Map<string, Set<AppendListener>>();
  private closed = false;

  private readonly leases = new FsLeases();
  private readonly compactions: CompactionRuns;
  /** Bumped whenever a database's journal file is replaced or cut: an open begun before is stale. */
  private readonly generations = new Map<string, number>();
  /** Databases whose indexed snapshots this process checked (it created them, or its check passed). */
  private readonly checked = new Set<string>();
  private readonly stopping = new AbortController();
  private readonly heads: Heads;
  private readonly damage = new DamageListeners();
  private readonly onChecked: FsStorageOptions['onChecked'];
  /** The databases open, and when each was last used (closed when idle, or past `maxOpen`). */
  private readonly use: ViewUse;
  private readonly maxOpen: number;
  /** Databases closed for being idle or past `maxOpen`, since start (for tests and /metrics). */
  closedIdle = 0;

  private constructor(
    readonly dataDir: string,
    private readonly dirLock: { release(): void },
    options: FsStorageOptions,
  ) {
    this.compactions = new CompactionRuns(
      options.compaction === false ? undefined : compactionSettings(options.compaction ?? {}),
    );
    if (options.onDamage) this.damage.add(options.onDamage);
    this.onChecked = options.onChecked;
    this.use = new ViewUse(options.idleMs ?? 60_000, (db) => this.closeIdle(db));
    this.maxOpen = options.maxOpen ?? MAX_OPEN;
    this.heads = new Heads(
      (db) => this.dir(db),
      this,
      (db, r) => this.reportDamage(db, r),
    );
  }

  private reportDamage(db: string, report: DamageReport): void {
    this.damage.report(db, report);
  }

  watchDamage(listener: (db: string, report: DamageReport) => void): void {
    this.damage.add(listener);
  }

  /**
   * Opens (creating) the storage under `dataDir`. One hub process at a time may use a data directory: it
   * holds an exclusive lock on `DATA/lock` while open.
   */
  static async open(dataDir: string, options: FsStorageOptions = {}): Promise<FsStorage> {
    const root = path.resolve(dataDir);
    await fsp.mkdir(path.join(root, 'dbs'), { recursive: true });
    const lockFile = path.join(root, 'lock');
    fs.closeSync(fs.openSync(lockFile, 'a'));
    const lock = nodeFs.tryLockExclusive(lockFile);
    if (!lock) {
      throw new Error(
        `another hub process uses the data directory ${root}; stop it or choose another --data`,
      );
    }
    try {
      return new FsStorage(root, lock, options);
    } catch (e) {
      lock.release();
      throw e;
    }
  }

  /** The directory of `db`, after checking its name and that the path stays under the data directory. */
  private dir(db: string): string {
    const bad = checkDbName(db);
    if (bad) throw new Error(bad);
    const root = path.join(this.dataDir, 'dbs');
    const dir = path.resolve(root, db);
    if (path.dirname(dir) !== root)
      throw new Error(`database name ${JSON.stringify(db)} escapes the data directory`);
    return dir;
  }

  private lock(db: string): Mutex {
    let m = this.locks.get(db);
    if (!m) {
      m = new Mutex();
      this.locks.set(db, m);
    }
    return m;
  }

  private check(): void {
    if (this.closed) throw new Error('the hub storage is closed');
  }

  async list(): Promise<string[]> {
    this.check();
    const root = path.join(this.dataDir, 'dbs');
    const names = await fsp.readdir(root);
    return names
      .filter((n) => checkDbName(n) === undefined && fs.existsSync(path.join(root, n, 'journal')))
      .sort();
  }

  /**
   * Opens `db` (once) or returns undefined when it has no journal. Reads the journal's header, the last
   * entry of its offset index (checked against the snapshot it names) and the snapshots after it, which
   * it checks whole; the part before is checked in a worker thread (`olderCheck`).
   */
  private async entry(db: string): Promise<Entry | undefined> {
    this.use.touch(db);
    const cached = this.entries.get(db);
    if (cached) return cached;
    const dir = this.dir(db);
    const file = path.join(dir, 'journal');
    if (!fs.existsSync(file)) return undefined;
    const mode = readModeFile(db, dir);
    const generation = this.generations.get(db) ?? 0;
    const header = readHeader(db, file);
    const offsets = OffsetIndex.open(path.join(dir, 'offsets'), header.journalId, header.baseTxid);
    let writer: JournalWriter;
    let handle: fsp.FileHandle;
    let known: KnownPoint | undefined;
    try {
      known = lastIndexed(file, offsets, header.baseTxid);
      const tail: number[] = [];
      const bad = findDamage(db, file, {
        from: known?.offset,
        onSnapshot: (s) => {
          if (s.offset !== known?.offset) tail.push(s.offset);
        },
      });
      if (bad) {
        if (known && bad.offset <= known.offset) offsets.cut(offsets.count - 1);
        this.cutJournal(db, file, bad.offset, bad.txid, bad.message); // a new generation
      }
      offsets.push(tail);
      if (tail.length > 0) await offsets.sync();
      writer = JournalWriter.fromScan(nodeFs, scanJournal(nodeFs, file, known)); // cuts a torn tail
      handle = await fsp.open(file, 'r');
    } catch (e) {
      offsets.close();
      throw e;
    }
    const again = this.entries.get(db); // another caller opened it meanwhile
    const stale = (this.generations.get(db) ?? 0) !== generation; // the file was replaced meanwhile
    if (again || stale) {
      writer.close();
      offsets.close();
      await handle.close();
      return again ?? this.entry(db);
    }
    const last = writer.last;
    const e: Entry = {
      writer,
      reader: handle,
      journalId: header.journalId,
      base: { txid: header.baseTxid, checksum: header.baseChecksum },
      mode,
      offsets,
      checkedFrom: known && known.offset > FILE_HEADER_SIZE ? known.offset : FILE_HEADER_SIZE,
      head: writer.position,
      end: writer.end,
      headTimestamp: last?.timestamp ?? 0,
      dbBytes: last ? last.dbPages * last.pageSize : 0,
      users: 0,
      retired: false,
    };
    this.entries.set(db, e);
    this.use.trim(this.maxOpen, db);
    if (this.checked.has(db)) e.checkedFrom = FILE_HEADER_SIZE;
    else if (e.checkedFrom > FILE_HEADER_SIZE) this.checkOlder(db, e, file);
    else this.checked.add(db);
    return e;
  }

  /** Checks the part of `e`'s journal before `checkedFrom` in a worker; damage is cut like any found. */
  private checkOlder(db: string, e: Entry, file: string): void {
    const job: CheckJob = { db, file, upTo: e.checkedFrom };
    const url = new URL('./check-worker.js', import.meta.url);
    const started = performance.now();
    e.olderCheck = runJob<Damage | null>(url, job, 'checking the stored journal', this.stopping.signal).then(
      (bad) => {
        const ms = performance.now() - started;
        this.onChecked?.(db, { bytes: job.upTo, ms, damaged: bad !== null });
        if (!bad) {
          e.checkedFrom = FILE_HEADER_SIZE;
          if (this.entries.get(db) === e) this.checked.add(db);
          return undefined;
        }
        void this.lock(db)
          .run(async () => {
            if (this.entries.get(db) !== e) return; // replaced meanwhile (a compaction, a cut)
            await this.cutAt(db, e, new StoredCopyDamagedError(db, bad.txid, bad.message), bad);
          })
          .catch(() => undefined);
        return bad;
      },
      () => undefined, // stopped with the storage; the next start checks again
    );
  }

  private stateOf(e: Entry): DbState {
    const { journalId, base, head, headTimestamp, mode } = e;
    return { journalId, base, head, headTimestamp, mode };
  }

  async state(db: string): Promise<DbState | undefined> {
    this.check();
    const e = await this.lock(db).run(() => this.entry(db));
    return e && this.stateOf(e);
  }

  async append(
    db: string,
    expectedHead: Position,
    journalId: Uint8Array,
    snapshots: EncodedSnapshot[],
    precondition?: () => Promise<void>,
    mode: DbMode = 'single',
  ): Promise<AppendResult> {
    this.check();
    const dir = this.dir(db);
    return this.lock(db).run(async () => {
      this.check();
      await precondition?.();
      checkAppend(expectedHead, snapshots);
      let e = await this.entry(db);
      if (!e) {
        const staged = await this.stage(db, undefined, journalId, expectedHead, snapshots);
        if (!('end' in staged)) return staged;
        await this.create(dir, journalId, expectedHead, snapshots, mode);
        this.checked.add(db);
        e = (await this.entry(db))!;
        this.heads.commit(db, staged);
        this.publish(db, snapshots, this.stateOf(e));
        return { ok: true, state: this.stateOf(e) };
      }
      const refused = appendRefusal(e, expectedHead, journalId, mode);
      if (refused) return { ok: false, reason: refused, state: this.stateOf(e) };
      const staged = await this.stage(db, e, journalId, expectedHead, snapshots);
      if (!('end' in staged)) return staged;
      const start = e.writer.end;
      const indexed = e.offsets.count;
      try {
        e.offsets.push(e.writer.appendEncodedAll(snapshots));
        await Promise.all([e.reader.datasync(), e.offsets.sync()]);
      } catch (err) {
        // Nothing of a failed append may stay: cut the file back and reopen it next time. Cut it before
        // forgetting the entry, so that a read (which opens the journal unlocked) cannot reopen it meanwhile.
        await fsp.truncate(path.join(dir, 'journal'), start).catch(() => undefined);
        try {
          e.offsets.cut(indexed);
        } catch {
          // checked against the journal at the next open
        }
        this.forget(db);
        e.writer.close();
        this.retire(e);
        throw err;
      }
      this.heads.commit(db, staged);
      const last = snapshots[snapshots.length - 1]!.header;
      e.head = e.writer.position;
      e.end = e.writer.end;
      e.headTimestamp = Math.max(e.headTimestamp, last.timestamp);
      e.dbBytes = last.dbPages * last.pageSize;
      const state = this.stateOf(e);
      this.publish(db, snapshots, state);
      this.maybeCompact(db, e);
      return { ok: true, state };
    });
  }

  /**
   * Checks `snapshots` against the pages at `e`'s head (none: a new database). Their changes, or why the
   * append is refused: a snapshot that does not apply, or a head that moved back because the stored copy
   * was found damaged and cut (the writer pushes again from there).
   */
  private async stage(
    db: string,
    e: Entry | undefined,
    journalId: Uint8Array,
    base: Position,
    snapshots: EncodedSnapshot[],
  ): Promise<Staged | AppendResult> {
    try {
      return await this.heads.stage(db, e && this.stateOf(e), journalId, base, snapshots);
    } catch (err) {
      if (err instanceof DoesNotApplyError) {
        return {
          ok: false,
          reason: 'does_not_apply',
          txid: err.txid,
          message: err.message,
          state: e && this.stateOf(e),
        };
      }
      if (err instanceof StoredCopyDamagedError && e) {
        // The writer reads the head again (a state of its history) and pushes from there.
        const cut = await this.cutAt(db, e, err);
        return { ok: false, reason: 'head_mismatch', state: this.stateOf(cut) };
      }
      throw err;
    }
  }

  /** Cuts the journal of `db` (open as `e`) before the stored snapshot `err.txid`; the new entry. */
  private async cutAt(db: string, e: Entry, err: StoredCopyDamagedError, found?: Damage): Promise<Entry> {
    if (err.txid <= e.base.txid) throw err; // in the compacted history: nothing to cut the journal back to
    const i = Number(err.txid - e.base.txid - 1n);
    if (i >= e.offsets.count) throw err;
    const offset = e.offsets.at(i);
    this.forget(db);
    e.writer.close();
    e.offsets.cut(i);
    this.retire(e);
    const why = found?.message ?? err.message;
    this.cutJournal(db, path.join(this.dir(db), 'journal'), offset, err.txid, why);
    const again = await this.entry(db);
    if (!again) throw err;
    return again;
  }

  /** Keeps the journal aside and cuts it at `offset` (src/hub/journal-check.ts), and reports it. */
  private cutJournal(db: string, file: string, offset: number, txid: bigint, why: string): void {
    const keptAt = keepAndCut(file, offset);
    this.generations.set(db, (this.generations.get(db) ?? 0) + 1);
    this.reportDamage(db, {
      what: 'stored',
      txid,
      message: `the hub's copy of ${db} is damaged at snapshot ${txid} (${why}): cut back to txid ${txid - 1n}, the damaged journal kept as ${keptAt}; the writer's next push supplies the rest`,
      keptAt,
      repaired: true,
    });
  }

  /**
   * Creates the journal with its first snapshots in one atomic replace (a database never exists empty),
   * after its mode file (a database never exists without its mode).
   */
  private async create(
    dir: string,
    journalId: Uint8Array,
    base: Position,
    snapshots: EncodedSnapshot[],
    mode: DbMode,
  ) {
    await fsp.mkdir(dir, { recursive: true });
    nodeFs.syncDir(dir);
    writeModeFile(dir, mode);
    const header = encodeFileHeader({
      version: FORMAT_VERSION,
      journalId,
      createdAt: Date.now(),
      baseTxid: base.txid,
      baseChecksum: base.checksum,
    });
    const starts: number[] = [];
    writeFileAtomic(nodeFs, path.join(dir, 'journal'), (f) => {
      f.write(header, 0);
      let at = header.length;
      for (const s of snapshots) {
        starts.push(at);
        f.write(s.bytes, at);
        at += s.bytes.length;
      }
    });
    // Their offsets, so that opening it reads nothing of them again (checked as they arrived).
    const offsets = OffsetIndex.open(path.join(dir, 'offsets'), journalId, base.txid);
    try {
      offsets.cut(0);
      offsets.push(starts);
      await offsets.sync();
    } finally {
      offsets.close();
    }
  }

  private publish(db: string, snapshots: EncodedSnapshot[], state: DbState): void {
    for (const l of this.listeners.get(db) ?? []) {
      try {
        l(snapshots, state);
      } catch {
        // a listener's failure is its own
      }
    }
  }

  /** Drops the entry of `db` (its journal file is being replaced or cut): opens begun before are stale. */
  private forget(db: string): void {
    this.entries.delete(db);
    this.generations.set(db, (this.generations.get(db) ?? 0) + 1);
  }

  /**
   * Closes `db` (ViewUse: idle, or the least recently used past `maxOpen`) unless something uses it: an
   * operation under its lock, a read, a compaction, or the check of its older snapshots (which would
   * run again). True when it is closed (or was not open).
   */
  private closeIdle(db: string): boolean {
    const e = this.entries.get(db);
    if (!e) return true;
    if (e.users > 0 || this.locks.get(db)?.busy || this.compactions.running(db)) return false;
    if (e.checkedFrom > FILE_HEADER_SIZE) return false;
    this.entries.delete(db);
    e.writer.close();
    this.retire(e);
    this.heads.release(db);
    this.closedIdle++;
    return true;
  }

  /** The entry of `db` with one more reader on it (release it), never a retired one. */
  private async acquire(db: string): Promise<Entry | undefined> {
    for (;;) {
      const e = await this.entry(db);
      if (!e) return undefined;
      if (e.retired) continue; // replaced meanwhile: the map holds its successor (or nothing)
      e.users++;
      return e;
    }
  }

  private release(e: Entry): void {
    e.users--;
    if (e.retired && e.users === 0) closeReads(e);
  }

  /** Stops using `e` (the caller removed it from the map): its read handle closes after the last read. */
  private retire(e: Entry): void {
    e.retired = true;
    if (e.users === 0) closeReads(e);
  }

  /** Where the snapshot after `after` starts in `e`'s journal (its end past the head). */
  private startOf(e: Entry, after: bigint): number {
    if (after <= e.base.txid) return FILE_HEADER_SIZE;
    if (after >= e.head.txid) return e.end;
    return e.offsets.at(Number(after - e.base.txid));
  }

  read(db: string, after: bigint, upTo: bigint): AsyncIterable<Uint8Array> {
    this.check();
    const self = this;
    return {
      async *[Symbol.asyncIterator]() {
        let e = await self.acquire(db);
        if (!e) throw new Error(`read: no database ${db}`);
        // Snapshots the older check has not passed yet wait for it (damage found is never served).
        if (e.olderCheck && e.checkedFrom > FILE_HEADER_SIZE && self.startOf(e, after) < e.checkedFrom) {
          const check = e.olderCheck;
          self.release(e);
          const bad = await check;
          if (bad && bad.txid > after) {
            throw new Error(`read: the hub's copy of ${db} is damaged at snapshot ${bad.txid}`);
          }
          e = await self.acquire(db);
          if (!e) throw new Error(`read: no database ${db}`);
        }
        try {
          const head = e.head.txid;
          if (after < e.base.txid) {
            throw new BeforeBaseError(
              `read: ${db} holds snapshots after ${e.base.txid} only (the rest is compacted), not after ${after}`,
            );
          }
          if (upTo > head || after > upTo) {
            throw new Error(`read: ${after}..${upTo} is outside ${e.base.txid}..${head} of ${db}`);
          }
          // The range is fixed now, on this entry's file: a compaction meanwhile does not change it.
          const at = (txid: bigint): number =>
            txid > head ? e.end : e.offsets.at(Number(txid - e.base.txid - 1n));
          const start = at(after + 1n);
          const end = at(upTo + 1n);
          for (let p = start; p < end; ) {
            const n = Math.min(READ_CHUNK, end - p);
            const buf = new Uint8Array(n);
            const { bytesRead } = await e.reader.read(buf, 0, n, p);
            if (bytesRead !== n) throw new Error(`read: journal of ${db} is shorter than its index`);
            p += n;
            yield buf;
          }
        } finally {
          self.release(e);
        }
      },
    };
  }

  async snapshotAt(db: string, txid: bigint): Promise<SnapshotHeader | undefined> {
    this.check();
    const e = await this.acquire(db);
    if (!e) return undefined;
    try {
      if (txid <= e.base.txid || txid > e.head.txid) return undefined;
      const buf = new Uint8Array(SNAPSHOT_HEADER_SIZE);
      await e.reader.read(buf, 0, SNAPSHOT_HEADER_SIZE, e.offsets.at(Number(txid - e.base.txid - 1n)));
      const h = decodeSnapshotHeader(buf);
      if (h === undefined || typeof h === 'string') throw new Error(`snapshot ${txid} of ${db} is damaged`);
      return h;
    } finally {
      this.release(e);
    }
  }

  async copyHead(db: string, out: string, check = false): Promise<SnapshotHeader | undefined> {
    this.check();
    return this.lock(db).run(async () => {
      for (let attempt = 0; ; attempt++) {
        const e = await this.entry(db);
        if (!e) return undefined;
        try {
          const pos = await this.heads.copy(db, this.stateOf(e), out, check);
          return await this.snapshotAt(db, pos.txid);
        } catch (err) {
          if (!(err instanceof StoredCopyDamagedError) || attempt > 0) throw err;
          await this.cutAt(db, e, err);
        }
      }
    });
  }

  async historyFiles(db: string): Promise<{ journal: string; history: string } | undefined> {
    this.check();
    const p = this.paths(db);
    return fs.existsSync(p.journal) ? { journal: p.journal, history: p.history } : undefined;
  }

  async history(db: string): Promise<AsyncIterable<Uint8Array> | undefined> {
    this.check();
    try {
      // Opened before answering: a compaction that replaces the file meanwhile leaves this one whole.
      const fd = await fs.promises.open(this.paths(db).history, 'r');
      return fd.createReadStream();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  private paths(db: string): CompactJob['paths'] {
    const dir = this.dir(db);
    return {
      journal: path.join(dir, 'journal'),
      history: path.join(dir, 'history'),
      scratch: path.join(dir, 'compact.scratch'),
    };
  }

  /** Starts a compaction of `db` in the background when its journal is due (called in its append order). */
  private maybeCompact(db: string, e: Entry): void {
    // The journal keeps its last snapshot: more than one after the base.
    if (!this.compactions.due(db, e.head.txid - e.base.txid, e.end, e.dbBytes)) return;
    this.compact(db).catch(() => undefined); // told to onCompaction and the watchers
  }

  watchCompactions(listener: NonNullable<HubCompaction['onCompaction']>): void {
    this.compactions.watch(listener);
  }

  /**
   * Compacts `db` now (unless one is running: then waits for it): moves every snapshot of its journal
   * but the last into the compacted history under the retention policy. Resolves with what it did, or
   * undefined when there was nothing to move. The heavy part runs in a worker thread while appends go on;
   * only the swap (renaming the history in place, rewriting the journal's short tail) waits for them.
   */
  compact(db: string): Promise<CompactOutcome | undefined> {
    this.check();
    return this.compactions.start(db, () => this.runCompaction(db));
  }

  private async runCompaction(db: string): Promise<CompactOutcome | undefined> {
    const c = this.compactions.settings ?? compactionSettings({});
    const e = await this.lock(db).run(() => this.entry(db));
    if (!e || e.head.txid - e.base.txid < 2n) return undefined;
    const paths = this.paths(db);
    const job: CompactJob = {
      paths,
      policy: c.retain,
      now: Date.now(),
      upTo: e.head.txid - 1n,
      checkpointRatio: c.checkpointRatio,
    };
    const url = new URL('./compact-worker.js', import.meta.url);
    const outcome = await runJob<CompactOutcome>(url, job, 'compaction', this.stopping.signal);
    const end = outcome.end;
    if (end) {
      await this.lock(db).run(async () => {
        this.check();
        const swapStart = performance.now();
        const cur = this.entries.get(db);
        this.forget(db);
        if (cur) {
          cur.writer.close();
          this.retire(cur);
        }
        outcome.bytesAfter = installHistory(nodeFs, paths, end);
        await this.entry(db); // the rebased journal, indexed afresh
        outcome.swapMs = performance.now() - swapStart;
      });
    }
    return outcome;
  }

  async getLease(db: string): Promise<StoredLease | undefined> {
    this.check();
    return this.leases.get(db, this.dir(db));
  }

  async casLease(db: string, expected: StoredLease | undefined, next: StoredLease): Promise<boolean> {
    this.check();
    const dir = this.dir(db);
    return this.lock(db).run(() => this.leases.compareAndSet(db, dir, expected, next));
  }

  subscribe(db: string, listener: AppendListener): () => void {
    let set = this.listeners.get(db);
    if (!set) {
      set = new Set();
      this.listeners.set(db, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0 && this.listeners.get(db) === set) this.listeners.delete(db);
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.stopping.abort(); // a compaction in its worker is abandoned (it wrote only temporary files)
    await this.compactions.settle();
    await Promise.all([...this.locks.values()].map((m) => m.idle()));
    this.closed = true;
    this.use.stop();
    this.heads.close();
    for (const e of this.entries.values()) {
      e.writer.close();
      this.retire(e);
    }
    this.entries.clear();
    this.listeners.clear();
    this.dirLock.release();
  }
}

/** Closes what reads of `e` use (after the last read of a retired entry). */
function closeReads(e: Entry): void {
  e.offsets.close();
  void e.reader.close().catch(() => undefined);
}

/** The file header of the journal `file` of `db`; a damaged one is a StoredCopyDamagedError. */
function readHeader(db: string, file: string): JournalReader['header'] {
  const f = nodeFs.open(file, { readonly: true });
  try {
    return new JournalReader(fileSource(f)).header;
  } catch (e) {
    throw new StoredCopyDamagedError(db, 0n, `its journal's file header: ${(e as Error).message}`, {
      cause: e,
    });
  } finally {
    f.close();
  }
}

/**
 * The snapshot the last entry of `offsets` names, when the journal `file` holds it there (its header
 * decodes, with the entry's txid); entries that do not are dropped (an append cut back, a lost write).
 */
function lastIndexed(file: string, offsets: OffsetIndex, baseTxid: bigint): KnownPoint | undefined {
  const f = nodeFs.open(file, { readonly: true });
  try {
    const size = f.size();
    for (let tries = 0; offsets.count > 0; tries++) {
      if (tries === 16) {
        offsets.cut(0);
        break;
      }
      const offset = offsets.at(offsets.count - 1);
      if (offset >= FILE_HEADER_SIZE && offset + SNAPSHOT_HEADER_SIZE <= size) {
        const buf = new Uint8Array(SNAPSHOT_HEADER_SIZE);
        f.read(buf, offset);
        const h = decodeSnapshotHeader(buf);
        if (typeof h === 'object' && h.txid === baseTxid + BigInt(offsets.count)) {
          return { offset, txid: h.txid, checksum: h.postChecksum };
        }
      }
      offsets.cut(offsets.count - 1);
    }
    return undefined;
  } finally {
    f.close();
  }
}
