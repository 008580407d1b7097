/**
 * Messages between a page, its database worker and the other tabs of the origin (BroadcastChannel).
 * Everything is structured-clone data (bigints included).
 */
import type { ConflictEvent } from '../client/writer-sync.js';

export type { Conflict, ConflictChoice, ConflictEvent, ConflictKind } from '../client/writer-sync.js';

/** A writer commits and pushes to the hub; a replica follows the hub, read-only. */
export type Role = 'writer' | 'replica';

export interface HubTarget {
  url: string;
  db: string;
  token: string;
}

/** What `open` needs: the database's name (its OPFS directory and file), role and hub. */
export interface OpenArgs {
  name: string;
  role: Role;
  /** No hub: a local-only database (a replica then shows what it holds until a hub is set). */
  hub?: HubTarget;
  /** A writer of a database that many devices write (docs/ARCHITECTURE.md, "Shared databases: devices, rebase, sync"). */
  shared?: boolean;
  /** The page compiles sqlite3.wasm and sends it (an EngineMessage): the worker does not fetch its own. */
  wasmFromPage?: boolean;
}

/** A local change of a shared database rejected as a whole (nothing of it stays). */
export interface RejectedEvent {
  seq: bigint;
  reason: string;
}

/** Where a database stands, as the worker sees it. */
export interface BrowserStatus {
  name: string;
  role: Role;
  /** A shared database (every device writes; see OpenArgs.shared). */
  shared: boolean;
  /** The writer's sync state (connecting, pushing, synced, offline, storage-unavailable, error, closed; 'local' without a hub), or the replica's (connecting, catching-up, live, offline, storage-unavailable, error, closed). */
  state: string;
  /** The hub answers and serves (state is none of connecting, offline, storage-unavailable, error). */
  online: boolean;
  /** The database's last txid (0: empty). */
  txid: bigint;
  /** The first txid the local journal can restore (time travel's lower end; 0: none). */
  firstTxid: bigint;
  /** The hub's head as last seen. */
  hubTxid: bigint | undefined;
  /**
   * Writer: commits not yet on the hub (shared: local transactions not in the hub's history yet).
   * Replica: hub head minus txid.
   */
  pending: number;
  /**
   * Writer: age of the oldest commit not yet on the hub (0 when synced). Replica: commit-to-apply time of
   * the last snapshot that arrived live; 0 once it caught up after being behind (what it applied while
   * catching up is old, not late).
   */
  lagMs: number;
  /** Why sync is offline or stopped; absent while it works (an error that went away is not kept). */
  lastError?: string;
}

export type Op =
  | 'open'
  | 'hub'
  | 'query'
  | 'run'
  | 'exec'
  | 'status'
  | 'reports'
  | 'at'
  | 'sha256'
  | 'bench'
  | 'timings'
  | 'close';

export interface Request {
  kind: 'req';
  id: string;
  op: Op;
  args?: unknown;
}

export interface Response {
  kind: 'res';
  id: string;
  ok: boolean;
  value?: unknown;
  error?: string;
}

/**
 * `change`: the data changed (a commit or an applied snapshot). `status`: only the sync status did.
 * `leader`: a tab took over the database. `conflict`, `rejected`: what became of a local change of a
 * shared database (`detail`).
 */
export type WorkerEvent =
  | { kind: 'event'; event: 'change' | 'status' | 'leader'; status: BrowserStatus }
  | { kind: 'event'; event: 'conflict'; status: BrowserStatus; detail: ConflictEvent }
  | { kind: 'event'; event: 'rejected'; status: BrowserStatus; detail: RejectedEvent };

/** A conflict or rejection as the worker keeps it (the last ones, for tabs that open later). */
export type SyncReport =
  | { event: 'conflict'; at: number; detail: ConflictEvent }
  | { event: 'rejected'; at: number; detail: RejectedEvent };

/**
 * Page to its worker: sqlite3.wasm, compiled by the page while the worker's script loaded (or why it
 * could not be: the worker then fetches it itself).
 */
export interface EngineMessage {
  kind: 'engine';
  module?: WebAssembly.Module;
  error?: string;
}

export type Message = Request | Response | WorkerEvent | EngineMessage;

/** Rows as objects, column name → value. */
export type Row = Record<string, unknown>;

export interface RunResult {
  changes: number;
  lastInsertRowid: bigint | number;
  /** The database's txid after the statement. */
  txid: bigint;
}

export interface TimeTravelResult {
  rows: Row[];
  txid: bigint;
  /** Commit time of that snapshot (ms since the epoch). */
  timestamp: number;
}

export interface Sha256Result {
  sha256: string;
  txid: bigint;
  size: number;
}

export interface BenchResult {
  commits: number;
  ms: number;
  perSecond: number;
}

/**
 * When the steps of opening a database happened: each a time in ms since the epoch
 * (`performance.timeOrigin + performance.now()`, comparable between the page and its worker).
 */
export type Timings = Record<string, number>;

/** The BroadcastChannel and Web Lock names of a database (per role: a writer and a replica never share files). */
export function channelName(name: string, role: Role): string {
  return `mycelite:${role}:${name}`;
}
