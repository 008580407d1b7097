/**
 * The database a worker holds: a writer (openWith over the OPFS pool, pushing to the hub) or a replica
 * (ReplicaStore + Follower over the OPFS pool, following the hub), plus what the demo asks of it:
 * queries, statements, time travel (a replay of the OPFS journal into memory), sha256 of the file and a
 * commit benchmark.
 */
import { type MyceliteDatabase, openWith } from '../api/open.js';
import { journalPaths } from '../api/paths.js';
import { Database } from '../engine/database.js';
import type { BindValue } from '../engine/sqlite.js';
import { loadSqlite, type Sqlite3 } from '../engine/sqlite.js';
import { decodeFileHeader, FILE_HEADER_SIZE } from '../format/index.js';
import { openHistory } from '../history/source.js';
import { Follower } from '../replica/follower.js';
import { ReplicaStore } from '../replica/replica.js';
import { replay } from '../restore/replay.js';
import { readAt } from '../storage/file-system.js';
import type {
  BenchResult,
  BrowserStatus,
  OpenArgs,
  Row,
  RunResult,
  Sha256Result,
  TimeTravelResult,
} from './messages.js';
import { OpfsPoolFileSystem } from './opfs-pool.js';
import { browserRuntime } from './runtime.js';

const TRAVEL_PATH = '/tmp/time-travel.db';

/** Called when the data changed (`change`) or only the sync status did (`status`). */
export type Notify = (event: 'change' | 'status') => void;

export class WorkerDatabase {
  private travel: { txid: bigint; timestamp: number; db: Database } | undefined;
  /** Writer: commit times of snapshots the hub does not hold yet. */
  private unpushed: { txid: bigint; at: number }[] = [];
  private replicaLagMs = 0;
  private reader: Database | undefined;

  private constructor(
    readonly args: OpenArgs,
    private readonly pool: OpfsPoolFileSystem,
    private readonly rt: ReturnType<typeof browserRuntime>,
    private readonly sqlite3: Sqlite3,
    readonly dbPath: string,
    private writer: MyceliteDatabase | undefined,
    private follower: Follower | undefined,
    private store: ReplicaStore | undefined,
  ) {}

  static async open(args: OpenArgs, notify: Notify): Promise<WorkerDatabase> {
    const pool = await OpfsPoolFileSystem.open(['mycelite', `${args.name}.${args.role}`]);
    const rt = browserRuntime(pool);
    const dbPath = `/${args.name}.db`;
    try {
      const sqlite3 = await loadSqlite();
      if (args.role === 'writer') {
        let self: WorkerDatabase | undefined;
        const hub = args.hub ? { ...args.hub, holder: holderId(pool) } : undefined;
        const writer = await openWith(rt, dbPath, {
          hub,
          onSnapshot: (s) => {
            self?.unpushed.push({ txid: s.txid, at: Date.now() });
            notify('change');
          },
        });
        self = new WorkerDatabase(args, pool, rt, sqlite3, dbPath, writer, undefined, undefined);
        const me = self;
        writer.sync?.on('status', () => notify('status'));
        writer.sync?.on('pushed', ({ hubTxid }) => {
          me.unpushed = me.unpushed.filter((u) => u.txid > hubTxid);
          notify('status');
        });
        return self;
      }
      if (!args.hub) throw new Error('a replica needs a hub ({url, db, token})');
      const store = await ReplicaStore.open(rt, dbPath);
      const follower = new Follower(store, { hub: args.hub });
      const self = new WorkerDatabase(args, pool, rt, sqlite3, dbPath, undefined, follower, store);
      self.reader = Database.open(sqlite3, dbPath, { readonly: true, vfs: 'mycelite' });
      store.onReplaced = () => {
        self.reader?.close();
        self.reader = Database.open(sqlite3, dbPath, { readonly: true, vfs: 'mycelite' });
      };
      follower.events.on('snapshot', (s) => {
        self.replicaLagMs = s.lagMs;
        notify('change');
      });
      follower.events.on('status', () => notify('status'));
      follower.events.on('reset', () => notify('change'));
      follower.start();
      return self;
    } catch (e) {
      pool.close();
      throw e;
    }
  }

  private get db(): Database {
    const db = this.writer ?? this.reader;
    if (!db) throw new Error(`${this.args.name} is closed`);
    return db;
  }

  status(): BrowserStatus {
    const base = { name: this.args.name, role: this.args.role, firstTxid: this.firstTxid() };
    if (this.writer) {
      const txid = this.writer.position().txid;
      const s = this.writer.sync?.status();
      const hubTxid = s?.hubTxid;
      const oldest = this.unpushed[0];
      return {
        ...base,
        state: s?.state ?? 'local',
        online: s ? s.state !== 'offline' && s.state !== 'error' && s.state !== 'connecting' : false,
        txid,
        hubTxid,
        pending: hubTxid === undefined ? Number(txid) : Math.max(0, Number(txid - hubTxid)),
        lagMs: oldest && s ? Date.now() - oldest.at : 0,
        lastError: s?.lastError,
      };
    }
    const s = this.follower!.status();
    return {
      ...base,
      state: s.state,
      online: s.state === 'live' || s.state === 'catching-up',
      txid: s.txid,
      hubTxid: s.hubTxid,
      pending: s.hubTxid === undefined ? 0 : Math.max(0, Number(s.hubTxid - s.txid)),
      lagMs: this.replicaLagMs,
      lastError: s.lastError,
    };
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
      throw new Error(`${this.args.name} is a read-only replica here: write in the writer's browser`);
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
      this.travel?.db.close();
      this.travel = undefined;
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
      const db = Database.open(this.sqlite3, TRAVEL_PATH, { readonly: true, vfs: 'mycelite' });
      this.travel = { txid, timestamp, db };
    }
    const rows = this.travel.db.prepare(sql).all(...params) as Row[];
    return { rows, txid, timestamp: this.travel.timestamp };
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

  /** Commits `n` one-row transactions (table `bench`): the worker's commit rate. */
  bench(n: number): BenchResult {
    const w = this.writable();
    w.exec('create table if not exists bench(id integer primary key, at real, note text)');
    const insert = w.prepare('insert into bench(at, note) values (?, ?)');
    const t0 = performance.now();
    for (let i = 0; i < n; i++) insert.run(Date.now(), `commit ${i}`);
    const ms = performance.now() - t0;
    return { commits: n, ms, perSecond: (n * 1000) / ms };
  }

  async close(): Promise<void> {
    this.travel?.db.close();
    this.travel = undefined;
    if (this.writer) {
      const sync = this.writer.sync;
      this.writer.close();
      this.writer = undefined;
      await sync?.close().catch(() => {});
    }
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
