/**
 * `mycelite replicate --config FILE`: one process replicating every database a JSON config lists, the
 * way Litestream users run it. Each database logs its own lines (prefixed with its path); SIGHUP reloads
 * the file (databases added are started, removed ones stopped, changed ones restarted); `--metrics
 * HOST:PORT` serves Prometheus text at /metrics. Node only.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import type { HubOptions } from '../client/writer-start.js';
import { type Replicator, replicate } from './replicate.js';

export interface DaemonEntry {
  path: string;
  hub?: HubOptions;
}

/** Reads and checks a config file; throws one line naming what is wrong. */
export function readConfig(file: string): DaemonEntry[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(
      `cannot read config ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`config ${file} is not JSON: ${(e as Error).message}`);
  }
  const list = (json as { databases?: unknown })?.databases;
  if (!Array.isArray(list) || list.length === 0) {
    throw new Error(`config ${file}: expected {"databases": [{"path": "app.db", "hub": {...}}, ...]}`);
  }
  const dir = path.dirname(path.resolve(file));
  const seen = new Set<string>();
  return list.map((e: unknown, i) => {
    const entry = e as { path?: unknown; hub?: { url?: unknown; db?: unknown; token?: unknown } };
    if (typeof entry?.path !== 'string' || entry.path === '') {
      throw new Error(`config ${file}: databases[${i}] has no "path"`);
    }
    const p = path.resolve(dir, entry.path);
    if (seen.has(p)) throw new Error(`config ${file}: ${p} is listed twice`);
    seen.add(p);
    if (entry.hub === undefined) return { path: p };
    const { url, db, token } = entry.hub;
    const t = token ?? process.env['MYCELITE_TOKEN'];
    if (typeof url !== 'string' || typeof db !== 'string' || typeof t !== 'string') {
      throw new Error(
        `config ${file}: databases[${i}].hub needs "url", "db" and "token" (or MYCELITE_TOKEN)`,
      );
    }
    return { path: p, hub: { url, db, token: t } };
  });
}

/**
 * What a sidecar says when its push to the hub stopped for good (a refused token, another history):
 * capture goes on into the local journal, nothing is lost, and how to push again.
 */
export function pushStopped(why: string | undefined, again: string): string {
  return `pushing stopped: ${why ?? 'no reason given'}; still capturing every transaction into the local journal (nothing is lost): fix the cause, then ${again}`;
}

interface Running {
  entry: DaemonEntry;
  key: string;
  replicator?: Replicator;
  error?: string;
  /** Why pushing to the hub stopped for good (capture goes on), until a reload starts it again. */
  pushError?: string;
  snapshots: number;
  lastSnapshotAt: number;
}

export interface DaemonOptions {
  metrics?: string;
  /** Where lines go (default stderr). */
  log?: (line: string) => void;
  /** Resolves to stop the daemon (default: SIGINT or SIGTERM). */
  stop?: Promise<void>;
}

/** Runs until stopped; per-database errors are logged and do not stop the others. */
export async function runDaemon(configFile: string, options: DaemonOptions = {}): Promise<void> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  let entries = readConfig(configFile);
  const running = new Map<string, Running>();
  const keyOf = (e: DaemonEntry): string => JSON.stringify(e);

  const start = async (entry: DaemonEntry): Promise<void> => {
    const r: Running = { entry, key: keyOf(entry), snapshots: 0, lastSnapshotAt: 0 };
    running.set(entry.path, r);
    const say = (line: string): void => log(`${entry.path}: ${line}`);
    try {
      r.replicator = await replicate(entry.path, { hub: entry.hub, onMessage: say });
      r.replicator.on('snapshot', (s) => {
        r.snapshots++;
        r.lastSnapshotAt = s.timestamp;
      });
      r.replicator.on('error', (e) => {
        r.error = e.message;
        say(`stopped: ${e.message}`);
      });
      let pushState = r.replicator.sync?.status().state;
      r.replicator.sync?.on('status', (s) => {
        if (s.state === pushState) return;
        pushState = s.state;
        r.pushError = s.state === 'error' ? (s.lastError ?? 'stopped') : undefined;
        if (s.state === 'error') say(pushStopped(s.lastError, 'send SIGHUP to push again'));
        if (s.state === 'offline') say(`hub unreachable, retrying: ${s.lastError}`);
      });
      say(
        `replicating at txid ${r.replicator.position().txid}${entry.hub ? ` to ${entry.hub.db} on ${entry.hub.url}` : ''}`,
      );
    } catch (e) {
      r.error = (e as Error).message;
      say(`not replicated: ${r.error}`);
    }
  };
  const stopOne = async (p: string): Promise<void> => {
    const r = running.get(p);
    running.delete(p);
    if (r?.replicator) {
      await r.replicator.close();
      log(`${p}: stopped at txid ${r.replicator.position().txid}`);
    }
  };

  for (const e of entries) await start(e);
  let server: http.Server | undefined;
  if (options.metrics) server = await serveMetrics(options.metrics, running, log);

  let reloading = Promise.resolve();
  const reload = (): void => {
    reloading = reloading.then(async () => {
      let next: DaemonEntry[];
      try {
        next = readConfig(configFile);
      } catch (e) {
        log(`reload refused, keeping the running configuration: ${(e as Error).message}`);
        return;
      }
      const wanted = new Map(next.map((e) => [e.path, e]));
      for (const [p, r] of [...running]) {
        const w = wanted.get(p);
        if (!w || keyOf(w) !== r.key || r.error !== undefined || r.pushError !== undefined) await stopOne(p);
      }
      for (const e of next) if (!running.has(e.path)) await start(e);
      entries = next;
      log(`reloaded ${configFile}: ${entries.length} database${entries.length === 1 ? '' : 's'}`);
    });
  };
  process.on('SIGHUP', reload);
  await (options.stop ??
    new Promise<void>((resolve) => {
      process.once('SIGINT', () => resolve());
      process.once('SIGTERM', () => resolve());
    }));
  process.off('SIGHUP', reload);
  await reloading;
  server?.close();
  for (const p of [...running.keys()]) await stopOne(p);
}

async function serveMetrics(
  where: string,
  running: Map<string, Running>,
  log: (line: string) => void,
): Promise<http.Server> {
  const at = where.lastIndexOf(':');
  const host = at > 0 ? where.slice(0, at) : '127.0.0.1';
  const port = Number(at >= 0 ? where.slice(at + 1) : where);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new Error(`--metrics ${where}: expected HOST:PORT`);
  const server = http.createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end('not found\n');
      return;
    }
    const lines = [
      '# HELP mycelite_replicate_up 1 while the database is replicated, 0 after an error',
      '# TYPE mycelite_replicate_up gauge',
      '# HELP mycelite_replicate_push_up 1 while pushing to its hub goes on, 0 once it stopped (capture goes on)',
      '# TYPE mycelite_replicate_push_up gauge',
      '# HELP mycelite_replicate_txid the journal head',
      '# TYPE mycelite_replicate_txid gauge',
      '# HELP mycelite_replicate_journal_bytes size of the journal file',
      '# TYPE mycelite_replicate_journal_bytes gauge',
      '# HELP mycelite_replicate_snapshots_total snapshots captured since start',
      '# TYPE mycelite_replicate_snapshots_total counter',
      '# HELP mycelite_replicate_lag_seconds seconds since the last snapshot was captured',
      '# TYPE mycelite_replicate_lag_seconds gauge',
      '# HELP mycelite_replicate_pending_frames committed WAL frames not yet in the journal (capture lag)',
      '# TYPE mycelite_replicate_pending_frames gauge',
    ];
    for (const [p, r] of running) {
      const l = `{db=${JSON.stringify(p)}}`;
      const up = r.replicator !== undefined && r.error === undefined;
      lines.push(`mycelite_replicate_up${l} ${up ? 1 : 0}`);
      if (!r.replicator) continue;
      if (r.entry.hub) lines.push(`mycelite_replicate_push_up${l} ${r.pushError === undefined ? 1 : 0}`);
      lines.push(`mycelite_replicate_txid${l} ${r.replicator.position().txid}`);
      const size = fs.statSync(r.replicator.journalPath, { throwIfNoEntry: false })?.size ?? 0;
      lines.push(`mycelite_replicate_journal_bytes${l} ${size}`);
      lines.push(`mycelite_replicate_snapshots_total${l} ${r.snapshots}`);
      lines.push(`mycelite_replicate_pending_frames${l} ${r.replicator.pendingFrames()}`);
      if (r.lastSnapshotAt > 0) {
        lines.push(
          `mycelite_replicate_lag_seconds${l} ${((Date.now() - r.lastSnapshotAt) / 1000).toFixed(3)}`,
        );
      }
    }
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(`${lines.join('\n')}\n`);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const a = server.address();
  log(`metrics at http://${host}:${typeof a === 'object' && a ? a.port : port}/metrics`);
  return server;
}
