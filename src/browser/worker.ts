/**
 * The database worker (a dedicated module Worker, where OPFS synchronous access handles exist). It
 * answers requests from its page (postMessage) and, once open, from the origin's other tabs (a
 * BroadcastChannel per database and role), and tells both when the data or the sync status changed.
 * Requests run one at a time, in arrival order.
 */
import type { BindValue } from '../engine/sqlite.js';
import { observeSteps } from '../writer/errors.js';
import {
  channelName,
  type EngineMessage,
  type HubTarget,
  type Message,
  type OpenArgs,
  type Request,
  type Response,
  type SyncReport,
  type Timings,
} from './messages.js';
import { WorkerDatabase } from './worker-db.js';

interface WorkerScope {
  postMessage(m: Message): void;
  onmessage: ((e: MessageEvent<Message>) => void) | null;
}
const scope = globalThis as unknown as WorkerScope;

/** When this worker was created and reached each step of opening its database (see Timings). */
const now = (): number => performance.timeOrigin + performance.now();
const timings: Timings = { workerCreated: performance.timeOrigin, workerScript: now() };
function mark(step: string): void {
  timings[step] = now();
}

/**
 * sqlite-wasm's own VFSes (kvvfs, opfs, opfs-wl, opfs-sahpool) are not used here (the Mycelite VFS over
 * the OPFS pool is): skipping their set-up takes ~10 ms off loading the engine. sqlite-wasm reads this
 * global once, when it initialises.
 */
(globalThis as { sqlite3ApiConfig?: unknown }).sqlite3ApiConfig = {
  disable: { vfs: { kvvfs: true, opfs: true, 'opfs-vfs': true, 'opfs-wl': true, 'opfs-sahpool': true } },
};

/**
 * sqlite3.wasm as the page compiles it (an EngineMessage), when the open request says it will: the
 * compile then runs while this script loads. Should the page fail to, this worker fetches it itself.
 */
let pageWasm: (m: EngineMessage) => void = () => {};
const wasmFromPage = new Promise<WebAssembly.Module>((resolve) => {
  pageWasm = (m) => {
    if (m.module) resolve(m.module);
    else {
      // No streaming here: what failed in the page may be the file's type (not application/wasm).
      const url = new URL('sqlite3.wasm', import.meta.url);
      resolve(
        fetch(url)
          .then((r) => (r.ok ? r.arrayBuffer() : Promise.reject(new Error(`${url}: HTTP ${r.status}`))))
          .then((b) => WebAssembly.compile(b)),
      );
    }
  };
});

let db: WorkerDatabase | undefined;
let channel: BroadcastChannel | undefined;
let queue: Promise<void> = Promise.resolve();
/** Change events are sent at most this often (a benchmark commits thousands per second). */
const EVENT_EVERY_MS = 30;
let pendingEvent: 'change' | 'status' | undefined;
let eventTimer: ReturnType<typeof setTimeout> | undefined;
let lastEmit = 0;

function emit(event: 'change' | 'status' | 'leader'): void {
  if (!db) return;
  send({ kind: 'event', event, status: db.status() });
}

function send(m: Message): void {
  scope.postMessage(m);
  channel?.postMessage(m);
}

/** A conflict or rejection goes to every tab at once (never coalesced). */
function report(r: SyncReport): void {
  if (!db) return;
  const status = db.status();
  if (r.event === 'conflict') send({ kind: 'event', event: 'conflict', status, detail: r.detail });
  else send({ kind: 'event', event: 'rejected', status, detail: r.detail });
}

function flushEvent(): void {
  eventTimer = undefined;
  const e = pendingEvent;
  pendingEvent = undefined;
  lastEmit = Date.now();
  if (e) emit(e);
}

/** Sends the event once the current commit is done: at once, or coalesced when they come faster. */
function notify(event: 'change' | 'status'): void {
  if (pendingEvent !== 'change') pendingEvent = event;
  if (eventTimer !== undefined) return;
  eventTimer = setTimeout(flushEvent, Math.max(0, lastEmit + EVENT_EVERY_MS - Date.now()));
}

async function perform(req: Request): Promise<unknown> {
  const a = (req.args ?? {}) as { sql?: string; params?: BindValue[]; txid?: bigint; n?: number };
  if (req.op === 'open') {
    if (db) throw new Error(`this worker already holds ${db.args.name}`);
    mark('openReceived');
    const args = req.args as OpenArgs;
    observeSteps((name) => mark(`open: ${name}`));
    try {
      db = await WorkerDatabase.open(
        args,
        { notify, report, mark },
        args.wasmFromPage ? wasmFromPage : undefined,
      );
    } finally {
      observeSteps(undefined);
    }
    channel = new BroadcastChannel(channelName(db.args.name, db.args.role));
    channel.onmessage = (e: MessageEvent<Message>) => {
      if (e.data.kind === 'req' && e.data.op !== 'open' && e.data.op !== 'close') {
        handle(e.data, (m) => channel?.postMessage(m));
      }
    };
    emit('leader');
    mark('opened');
    return db.status();
  }
  if (req.op === 'timings') return timings;
  if (!db) throw new Error('the database is not open yet');
  switch (req.op) {
    case 'hub':
      await db.setHub(req.args as HubTarget);
      return db.status();
    case 'reports':
      return db.reports();
    case 'query':
      return db.query(a.sql!, a.params);
    case 'run':
      return db.run(a.sql!, a.params);
    case 'exec':
      return db.exec(a.sql!);
    case 'status':
      return db.status();
    case 'at':
      return db.at(a.txid!, a.sql!, a.params);
    case 'sha256':
      return db.sha256();
    case 'bench':
      return db.bench(a.n ?? 1000);
    case 'close': {
      channel?.close();
      channel = undefined;
      const d = db;
      db = undefined;
      await d.close();
      return null;
    }
    default:
      throw new Error(`unknown request ${JSON.stringify(req.op)}`);
  }
}

function handle(req: Request, reply: (m: Response) => void): void {
  queue = queue.then(async () => {
    try {
      reply({ kind: 'res', id: req.id, ok: true, value: await perform(req) });
    } catch (e) {
      reply({ kind: 'res', id: req.id, ok: false, error: (e as Error)?.message ?? String(e) });
    }
  });
}

scope.onmessage = (e) => {
  if (e.data.kind === 'req') handle(e.data, (m) => scope.postMessage(m));
  else if (e.data.kind === 'engine') pageWasm(e.data);
};
