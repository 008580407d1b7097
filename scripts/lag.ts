/**
 * Commit-to-replica lag through a hub on loopback, and what the hub's memory does with many live
 * followers. Three kinds of process: the hub (`mycelite serve`, a child), the writer (a child running
 * this script with --writer, printing each commit's wall-clock time), and this process, which runs one
 * real replica (openReplica: journal append + apply in SQLite) and N raw follow streams.
 *
 *   node dist/scripts/lag.js [--commits 1000] [--interval 5] [--streams 100]
 *
 * Lag = time the replica applied a snapshot (or a stream received it) − time the writer's commit
 * returned, both as performance.timeOrigin + performance.now() (sub-millisecond wall clock).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { HubClient } from '../src/client/hub-client.js';
import { loadOrCreateKey, mintToken } from '../src/hub/index.js';
import { open, openReplica } from '../src/node/index.js';
import { FrameScanner, percentile } from './measure.js';

const BIN = fileURLToPath(new URL('../../bin/mycelite.js', import.meta.url));
const now = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const opts = new Command('lag')
  .option('--commits <n>', 'commits to measure', (v) => Number(v), 1000)
  .option('--interval <ms>', 'pause between commits (ms)', (v) => Number(v), 5)
  .option('--streams <n>', 'extra raw follow streams on the hub', (v) => Number(v), 100)
  .option('--json', 'print one JSON object instead of text', false)
  .option('--writer <json>', '(internal) run as the writer child')
  .parse()
  .opts<{ commits: number; interval: number; streams: number; json: boolean; writer?: string }>();

async function runWriter(w: { url: string; token: string; file: string }): Promise<void> {
  const db = await open(w.file, { hub: { url: w.url, db: 'lag', token: w.token } });
  db.exec('create table if not exists t(id integer primary key, v blob, at text)');
  await db.sync!.flush(10_000);
  const ins = db.prepare('insert into t(v, at) values (randomblob(200), current_timestamp)');
  process.stdout.write('ready\n');
  await new Promise((r) => process.stdin.once('data', r)); // "go": the readers are connected
  for (let i = 0; i < opts.commits; i++) {
    ins.run();
    process.stdout.write(`${db.position().txid} ${now()}\n`);
    await sleep(opts.interval);
  }
  await db.sync!.flush(30_000);
  await db.sync!.close();
  db.close();
  process.stdout.write('done\n');
}

function summary(lags: number[]): string {
  const s = [...lags].sort((a, b) => a - b);
  const f = (x: number): string => `${x.toFixed(2)} ms`;
  return `n=${s.length} p50 ${f(percentile(s, 50))}  p99 ${f(percentile(s, 99))}  max ${f(s[s.length - 1] ?? Number.NaN)}`;
}

async function rssOf(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = /^process_resident_memory_bytes (\S+)/m.exec(text);
  return m ? Number(m[1]) / 2 ** 20 : Number.NaN;
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-lag-'));
  const hubDir = path.join(dir, 'hub');
  fs.mkdirSync(hubDir);
  const key = loadOrCreateKey(hubDir);
  const children: ChildProcess[] = [];
  try {
    const hub = spawn(
      process.execPath,
      [BIN, 'serve', '--data', hubDir, '--port', '0', '--log-level', 'warn'],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    children.push(hub);
    const url = await new Promise<string>((resolve) => {
      createInterface({ input: hub.stdout! }).on('line', (l) => {
        const m = /listening on (http:\/\/\S+)/.exec(l);
        if (m) resolve(m[1]!);
      });
    });
    const writerToken = await mintToken(key, { db: 'lag', role: 'writer', ttlSeconds: 3600 });
    const readerToken = await mintToken(key, { db: 'lag', role: 'reader', ttlSeconds: 3600 });
    const rssIdle = await rssOf(url);

    const writer = spawn(
      process.execPath,
      [
        fileURLToPath(import.meta.url),
        '--commits',
        String(opts.commits),
        '--interval',
        String(opts.interval),
        '--writer',
        JSON.stringify({ url, token: writerToken, file: path.join(dir, 'w.db') }),
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    children.push(writer);
    const committed = new Map<bigint, number>();
    let ready!: () => void;
    let done!: () => void;
    const isReady = new Promise<void>((r) => {
      ready = r;
    });
    const isDone = new Promise<void>((r) => {
      done = r;
    });
    createInterface({ input: writer.stdout! }).on('line', (l) => {
      if (l === 'ready') ready();
      else if (l === 'done') done();
      else {
        const [txid, t] = l.split(' ');
        committed.set(BigInt(txid!), Number(t));
      }
    });
    await isReady;

    // One real replica.
    const applied = new Map<bigint, number>();
    const replica = await openReplica(path.join(dir, 'r.db'), {
      hub: { url, db: 'lag', token: readerToken },
    });
    replica.on('snapshot', (s) => applied.set(s.txid, now()));
    await replica.ready();

    // N raw follow streams (what N replicas cost the hub). They only find snapshot boundaries (no
    // checksums), so that this one process can keep up with all of them.
    const received = new Map<bigint, number[]>();
    const aborts = new AbortController();
    const client = new HubClient({ url, db: 'lag', token: readerToken });
    const streams = Array.from({ length: opts.streams }, async () => {
      const body = await client.read({ follow: true, signal: aborts.signal });
      const frames = new FrameScanner();
      const reader = body.getReader();
      try {
        for (;;) {
          const { value, done: end } = await reader.read();
          if (end) return;
          const t = now();
          for (const txid of frames.push(value)) {
            let list = received.get(txid);
            if (!list) {
              list = [];
              received.set(txid, list);
            }
            list.push(t);
          }
        }
      } catch (e) {
        if ((e as Error).name !== 'AbortError') throw e;
      }
    });
    await sleep(500);
    const rssConnected = await rssOf(url);
    writer.stdin!.write('go\n');
    let rssPeak = rssConnected;
    const sampler = setInterval(() => {
      void rssOf(url).then((r) => {
        rssPeak = Math.max(rssPeak, r);
      });
    }, 250);

    await isDone;
    await sleep(500);
    clearInterval(sampler);
    aborts.abort();
    await Promise.allSettled(streams);
    await replica.close();

    const replicaLags: number[] = [];
    const streamLags: number[] = [];
    for (const [txid, t0] of committed) {
      const t1 = applied.get(txid);
      if (t1 !== undefined) replicaLags.push(t1 - t0);
      for (const t of received.get(txid) ?? []) streamLags.push(t - t0);
    }
    const stats = (lags: number[]): { n: number; p50: number; p99: number; max: number } => {
      const x = [...lags].sort((a, b) => a - b);
      return {
        n: x.length,
        p50: percentile(x, 50),
        p99: percentile(x, 99),
        max: x[x.length - 1] ?? Number.NaN,
      };
    };
    if (opts.json) {
      console.log(
        JSON.stringify({
          commits: committed.size,
          intervalMs: opts.interval,
          streams: opts.streams,
          replicaLagMs: stats(replicaLags),
          streamLagMs: stats(streamLags),
          hubRssMiB: { idle: rssIdle, connected: rssConnected, peak: rssPeak },
        }),
      );
    } else {
      console.log(
        `commits ${committed.size}, one every ${opts.interval} ms; hub, writer and readers in separate processes`,
      );
      console.log(`replica (append + fsync + apply in SQLite): ${summary(replicaLags)}`);
      console.log(`${opts.streams} raw follow streams (receive):  ${summary(streamLags)}`);
      console.log(
        `hub RSS: ${rssIdle.toFixed(1)} MiB idle, ${rssConnected.toFixed(1)} MiB with ${opts.streams + 1} followers, ${rssPeak.toFixed(1)} MiB peak during the commits`,
      );
    }
    if (replicaLags.length !== committed.size) {
      console.log(`MISSING: the replica applied ${replicaLags.length} of ${committed.size} commits`);
      process.exitCode = 1;
    }
  } finally {
    for (const c of children) c.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (opts.writer) {
  await runWriter(JSON.parse(opts.writer) as { url: string; token: string; file: string });
} else {
  await main();
}
