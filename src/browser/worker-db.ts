/**
 * The database a worker holds: a writer (openWith over the OPFS pool; with `shared`, one device of a
 * database every device writes) or a replica (ReplicaStore + Follower over the OPFS pool, following the
 * hub), plus what the demo asks of it: queries, statements, time travel (a replay of the OPFS journal into
 * memory), sha256 of the file and a commit benchmark. Either opens without a hub (local only) and starts
 * syncing when one is set (`setHub`).
 */

import { describeHubUrls } from '../client/hub-urls.js';
import { Database } from '../engine/database.js';
import type { BindValue } from '../engine/sqlite.js';
import { loadSqlite, type Sqlite3 } from '../engine/sqlite.js';
import { readAt } from '../files/file-system.js';
import { decodeFileHeader, FILE_HEADER_SIZE } from '../format/index.js';
import { openHistory } from '../history/source.js';
import { journalPaths } from '../journal/paths.js';
import { Follower } from '../replica/follower.js';
import { dropPageCache, ReplicaStore } from '../replica/replica.js';
import { replay } from '../restore/replay.js';
import { PendingQueue } from '../shared/pending.js';
import { MYCELITE_VFS } from '../vfs/vfs.js';
import { type MyceliteDatabase, openWith } from '../writer/open.js';
import type {
  BenchResult,
  BrowserStatus,
  HubTarget,
  OpenArgs,
  Row,
  RunResult,
  Sha256Result,
  SyncReport,
  TimeTravelResult,
} from './messages.js';
import { OpfsPoolFileSystem } from './opfs-pool.js';
import { browserRuntime } from './runtime.js';

const TRAVEL_PATH = '/tmp/time-travel.db';
/** Conflicts and rejections kept for tabs that open later. */
const KEEP_REPORTS = 50;

/** What the worker hears from its database. */
export interface WorkerHooks {
  /** The data changed (`change`) or only the sync status did (`status`). */
  notify(event: 'change' | 'status'): void;
  /** A local change of a shared database met a conflict or was rejected. */
  report(r: SyncReport): void;
  /** Notes when a step of opening was done (Timings). */
  mark?(step: string): void;
}

/** States in which sync is not working: only then is its last error shown. */
const TROUBLED = new Set(['offline', 'storage-unavailable', 'error', 'connecting']);

export class WorkerDatabase {
  private travel: { txid: bigint; timestamp: number; db: Database } | undefined;
  private writer: MyceliteDatabase | undefined;
  private writerOffs: (() => void)[] = [];
  private shared = false;
  /** Writer (not shared): commit times of snapshots the hub does not hold yet. */
  private unpushed: { txid: bigint; at: number }[] = [];
  /** Shared: since when local changes are pending. */
  private pendingSince: number | undefined;
  /** Shared without a hub: pending changes as last counted (undefined: count again). */
  private localPending: number | undefined;
  private follower: Follower | undefined;
  private store: ReplicaStore | undefined;
  private reader: Database | undefined;
  private replicaLagMs = 0;
  private replicaLive = false;
  private readonly kept: SyncReport[] = [];

  private constructor(
    public args: OpenArgs,
    private readonly pool: OpfsPoolFileSystem,
    private readonly rt: ReturnType<typeof browserRuntime>,
    private readonly sqlite3: Sqlite3,
    readonly dbPath: string,
    private readonly hooks: WorkerHooks,
  ) {}

  /** `wasm`: sqlite3.wasm compiled by the page (see loadSqlite). */
  static async open(
    args: OpenArgs,
    hooks: WorkerHooks,
    wasm?: Promise<WebAssembly.Module>,
  ): Promise<WorkerDatabase> {
    // The engine loads (instantiate and sqlite-wasm's set-up; fetch and compile too when the page did not)
    // while the pool's files open: neither needs the other.
    const engine = loadSqlite(wasm).then((e) => {
      hooks.mark?.('engineLoaded');
      return e;
    });
    engine.catch(() => {}); // awaited below; a failure to open the pool comes first
    const pool = await OpfsPoolFileSystem.open(['mycelite', `${args.name}.${args.role}`]);
    hooks.mark?.('poolOpened');
    try {
      const sqlite3 = await engine;
      const self = new WorkerDatabase(args, pool, browserRuntime(pool), sqlite3, `/${args.name}.db`, hooks);
      if (args.role === 'writer') await self.openWriter();
      else await self.openReplica();
      hooks.mark?.('databaseOpened');
      return self;
    } catch (e) {
      pool.close();
      throw e;
    }
  }

  private async openWriter(): Promise<void> {
    const { hub } = this.args;
    this.unpushed = [];
    this.localPending = undefined;
    const writer = await openWith(this.rt, this.dbPath, {
      hub: hub ? { ...hub, holder: holderId(this.pool) } : undefined,
      shared: this.args.shared || undefined,
      onSnapshot: (s) => {
        if (!this.shared) this.unpushed.push({ txid: s.txid, at: Date.now() });
        this.localPending = undefined;
        this.hooks.notify('change');
      },
    });
    // A database that was shared once stays shared (open() keeps it so).
    this.shared = this.rt.fs.exists(journalPaths(this.dbPath).shared);
    this.writer = writer;
    const sync = writer.sync;
    if (!sync) return;
    this.writerOffs = [
      sync.on('status', () => this.hooks.notify('status')),
      sync.on('pushed', ({ hubTxid }) => {
        this.unpushed = this.unpushed.filter((u) => u.txid > hubTxid);
        this.hooks.notify('status');
      }),
      sync.on('received', () => {
        // A rebase renumbers the local snapshots after the base: a time-travel copy may be of another state.
        this.dropTravel();
        this.hooks.notify('change');
      }),
      sync.on('conflict', (detail) => this.keep({ event: 'conflict', at: Date.now(), detail })),
      sync.on('rejected', (detail) => this.keep({ event: 'rejected', at: Date.now(), detail })),
    ];
  }

  private async closeWriter(): Promise<void> {
    const w = this.writer;
    if (!w) return;
    this.writer = undefined;
    for (const off of this.writerOffs.splice(0)) off();
    // Sync first: its loop must not touch the files once they are closed.
    await w.sync?.close().catch(() => {});
    w.close();
  }

  private async openReplica(): Promise<void> {
    this.store = await ReplicaStore.open(this.rt, this.dbPath);
    this.reader = Database.open(this.sqlite3, this.dbPath, { readonly: true, vfs: MYCELITE_VFS });
    this.store.onReplaced = () => {
      this.reader?.close();
      this.reader = Database.open(this.sqlite3, this.dbPath, { readonly: true, vfs: MYCELITE_VFS });
    };
    // Applied pages are read from the file, not from the reader's cache (ReplicaStore.onApplied).
    this.store.onApplied = () => {
      if (this.reader) dropPageCache(this.reader);
    };
    if (this.args.hub) this.follow(this.args.hub);
  }

  private follow(hub: HubTarget): void {
    const follower = new Follower(this.store!, { hub });
    this.follower = follower;
    this.replicaLive = false;
    follower.events.on('snapshot', (s) => {
      // Only a snapshot that came over the live stream says how late replication is.
      if (this.replicaLive) this.replicaLagMs = s.lagMs;
      this.hooks.notify('change');
    });
    follower.events.on('status', (s) => {
      const live = s.state === 'live';
      if (live && !this.replicaLive) this.replicaLagMs = 0; // caught up: nothing is late now
      this.replicaLive = live;
      this.hooks.notify('status');
    });
    follower.events.on('reset', () => this.hooks.notify('change'));
    follower.start();
  }

  /**
   * Syncs with `hub` from now on (the database opened without one, or with another token). A writer is
   * closed and opened again with it: between requests, so no transaction is cut.
   */
  async setHub(hub: HubTarget): Promise<void> {
    const now = this.args.hub;
    const state = this.status().state;
    if (
      now &&
      describeHubUrls(now.url) === describeHubUrls(hub.url) &&
      now.db === hub.db &&
      state !== 'error'
    )
      return;
    if (this.args.role === 'replica') {
      await this.follower?.close();
      this.args = { ...this.args, hub };
      this.follow(hub);
      return;
    }
    this.dropTravel();
    await this.closeWriter();
    try {
      this.args = { ...this.args, hub };
      await this.openWriter();
    } catch (e) {
      // Keep the database usable locally: open it again as it was.
      this.args = { ...this.args, hub: now };
      await this.openWriter();
      throw e;
    }
  }

  private keep(r: SyncReport): void {
    this.kept.push(r);
    if (this.kept.length > KEEP_REPORTS) this.kept.shift();
    this.hooks.report(r);
  }

  /** The last conflicts and rejections (oldest first). */
  reports(): SyncReport[] {
    return [...this.kept];
  }

  private get db(): Database {
    const db = this.writer ?? this.reader;
    if (!db) throw new Error(`${this.args.name} is closed`);
    return db;
  }

  status(): BrowserStatus {
    const base = {
      name: this.args.name,
      role: this.args.role,
      shared: this.shared,
      firstTxid: this.firstTxid(),
    };
    const shown = (state: string, error: string | undefined): { lastError?: string } =>
      error !== undefined && TROUBLED.has(state) ? { lastError: error } : {};
    if (this.writer) {
      const txid = this.writer.position().txid;
      const s = this.writer.sync?.status();
      const hubTxid = s?.hubTxid;
      const state = s?.state ?? 'local';
      let pending: number;
      let lagMs: number;
      if (this.shared) {
        pending = s?.pending ?? this.countLocalPending();
        if (pending === 0) this.pendingSince = undefined;
        else this.pendingSince ??= Date.now();
        lagMs = this.pendingSince === undefined ? 0 : Date.now() - this.pendingSince;
      } else {
        const oldest = this.unpushed[0];
        pending = hubTxid === undefined ? Number(txid) : Math.max(0, Number(txid - hubTxid));
        lagMs = oldest && s ? Date.now() - oldest.at : 0;
      }
      return {
        ...base,
        state,
        online: s ? !TROUBLED.has(state) : false,
        txid,
        hubTxid,
        pending,
        lagMs,
        ...shown(state, s?.lastError),
      };
    }
    if (!this.follower) {
      const txid = this.store?.position?.txid ?? 0n;
      return { ...base, state: 'local', online: false, txid, hubTxid: undefined, pending: 0, lagMs: 0 };
    }
    const s = this.follower.status();
    return {
      ...base,
      state: s.state,
      online: s.state === 'live' || s.state === 'catching-up',
      txid: s.txid,
      hubTxid: s.hubTxid,
      pending: s.hubTxid === undefined ? 0 : Math.max(0, Number(s.hubTxid - s.txid)),
      lagMs: this.replicaLagMs,
      ...shown(s.state, s.lastError),
    };
  }

  /** A shared database without a hub: its pending changes, read from its device state. */
  private countLocalPending(): number {
    if (this.localPending === undefined) {
      const q = PendingQueue.open(this.rt.fs, journalPaths(this.dbPath).shared, { txid: 0n, checksum: 0n });
      try {
        this.localPending = q.records.length;
      } finally {
        q.close();
      }
    }
    return this.localPending;
  }

  private firstTxid(): bigint {
    const path = journalPaths(this.dbPath).journal;
    if (this.rt.fs.fileSize(path) <= FILE_HEADER_SIZE) return 0n;
    const f = this.rt.fs.open(path, { readonly: true });
    try {
      return decodeFileHeader(readAt(f, 0, FILE_HEADER_SIZE)).baseTxid + 1n;
    } finally {
      f.close();
    }
  }

  query(sql: string, params: BindValue[] = []): Row[] {
    return this.db.prepare(sql).all(...params) as Row[];
  }

  private writable(): MyceliteDatabase {
    if (!this.writer) {
      throw new Error(
        `${this.args.name} is open as a read-only replica here (role 'replica'): write where it is open as a writer`,
      );
    }
    return this.writer;
  }

  run(sql: string, params: BindValue[] = []): RunResult {
    const w = this.writable();
    const r = w.prepare(sql).run(...params);
    return { changes: r.changes, lastInsertRowid: r.lastInsertRowid, txid: w.position().txid };
  }

  exec(sql: string): RunResult {
    const w = this.writable();
    w.exec(sql);
    return { changes: 0, lastInsertRowid: 0, txid: w.position().txid };
  }

  /** Runs `sql` on the database as it was after snapshot `txid` (rebuilt from the local journal). */
  at(txid: bigint, sql: string, params: BindValue[] = []): TimeTravelResult {
    if (this.travel?.txid !== txid) {
      this.dropTravel();
      const paths = journalPaths(this.dbPath);
      // The compacted history and the journal (docs/FORMAT.md, "History"); replay starts at a checkpoint.
      const journal = openHistory(this.rt.fs, paths, () => new Error(`${paths.journal} is missing`));
      const out = this.rt.fs.open(TRAVEL_PATH, { create: true });
      let timestamp: number;
      try {
        timestamp = replay(journal.source, out, { txid }).snapshot!.timestamp;
      } finally {
        journal.close();
        out.close();
      }
      const db = Database.open(this.sqlite3, TRAVEL_PATH, { readonly: true, vfs: MYCELITE_VFS });
      this.travel = { txid, timestamp, db };
    }
    const rows = this.travel.db.prepare(sql).all(...params) as Row[];
    return { rows, txid, timestamp: this.travel.timestamp };
  }

  private dropTravel(): void {
    this.travel?.db.close();
    this.travel = undefined;
  }

  /** sha256 of the database file as it is now, with the txid it holds. */
  async sha256(): Promise<Sha256Result> {
    const txid = this.status().txid;
    const f = this.rt.fs.open(this.dbPath, { readonly: true });
    let bytes: Uint8Array;
    try {
      bytes = readAt(f, 0, f.size());
    } finally {
      f.close();
    }
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>));
    const sha256 = Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
    return { sha256, txid, size: bytes.length };
  }

  /** Commits `n` one-row transactions (table `bench_commit`, random keys): the worker's commit rate. */
  bench(n: number): BenchResult {
    const w = this.writable();
    w.exec('create table if not exists bench_commit(id text primary key, at real, note text)');
    const insert = w.prepare('insert into bench_commit(id, at, note) values (?, ?, ?)');
    const t0 = performance.now();
    for (let i = 0; i < n; i++) insert.run(crypto.randomUUID(), Date.now(), `commit ${i}`);
    const ms = performance.now() - t0;
    return { commits: n, ms, perSecond: (n * 1000) / ms };
  }

  async close(): Promise<void> {
    this.dropTravel();
    await this.closeWriter();
    if (this.follower) {
      await this.follower.close();
      this.follower = undefined;
    }
    this.reader?.close();
    this.reader = undefined;
    this.store?.close();
    this.store = undefined;
    this.pool.close();
  }
}

/** The lease holder id of this OPFS database: one per database, kept in the pool, shared by its tabs. */
function holderId(pool: OpfsPoolFileSystem): string {
  const path = '/holder';
  const f = pool.open(path, { create: true });
  try {
    if (f.size() === 24) return new TextDecoder().decode(readAt(f, 0, 24));
    const b = crypto.getRandomValues(new Uint8Array(12));
    const id = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
    f.write(new TextEncoder().encode(id), 0);
    f.sync();
    return id;
  } finally {
    f.close();
  }
}
