/**
 * Scale-out figures on NATS JetStream (docs/BENCHMARKS.md): a 3-node cluster (R3) on loopback, hubs
 * as `mycelite serve --storage nats://...` child processes, and this process as writers and readers.
 *
 *   node dist/scripts/scale.js [--dbs 8] [--snapshots 300] [--commits 300] [--interval 10] [--streams 100,1000]
 *
 * 1. Throughput: `--dbs` databases, each pushing its history one snapshot per request (as a writer
 *    committing one transaction at a time does), all at once, through 1 hub or spread over 2 hubs:
 *    snapshots/s stored (durable on the R3 stream).
 * 2. Lag: a real writer (open() with a hub) commits `--commits` times through hub A; N raw follow
 *    streams read through hub A (1 hub) or hub B (2 hubs). Lag = receive time − commit time, same clock.
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
import { open } from '../src/node/index.js';
import { EMPTY_POSITION } from '../src/protocol/index.js';
import { makeHistory, sampleStatements } from '../test/helpers/hub.js';
import { startNatsCluster } from '../test/helpers/nats-cluster.js';
import { FrameScanner, percentile } from './measure.js';

const BIN = fileURLToPath(new URL('../../bin/mycelite.js', import.meta.url));
const now = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const opts = new Command('scale')
  .option('--dbs <n>', 'databases pushing at once (throughput)', (v) => Number(v), 8)
  .option('--snapshots <n>', 'snapshots each database pushes (throughput)', (v) => Number(v), 300)
  .option('--commits <n>', 'commits of the lag writer', (v) => Number(v), 300)
  .option('--interval <ms>', 'pause between the lag writer commits (ms)', (v) => Number(v), 10)
  .option('--streams <list>', 'follow stream counts to measure lag with', '100,1000')
  .option('--json', 'print JSON lines instead of text', false)
  .parse()
  .opts<{
    dbs: number;
    snapshots: number;
    commits: number;
    interval: number;
    streams: string;
    json: boolean;
  }>();

async function startHubProc(keyDir: string, storage: string): Promise<{ url: string; proc: ChildProcess }> {
  const proc = spawn(
    process.execPath,
    [BIN, 'serve', '--data', keyDir, '--port', '0', '--log-level', 'warn', '--storage', storage],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const url = await new Promise<string>((resolve) => {
    createInterface({ input: proc.stdout! }).on('line', (l) => {
      const m = /listening on (http:\/\/\S+)/.exec(l);
      if (m) resolve(m[1]!);
    });
  });
  return { url, proc };
}

async function throughput(dir: string, key: Uint8Array, urls: string[], tag: string): Promise<number> {
  const histories = await Promise.all(
    Array.from({ length: opts.dbs }, (_, i) =>
      makeHistory(path.join(dir, `${tag}-${i}.db`), sampleStatements(opts.snapshots, 200)),
    ),
  );
  const started = now();
  await Promise.all(
    histories.map(async (h, i) => {
      const db = `${tag}-${i}`;
      const token = await mintToken(key, { db, role: 'writer', ttlSeconds: 3600 });
      const client = new HubClient({ url: urls[i % urls.length]!, db, token });
      const { epoch } = await client.takeLease(`bench-${i}`);
      let base = EMPTY_POSITION;
      for (const s of h.snapshots) {
        await client.push(s.bytes, { journalId: h.journalId, base, epoch });
        base = { txid: s.header.txid, checksum: s.header.postChecksum };
      }
    }),
  );
  return (opts.dbs * opts.snapshots) / ((now() - started) / 1000);
}

async function lag(
  dir: string,
  key: Uint8Array,
  writeUrl: string,
  readUrl: string,
  streams: number,
  tag: string,
) {
  const db = `lag-${tag}`;
  const wt = await mintToken(key, { db, role: 'writer', ttlSeconds: 3600 });
  const rt = await mintToken(key, { db, role: 'reader', ttlSeconds: 3600 });
  const w = await open(path.join(dir, `${db}.db`), { hub: { url: writeUrl, db, token: wt } });
  w.exec('create table t(id integer primary key, v blob)');
  await w.sync!.flush(30_000);
  const aborts = new AbortController();
  const client = new HubClient({ url: readUrl, db, token: rt });
  const committed = new Map<bigint, number>();
  const lags: number[] = [];
  const readers = Array.from({ length: streams }, async () => {
    let body: ReadableStream<Uint8Array> | undefined;
    for (let i = 0; !body; i++) {
      body = await client.read({ follow: true, signal: aborts.signal }).catch((e: unknown) => {
        if (i >= 5) throw e;
        return undefined;
      });
      if (!body) await sleep(200);
    }
    const frames = new FrameScanner();
    const reader = body.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        const t = now();
        for (const txid of frames.push(value)) {
          const t0 = committed.get(txid);
          if (t0 !== undefined) lags.push(t - t0);
        }
      }
    } catch (e) {
      if ((e as Error).name !== 'AbortError') throw e;
    }
  });
  await sleep(1000);
  const ins = w.prepare('insert into t(v) values (randomblob(200))');
  for (let i = 0; i < opts.commits; i++) {
    ins.run();
    committed.set(w.position().txid, now());
    await sleep(opts.interval);
  }
  await w.sync!.flush(30_000);
  const want = opts.commits * streams;
  for (let i = 0; i < 300 && lags.length < want; i++) await sleep(100);
  aborts.abort();
  await Promise.allSettled(readers);
  await w.sync!.close();
  w.close();
  const s = lags.sort((a, b) => a - b);
  return {
    received: s.length,
    expected: want,
    p50: percentile(s, 50),
    p99: percentile(s, 99),
    max: s.at(-1)!,
  };
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-scale-'));
  const keyDir = path.join(dir, 'key');
  fs.mkdirSync(keyDir);
  const key = loadOrCreateKey(keyDir);
  const cluster = await startNatsCluster(3);
  const hubs: ChildProcess[] = [];
  const out = (o: Record<string, unknown>): void => {
    console.log(
      opts.json
        ? JSON.stringify(o)
        : Object.entries(o)
            .map(([k, v]) => `${k}=${v}`)
            .join(' '),
    );
  };
  try {
    const a = await startHubProc(keyDir, cluster.url);
    const b = await startHubProc(keyDir, cluster.url);
    hubs.push(a.proc, b.proc);
    for (const [n, urls] of [
      [1, [a.url]],
      [2, [a.url, b.url]],
    ] as const) {
      const rate = await throughput(dir, key, [...urls], `tp${n}`);
      out({ test: 'throughput', hubs: n, dbs: opts.dbs, snapshotsPerSecond: Math.round(rate) });
    }
    for (const streams of opts.streams.split(',').map(Number)) {
      for (const n of [1, 2]) {
        const r = await lag(dir, key, a.url, n === 1 ? a.url : b.url, streams, `${n}-${streams}`);
        out({
          test: 'lag',
          hubs: n,
          streams,
          commits: opts.commits,
          intervalMs: opts.interval,
          received: `${r.received}/${r.expected}`,
          p50ms: r.p50.toFixed(1),
          p99ms: r.p99.toFixed(1),
          maxMs: r.max.toFixed(1),
        });
      }
    }
  } finally {
    for (const h of hubs) h.kill('SIGKILL');
    await cluster.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
