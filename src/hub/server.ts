/**
 * Starts a hub: storage under a data directory, the HTTP app on a node:http server, metrics and logs.
 * `close()` shuts down without losing anything acknowledged: it stops accepting, lets in-flight pushes
 * finish (they are durable before they answer), ends follow streams and closes the storage.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Server, Socket } from 'node:net';
import * as path from 'node:path';
import { serve } from '@hono/node-server';
import pino from 'pino';
import { loadHash } from '../format/index.js';
import { DEFAULT_MAX_BODY } from '../protocol/index.js';
import { createApp } from './app.js';
import { loadOrCreateKey } from './auth.js';
import type { HubCompaction } from './compaction.js';
import type { HubContext } from './context.js';
import { FsStorage } from './fs-storage.js';
import type { DamageReport } from './heads.js';
import { watchHealth } from './health.js';
import { ImageCache } from './image-cache.js';
import { LeaseQueue } from './lease-queue.js';
import { HubMetrics } from './metrics.js';
import type { HubStorage } from './storage.js';
import type { WebOptions } from './web.js';

export interface HubOptions {
  /** Directory of the hub's data: `dbs/<name>/journal`, `dbs/<name>/lease.json`, `hub.key`. */
  dataDir: string;
  /** Address to listen on (default 127.0.0.1). */
  host?: string;
  /** Port (default 8080; 0 picks a free one). */
  port?: number;
  /** Largest push body (bytes; default 64 MiB). */
  maxBody?: number;
  /** Signing key of tokens (default: loadOrCreateKey(dataDir)). */
  key?: Uint8Array;
  /** Beat interval of follow streams (ms; default 10 s). */
  beatMs?: number;
  /** pino level (default info; `silent` for none). */
  logLevel?: string;
  /** Largest number of requests and follow streams served at once; more get 503 (default 5000). */
  maxConnections?: number;
  /** Storage to use instead of the filesystem storage under dataDir. */
  storage?: HubStorage;
  /**
   * Automatic compaction of the filesystem storage's journals (src/hub/compaction.ts; default: on with
   * its defaults); false: never. Not used with `storage` (give it to that storage; the hub logs it).
   */
  compaction?: HubCompaction | false;
  /** Bytes of new snapshots a follower may have queued in memory before it reads them from storage instead (default 64 MiB). */
  followQueueLimit?: number;
  /** Serve the demo web app (see src/hub/web.ts). */
  web?: WebOptions;
  /** Where logs go (default stderr). */
  logDestination?: pino.DestinationStream;
  /** The hub's clock (ms since the epoch; default Date.now): write leases expire by it (tests move it). */
  now?: () => number;
  /** Time to receive a whole request, headers and body, before the connection is cut (ms; default 120 s). */
  requestTimeoutMs?: number;
  /** Time to receive a request's headers before the connection is cut (ms; default 20 s). */
  headersTimeoutMs?: number;
}

export interface Hub {
  /** e.g. `http://127.0.0.1:8080`. */
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  readonly key: Uint8Array;
  /** Prometheus text of /metrics. */
  metrics(): Promise<string>;
  /** Graceful shutdown (see the file comment). Idempotent. */
  close(): Promise<void>;
}

/** Largest time to receive a whole request (headers and body) before the server cuts it (ms). */
const REQUEST_TIMEOUT_MS = 120_000;
const HEADERS_TIMEOUT_MS = 20_000;

export async function startHub(options: HubOptions): Promise<Hub> {
  await loadHash();
  const dataDir = path.resolve(options.dataDir);
  const key = options.key ?? loadOrCreateKey(dataDir);
  const log = pino(
    { level: options.logLevel ?? 'info', base: { pid: process.pid }, redact: ['req.headers.authorization'] },
    options.logDestination ?? pino.destination(2),
  );
  const storage =
    options.storage ??
    (await FsStorage.open(dataDir, {
      compaction: logged(options.compaction, log),
      onDamage: logDamage(log),
      onChecked: (db, c) =>
        log.info({ db, bytes: c.bytes, ms: Math.round(c.ms), damaged: c.damaged }, 'stored journal checked'),
    }));
  options.storage?.watchCompactions?.(logCompaction(log));
  options.storage?.watchDamage?.(logDamage(log));
  // Not asked while the storage is down: /metrics answers at once, whatever the storage does.
  const metrics = new HubMetrics(async () =>
    ctx.health.ready
      ? within(
          2000,
          storage.list().then((l) => l.length),
        )
      : undefined,
  );
  const ctx: HubContext = {
    storage,
    key,
    maxBody: options.maxBody ?? DEFAULT_MAX_BODY,
    beatMs: options.beatMs ?? 10_000,
    log,
    metrics,
    images: new ImageCache(storage, path.join(dataDir, 'images')),
    maxActive: options.maxConnections ?? 5000,
    active: 0,
    closing: false,
    pushes: new Set(),
    streams: new Set(),
    followQueueLimit: options.followQueueLimit,
    web: options.web,
    now: options.now ?? Date.now,
    leaseQueue: new LeaseQueue(),
    health: { ready: true },
  };
  const swept = await ctx.images.sweep();
  if (swept > 0) log.info({ removed: swept }, 'removed images left by hubs that are gone');
  const stopHealth = await watchHealth(ctx, storage, metrics, log);
  const app = createApp(ctx);
  const sockets = new Set<Socket>();
  /** Sockets with a request in progress (the others are idle, or connected without a request yet). */
  const busy = new Set<Socket>();
  const server = await listen().catch(async (e: unknown) => {
    // Nothing is served: give the data directory back (its lock) before reporting.
    stopHealth();
    await storage.close();
    await ctx.images.close();
    throw e;
  });
  function listen(): Promise<Server> {
    return new Promise<Server>((resolve, reject) => {
      const s = serve(
        {
          fetch: app.fetch,
          hostname: options.host ?? '127.0.0.1',
          port: options.port ?? 8080,
          serverOptions: {
            requestTimeout: options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS,
            headersTimeout: options.headersTimeoutMs ?? HEADERS_TIMEOUT_MS,
            // How often the timeouts above are checked (Node's default, 30 s, would let them run over).
            connectionsCheckingInterval: Math.min(1000, options.headersTimeoutMs ?? 1000),
          },
        },
        () => resolve(s as unknown as Server),
      ) as unknown as Server;
      s.once('error', reject);
      s.on('connection', (sock: Socket) => {
        sockets.add(sock);
        sock.once('close', () => sockets.delete(sock));
      });
      s.on('request', (req: IncomingMessage, res: ServerResponse) => {
        busy.add(req.socket);
        const done = (): void => {
          busy.delete(req.socket);
        };
        res.once('finish', done);
        res.once('close', done);
      });
    });
  }
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('the hub server has no TCP address');
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  log.info({ url, dataDir }, 'hub listening');

  let closing: Promise<void> | undefined;
  const close = async (): Promise<void> => {
    ctx.closing = true;
    const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
    // Pushes in flight finish (each is durable before it answers); streams end now.
    await Promise.allSettled([...ctx.pushes]);
    for (const s of ctx.streams) s.end();
    // Connections close as soon as no request is in progress on them; whatever still hangs after 2 s is cut.
    const idle = (): void => {
      for (const sock of sockets) if (!busy.has(sock)) sock.destroy();
    };
    idle();
    const poll = setInterval(idle, 20);
    const timer = setTimeout(() => {
      for (const s of sockets) s.destroy();
    }, 2000);
    await stopped;
    clearInterval(poll);
    clearTimeout(timer);
    stopHealth();
    await storage.close();
    await ctx.images.close();
    log.info('hub closed');
    await new Promise<void>((resolve) => log.flush(() => resolve()));
  };
  return {
    url,
    port: address.port,
    dataDir,
    key,
    metrics: () => metrics.text(),
    close: () => {
      closing ??= close();
      return closing;
    },
  };
}

/** `p`, or undefined when it takes longer than `ms`. */
function within<T>(ms: number, p: Promise<T>): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<undefined>((r) => {
    timer = setTimeout(() => r(undefined), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Logs damage a storage found, loudly: a stored copy (and its repair) or a head file rebuilt. */
function logDamage(log: pino.Logger): (db: string, report: DamageReport) => void {
  return (db, r) => {
    const line = { db, what: r.what, txid: r.txid?.toString(), keptAt: r.keptAt, repaired: r.repaired };
    if (r.what === 'stored' || !r.repaired) log.error(line, r.message);
    else log.warn(line, r.message);
  };
}

/** Logs a compaction (or its failure). */
function logCompaction(log: pino.Logger): NonNullable<HubCompaction['onCompaction']> {
  return (db, outcome, ms) => {
    if (outcome instanceof Error) {
      log.error({ db, err: outcome, ms }, 'compaction failed');
      return;
    }
    log.info(
      {
        db,
        ms,
        upTo: outcome.upTo?.toString(),
        pointsBefore: outcome.pointsBefore,
        pointsAfter: outcome.pointsAfter,
        checkpoints: outcome.checkpoints,
        bytesBefore: outcome.bytesBefore,
        bytesAfter: outcome.bytesAfter,
        swapMs: outcome.swapMs,
      },
      outcome.unchanged ? 'compaction: nothing to change' : 'compacted',
    );
  };
}

/** The compaction settings with each compaction (or its failure) logged. */
function logged(c: HubCompaction | false | undefined, log: pino.Logger): HubCompaction | false {
  if (c === false) return false;
  const write = logCompaction(log);
  return {
    ...c,
    onCompaction(db, outcome, ms) {
      write(db, outcome, ms);
      c?.onCompaction?.(db, outcome, ms);
    },
  };
}
