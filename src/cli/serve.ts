/** `mycelite serve`: run a hub (docs/PROTOCOL.md) that stores and relays the journals of many databases. */
import * as path from 'node:path';
import { type Command, Option } from 'commander';
import { DEFAULT_RETENTION, describeRetention, parseDuration, parseRetention } from '../history/policy.js';
import type { HubCompaction } from '../hub/compaction.js';
import { startHub } from '../hub/index.js';
import { openNatsStorage } from '../hub/nats-storage.js';
import { builtWebDir, isLoopback } from '../hub/web.js';
import { UsageError, writeErr, writeOut } from './common.js';

interface ServeOptions {
  data: string;
  host: string;
  port: string;
  maxBody: string;
  logLevel: string;
  maxConnections: string;
  demo?: boolean;
  storage?: string;
  natsLayout?: 'shards' | 'streams';
  retain: string;
  compact: boolean;
  compactAbove: string;
  compactEvery: string;
  checkpointRatio: string;
}

export const DEFAULT_DATA_DIR = 'mycelite-hub';

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('run a hub: store the journals of many databases and relay them to replicas, live')
    .option('--data <DIR>', 'data directory (journals, leases, hub.key)', DEFAULT_DATA_DIR)
    .option('--host <HOST>', 'address to listen on', '127.0.0.1')
    .option('--port <PORT>', 'port to listen on (0: any free port)', '8080')
    .option('--max-body <SIZE>', 'largest push body, e.g. 64MiB or 1048576', '64MiB')
    .option(
      '--max-connections <N>',
      'requests and follow streams served at once; more get 503 (/livez, /readyz, /healthz and /metrics always answer)',
      '5000',
    )
    .option('--log-level <LEVEL>', 'fatal, error, warn, info, debug, trace or silent', 'info')
    .option(
      '--storage <URL>',
      'keep journals and leases in NATS JetStream instead of --data (nats://host:port[,host:port...]): several hubs on one cluster serve the same databases (--data then holds only hub.key and caches); a cluster that cannot be reached yet is waited for (/readyz says 503 until it answers)',
    )
    .addOption(
      new Option(
        '--nats-layout <LAYOUT>',
        "with --storage: where new databases go, shards (a subject in one of 16 shared streams: a cluster's idle cost does not grow with its databases) or streams (a stream each, as hubs before shards made them; for a rolling upgrade from those: start the new hubs with streams, then restart every hub with shards)",
      ).choices(['shards', 'streams']),
    )
    .option(
      '--retain <POLICY>',
      'which points in time compaction keeps: AGE:EVERY tiers, youngest first',
      DEFAULT_RETENTION,
    )
    .option(
      '--compact-above <SIZE>',
      'compact a database once its journal is larger than SIZE and than the database',
      '64MiB',
    )
    .option(
      '--compact-every <DURATION>',
      'compact each database at most once per DURATION (e.g. 90s, 10m, 1h)',
      '10m',
    )
    .option(
      '--checkpoint-ratio <R>',
      'a checkpoint (full image) in the history whenever the snapshots since the last one pass R × the database size',
      '0.5',
    )
    .option('--no-compact', 'never compact: keep every snapshot in the journals')
    .option(
      '--demo',
      'serve the local-first demo web app at / (built by npm run build:web); on loopback it also hands out tokens for databases named demo* at /demo/token',
    )
    .addHelpText(
      'after',
      `
Prints one line "mycelite hub listening on URL (data: DIR)" on stdout once it serves, then JSON logs on
stderr. Every database endpoint needs a token signed with the hub's key (DATA/hub.key, created with mode
0600 at first start, or $MYCELITE_HUB_KEY): mint them with "mycelite token". Tokens are required on every
address, so --host 0.0.0.0 serves the network with the same protection; put TLS in front (a proxy) when
tokens cross an untrusted network. Ctrl-C (SIGINT) or SIGTERM stops it gracefully: pushes in flight
finish, follow streams end, nothing acknowledged is lost.

Health: GET /livez is 200 while the process serves (liveness); GET /readyz, and /healthz, is 200 only
while its storage answers too (readiness: route traffic on it), else 503 with the reason.

Compaction: once a database's journal (DATA/dbs/NAME/journal) passes --compact-above and the database's
size, at most once per --compact-every, the hub moves its older snapshots into DATA/dbs/NAME/history,
keeping the points --retain names. The default, ${DEFAULT_RETENTION}, keeps
${describeRetention(parseRetention(DEFAULT_RETENTION))}.
It runs beside pushes and reads; a replica whose position was compacted away starts again from a full
image of the head. With --storage (NATS) the hub stores the history in the cluster's object store, a
checkpoint (the full image of the head - 1) in the stream, and purges the messages before it.

Examples:
  $ mycelite serve --data hubdata --port 8080
  $ mycelite token --data hubdata --db app --role writer
  $ mycelite serve --data demo-hub --demo      # then open http://127.0.0.1:8080/
  $ mycelite serve --data /var/lib/mycelite --host 0.0.0.0 --port 443 --max-body 16MiB --log-level warn
  $ mycelite serve --data hubdata --retain 7d:all,90d:1d --compact-above 256MiB --compact-every 1h
  $ mycelite serve --data hubkey --port 8081 --storage nats://10.0.0.1:4222,nats://10.0.0.2:4222`,
    )
    .action(async (options: ServeOptions) => {
      await serveCommand(options);
    });
}

/** Parses a size like `64MiB`, `512KiB`, `1GiB`, `10MB` or plain bytes. */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(|b|kb|kib|k|mb|mib|m|gb|gib|g)$/i.exec(text.trim());
  if (!m)
    throw new UsageError(`cannot read the size ${JSON.stringify(text)}: use e.g. 64MiB, 512KiB or 1048576`);
  const units: Record<string, number> = {
    '': 1,
    b: 1,
    k: 1024,
    kib: 1024,
    kb: 1000,
    m: 1024 ** 2,
    mib: 1024 ** 2,
    mb: 1000 ** 2,
    g: 1024 ** 3,
    gib: 1024 ** 3,
    gb: 1000 ** 3,
  };
  const n = Math.floor(Number(m[1]) * units[m[2]!.toLowerCase()]!);
  if (n < 1024) throw new UsageError(`the size ${JSON.stringify(text)} is too small: at least 1KiB`);
  return n;
}

function parseInteger(text: string, what: string, min: number, max: number): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max)
    throw new UsageError(`${what} must be an integer from ${min} to ${max}, not ${JSON.stringify(text)}`);
  return n;
}

function compactionOptions(options: ServeOptions): HubCompaction {
  const retain = options.retain;
  try {
    parseRetention(retain);
  } catch (e) {
    throw new UsageError(`--retain: ${(e as Error).message}`);
  }
  let everyMs: number;
  try {
    everyMs = parseDuration(options.compactEvery);
  } catch (e) {
    throw new UsageError(`--compact-every: ${(e as Error).message}`);
  }
  const checkpointRatio = Number(options.checkpointRatio);
  if (!Number.isFinite(checkpointRatio) || checkpointRatio <= 0) {
    throw new UsageError(
      `--checkpoint-ratio must be a positive number (e.g. 0.5), not ${JSON.stringify(options.checkpointRatio)}`,
    );
  }
  return { retain, everyMs, checkpointRatio, minBytes: parseSize(options.compactAbove) };
}

export async function serveCommand(options: ServeOptions): Promise<void> {
  const levels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
  if (!levels.includes(options.logLevel))
    throw new UsageError(`--log-level must be one of ${levels.join(', ')}`);
  const dataDir = path.resolve(options.data);
  const port = parseInteger(options.port, '--port', 0, 65535);
  const web = options.demo ? { dir: builtWebDir(), demoTokens: isLoopback(options.host) } : undefined;
  const compaction = options.compact ? compactionOptions(options) : false;
  if (options.natsLayout !== undefined && options.storage === undefined)
    throw new UsageError('--nats-layout goes with --storage (a hub on NATS)');
  // A cluster that cannot be reached yet is waited for: the hub serves /livez meanwhile, /readyz says 503.
  let told = '';
  const storage = options.storage
    ? await openNatsStorage(
        options.storage,
        { compaction, headsDir: path.join(dataDir, 'heads'), layout: options.natsLayout },
        (why) => {
          if (why === told) return;
          told = why;
          writeErr(
            `mycelite hub: storage not ready, waiting for it (${why}); /readyz answers 503 until it is\n`,
          );
        },
      )
    : undefined;
  const hub = await startHub({
    dataDir,
    storage,
    host: options.host,
    port,
    maxBody: parseSize(options.maxBody),
    maxConnections: parseInteger(options.maxConnections, '--max-connections', 1, 1_000_000),
    logLevel: options.logLevel,
    web,
    compaction,
  }).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'EADDRINUSE') {
      throw new Error(
        `port ${port} on ${options.host} is in use: stop what uses it, or choose another with --port (0 picks a free one)`,
      );
    }
    if (e.code === 'EADDRNOTAVAIL') {
      throw new Error(`${options.host} is not an address of this machine: choose another with --host`);
    }
    throw e;
  });
  const where = options.storage ? `, storage: ${options.storage}` : '';
  writeOut(`mycelite hub listening on ${hub.url} (data: ${dataDir}${where})\n`);
  if (web) writeOut(`demo app: ${hub.url}/${web.demoTokens ? '' : ' (no demo tokens: not on loopback)'}\n`);
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      writeErr(`mycelite hub: ${signal}, shutting down\n`);
      hub.close().then(resolve, (e: unknown) => {
        writeErr(`mycelite hub: shutdown failed: ${(e as Error).message}\n`);
        resolve();
      });
    };
    const onInt = (): void => stop('SIGINT');
    const onTerm = (): void => stop('SIGTERM');
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
  });
}
