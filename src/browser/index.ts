/**
 * Mycelite in the browser (package export `mycelite/browser`): a database in the Origin Private File
 * System, captured, journaled and synced exactly as in Node, run in a dedicated Worker.
 *
 * Tabs: per database and role, exactly one tab — the holder of a Web Lock — runs the worker and so
 * holds the OPFS files; every other tab sends its queries and statements to that tab's worker over a
 * BroadcastChannel and hears its change events. When the holder closes, the lock passes to a waiting
 * tab, which opens the same files (and takes over the hub lease: the lease holder id is kept with the
 * database).
 *
 * Shared databases (`shared: true`): every device (browser profile, Node process) writes, also offline;
 * the hub orders their changes, and each device takes the others' in. A local change that met another
 * device's is reported (`on('conflict')`), one that could not be applied at all too (`on('rejected')`).
 * Key rows with random ids (`crypto.randomUUID()`), not INTEGER PRIMARY KEY: two devices offline would
 * mint the same integers.
 *
 * @example
 * ```ts
 * import { connect } from 'mycelite/browser';
 * const db = await connect({ name: 'budget', shared: true }); // works offline, no token needed
 * await db.exec('create table if not exists entry(id text primary key, label text, cents integer)');
 * await db.run('insert into entry values (?, ?, ?)', [crypto.randomUUID(), 'rent', -120000]);
 * db.on('change', async () => render(await db.query('select * from entry')));
 * db.on('conflict', (c) => console.log('kept', c.choice, 'for', c.conflict.table, c.conflict.key));
 * await db.setHub({ url: location.origin, db: 'budget', token }); // sync from now on
 * ```
 */
import { Emitter } from '../client/emitter.js';
import {
  type BenchResult,
  type BrowserStatus,
  type ConflictEvent,
  channelName,
  type EngineMessage,
  type HubTarget,
  type Message,
  type Op,
  type RejectedEvent,
  type Role,
  type Row,
  type RunResult,
  type Sha256Result,
  type SyncReport,
  type TimeTravelResult,
  type Timings,
} from './messages.js';

export type {
  BenchResult,
  BrowserStatus,
  Conflict,
  ConflictChoice,
  ConflictEvent,
  ConflictKind,
  HubTarget,
  RejectedEvent,
  Role,
  Row,
  RunResult,
  Sha256Result,
  SyncReport,
  TimeTravelResult,
  Timings,
} from './messages.js';

/** A value to bind to a `?` parameter. */
export type Param = string | number | bigint | Uint8Array | null;

export interface ConnectOptions {
  /** The database's name: its OPFS directory (mycelite/NAME.ROLE) and file. */
  name: string;
  /** writer (default): commits locally and pushes to the hub. replica: follows the hub, read-only. */
  role?: Role;
  /**
   * The hub to sync with. Omit it to open local only (no network, no token): a writer commits, a replica
   * shows what it holds; `setHub()` starts syncing later.
   */
  hub?: HubTarget;
  /**
   * A writer of a database every device writes (docs/ARCHITECTURE.md, "Shared databases: devices, rebase, sync"): commits stay
   * local until the hub's history holds them, others' changes come in, conflicts are reported. A
   * database once shared stays shared.
   */
  shared?: boolean;
  /** URL of mycelite-worker.js (default: beside this module). */
  workerUrl?: string | URL;
  /** How long a request sent to another tab may take (ms, default 10 s). */
  requestTimeoutMs?: number;
}

export interface BrowserEvents {
  [event: string]: unknown;
  /** The data changed (a local commit, an applied snapshot, or another tab's commit). */
  change: BrowserStatus;
  /** The sync status changed. */
  status: BrowserStatus;
  /** This tab became (or stopped being) the one that holds the database. */
  tab: { leader: boolean };
  /** Shared: a local change met another device's when applied again on the hub's newer state. */
  conflict: ConflictEvent;
  /** Shared: a local change was rejected as a whole (nothing of it stays). */
  rejected: RejectedEvent;
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

const tabId = Math.random().toString(36).slice(2);
let seq = 0;
const now = (): number => performance.timeOrigin + performance.now();

/**
 * sqlite3.wasm compiled (streaming, as it downloads), or why not (no compileStreaming, a network error,
 * a server that does not send it as application/wasm, a worker URL nothing is relative to): the worker
 * then fetches and compiles it itself.
 */
async function compileEngine(workerUrl: string | URL): Promise<EngineMessage> {
  try {
    const url = new URL('sqlite3.wasm', new URL(workerUrl, location.href));
    return { kind: 'engine', module: await WebAssembly.compileStreaming(fetch(url)) };
  } catch (e) {
    return { kind: 'engine', error: String(e) };
  }
}

/** A database held by this tab's worker, or by another tab's (requests go there). */
export class BrowserDatabase {
  private readonly events = new Emitter<BrowserEvents>();
  private readonly pending = new Map<string, Pending>();
  private readonly channel: BroadcastChannel;
  private worker: Worker | undefined;
  private releaseLock: (() => void) | undefined;
  private last: BrowserStatus | undefined;
  private closed = false;
  /** When connect() began and reached each of its steps in this page (see timings()). */
  private readonly pageTimings: Timings = { connect: now() };
  /** True when this tab holds the database (its worker has the OPFS files). */
  leader = false;

  private constructor(private readonly options: ConnectOptions & { role: Role }) {
    this.channel = new BroadcastChannel(channelName(options.name, options.role));
    this.channel.onmessage = (e: MessageEvent<Message>) => this.receive(e.data, 'channel');
  }

  /** Opens the database in this tab, or connects to the tab that has it. */
  static async connect(options: ConnectOptions): Promise<BrowserDatabase> {
    const db = new BrowserDatabase({ ...options, role: options.role ?? 'writer' });
    await db.start();
    return db;
  }

  private start(): Promise<void> {
    const locks = (navigator as Navigator & { locks?: LockManager }).locks;
    if (!locks) throw new Error('this browser has no Web Locks (navigator.locks): use a current browser');
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const done = (e?: Error): void => {
        if (settled) return;
        settled = true;
        if (e) reject(e);
        else resolve();
      };
      const name = channelName(this.options.name, this.options.role);
      locks
        .request(name, async () => {
          if (this.closed) return;
          this.pageTimings.lockGranted = now();
          try {
            await this.becomeLeader();
          } catch (e) {
            // Failing to take over from a closed tab (after connect resolved) is reported as a status.
            const takeover = settled;
            done(e as Error);
            if (takeover && this.last) {
              this.events.emit('status', { ...this.last, lastError: (e as Error).message });
            }
            return;
          }
          done();
          await new Promise<void>((r) => {
            this.releaseLock = r;
          });
        })
        .catch((e: unknown) => done(e as Error));
      // Meanwhile, another tab may hold it: ask it.
      const ask = async (): Promise<void> => {
        while (!settled && !this.leader && !this.closed) {
          try {
            this.last = (await this.send('status', undefined, 500)) as BrowserStatus;
            done();
            return;
          } catch {
            // nobody answered (yet)
          }
        }
      };
      void ask();
    });
  }

  private async becomeLeader(): Promise<void> {
    const url = this.options.workerUrl ?? new URL('./mycelite-worker.js', import.meta.url);
    const worker = new Worker(url, { type: 'module', name: `mycelite ${this.options.name}` });
    this.pageTimings.workerStarted = now();
    // The page compiles sqlite3.wasm (beside the worker's script, where the worker would fetch it) while
    // the worker's script loads, and hands the module over: the worker needs it right after.
    void compileEngine(url).then((m) => {
      if (m.module) this.pageTimings.wasmCompiled = now();
      worker.postMessage(m);
    });
    worker.onmessage = (e: MessageEvent<Message>) => this.receive(e.data, 'worker');
    worker.onerror = (e) => {
      for (const p of this.pending.values()) p.reject(new Error(`the database worker failed: ${e.message}`));
    };
    this.worker = worker;
    this.leader = true;
    try {
      const { name, role, hub, shared } = this.options;
      this.last = (await this.send('open', { name, role, hub, shared, wasmFromPage: true })) as BrowserStatus;
      this.pageTimings.openAnswered = now();
    } catch (e) {
      this.leader = false;
      this.worker = undefined;
      worker.terminate();
      throw e;
    }
    this.events.emit('tab', { leader: true });
    addEventListener('pagehide', () => {
      // Best effort: let the worker release the hub lease and close its files before the tab goes.
      this.worker?.postMessage({ kind: 'req', id: 'pagehide', op: 'close' } satisfies Message);
    });
  }

  /** A message from this tab's worker, or from another tab over the BroadcastChannel. */
  private receive(m: Message, from: 'worker' | 'channel'): void {
    if (m.kind === 'res') {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      clearTimeout(p.timer);
      if (m.ok) p.resolve(m.value);
      else p.reject(new Error(m.error));
      return;
    }
    if (m.kind !== 'event' || (this.leader && from !== 'worker')) return;
    this.last = m.status;
    if (m.event === 'conflict') this.events.emit('conflict', m.detail);
    else if (m.event === 'rejected') this.events.emit('rejected', m.detail);
    else this.events.emit(m.event === 'leader' ? 'change' : m.event, m.status);
  }

  private send(op: Op, args?: unknown, timeoutMs?: number): Promise<unknown> {
    if (this.closed) return Promise.reject(new Error(`${this.options.name} is closed`));
    const id = `${tabId}-${seq++}`;
    return new Promise((resolve, reject) => {
      const wait = timeoutMs ?? (this.leader ? undefined : (this.options.requestTimeoutMs ?? 10_000));
      const timer =
        wait === undefined
          ? undefined
          : setTimeout(() => {
              this.pending.delete(id);
              reject(new Error(`no tab holding ${this.options.name} answered within ${wait} ms`));
            }, wait);
      this.pending.set(id, { resolve, reject, timer });
      const m: Message = { kind: 'req', id, op, args };
      if (this.leader) this.worker!.postMessage(m);
      else this.channel.postMessage(m);
    });
  }

  on<K extends keyof BrowserEvents & string>(event: K, fn: (arg: BrowserEvents[K]) => void): () => void {
    return this.events.on(event, fn);
  }

  /** The status as last heard (`refreshStatus()` asks). */
  status(): BrowserStatus {
    if (!this.last) throw new Error(`${this.options.name} is not open yet`);
    return this.last;
  }

  async refreshStatus(): Promise<BrowserStatus> {
    this.last = (await this.send('status')) as BrowserStatus;
    return this.last;
  }

  /**
   * Syncs with `hub` from now on: a database opened without one (offline, or before a token was at hand)
   * starts syncing; a new token replaces one that stopped working. Kept for this tab, so that it syncs
   * with it too if it comes to hold the database.
   */
  async setHub(hub: HubTarget): Promise<BrowserStatus> {
    this.options.hub = hub;
    this.last = (await this.send('hub', hub)) as BrowserStatus;
    return this.last;
  }

  /** The last conflicts and rejections of a shared database (oldest first), as the holding tab kept them. */
  syncReports(): Promise<SyncReport[]> {
    return this.send('reports') as Promise<SyncReport[]>;
  }

  query(sql: string, params: Param[] = []): Promise<Row[]> {
    return this.send('query', { sql, params }) as Promise<Row[]>;
  }

  /** Runs one statement (one transaction unless inside BEGIN ... COMMIT); writer only. */
  run(sql: string, params: Param[] = []): Promise<RunResult> {
    return this.send('run', { sql, params }) as Promise<RunResult>;
  }

  /** Runs a script of statements; writer only. */
  exec(sql: string): Promise<RunResult> {
    return this.send('exec', { sql }) as Promise<RunResult>;
  }

  /** Runs `sql` on the database as it was after snapshot `txid` (time travel, from the local journal). */
  at(txid: bigint, sql: string, params: Param[] = []): Promise<TimeTravelResult> {
    return this.send('at', { txid, sql, params }) as Promise<TimeTravelResult>;
  }

  /** sha256 of the OPFS database file, with the txid it holds. */
  sha256(): Promise<Sha256Result> {
    return this.send('sha256') as Promise<Sha256Result>;
  }

  /** Commits `n` one-row transactions in the worker and measures the rate. */
  bench(n: number): Promise<BenchResult> {
    return this.send('bench', { n }, 600_000) as Promise<BenchResult>;
  }

  /**
   * Diagnostics: when connect() reached each step of opening the database, in ms since connect() was
   * called, in this page (`lockGranted`, `workerStarted`, `wasmCompiled`, `openAnswered`) and, when this
   * tab holds the database, in its worker (`workerCreated`, `workerScript`: its script ran,
   * `openReceived`, `poolOpened`, `engineLoaded`, `open: STEP` for each of openWith()'s named steps,
   * `databaseOpened`, `opened`).
   */
  async timings(): Promise<Timings> {
    const worker = this.leader ? ((await this.send('timings')) as Timings) : {};
    const all = { ...worker, ...this.pageTimings };
    const start = this.pageTimings.connect!;
    const out: Timings = {};
    for (const [k, v] of Object.entries(all).sort((a, b) => a[1] - b[1]))
      out[k] = Math.round((v - start) * 10) / 10;
    return out;
  }

  /** Closes the database (the leader's worker releases the hub lease and its files) and leaves the tab group. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.leader) await this.send('close').catch(() => {});
    this.closed = true;
    this.worker?.terminate();
    this.worker = undefined;
    this.leader = false;
    this.channel.close();
    this.releaseLock?.();
    for (const p of this.pending.values()) p.reject(new Error(`${this.options.name} was closed`));
    this.pending.clear();
  }
}

/** Opens the database in this tab or joins the tab that holds it (see BrowserDatabase). */
export function connect(options: ConnectOptions): Promise<BrowserDatabase> {
  return BrowserDatabase.connect(options);
}
