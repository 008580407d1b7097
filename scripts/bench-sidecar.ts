/**
 * `npm run bench:sidecar [-- --quick] [-- --runs N]`: what the WAL sidecar (`mycelite replicate`, issue 16)
 * costs a native application and how fast it captures. A better-sqlite3 writer in its own process (WAL
 * mode, synchronous NORMAL and FULL; autocommit single-row inserts and 100-row transactions) runs with
 * and without a sidecar on its database (the sidecar runs in this process, through the library call);
 * medians of interleaved runs. Then, with the writer paced at 200 commits/s, the time from each commit
 * returning in the writer to its snapshot being durable (fsynced) in the journal, p50/p99.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { replicate } from '../src/sidecar/replicate.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const opts = new Command('bench:sidecar')
  .option('--quick', 'small sizes, one run', false)
  .option('--runs <n>', 'runs per cell (median)', (v) => Number(v))
  .option('--dir <dir>', 'scratch directory on the disk to measure', '.bench')
  .parse()
  .opts<{ quick: boolean; runs?: number; dir: string }>();
const runs = opts.runs ?? (opts.quick ? 1 : 5);

interface WriterRun {
  elapsedMs: number;
  commits: number[];
}

function runWriter(file: string, n: number, rows: number, sync: string, pace = 0): Promise<WriterRun> {
  const p = spawn(
    process.execPath,
    [path.join(HERE, 'sidecar-writer.js'), file, String(n), String(rows), sync, String(pace)],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  let out = '';
  p.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  return new Promise((resolve, reject) =>
    p.on('close', (code) =>
      code === 0 ? resolve(JSON.parse(out) as WriterRun) : reject(new Error(`writer exited ${code}`)),
    ),
  );
}

function freshDb(): string {
  fs.mkdirSync(opts.dir, { recursive: true });
  const dir = fs.mkdtempSync(path.join(path.resolve(opts.dir), 'sidecar-'));
  return path.join(dir, 'app.db');
}

async function once(withSidecar: boolean, n: number, rows: number, sync: string): Promise<number> {
  const file = freshDb();
  // The database exists in WAL mode before the sidecar starts (as an application's would).
  await runWriter(file, 1, 1, sync);
  const r = withSidecar ? await replicate(file) : undefined;
  const w = await runWriter(file, n, rows, sync);
  if (r) {
    await r.catchUp();
    await r.close();
  }
  fs.rmSync(path.dirname(file), { recursive: true, force: true });
  return w.elapsedMs;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((s.length * p) / 100))]!;
}

const n = opts.quick ? 200 : 2000;
console.log(
  `WAL sidecar: native better-sqlite3 writer, ${n} transactions, ${runs} run(s), ${os.cpus().length} CPUs`,
);
console.log('| workload | synchronous | without sidecar (ms) | with sidecar (ms) | ratio |');
console.log('|---|---|---:|---:|---:|');
for (const [name, rows] of [
  ['autocommit 1 row', 1],
  ['100 rows / txn', 100],
] as const) {
  for (const sync of ['NORMAL', 'FULL']) {
    const without: number[] = [];
    const withS: number[] = [];
    for (let i = 0; i < runs; i++) {
      without.push(await once(false, n, rows, sync));
      withS.push(await once(true, n, rows, sync));
    }
    const a = median(without);
    const b = median(withS);
    console.log(`| ${name} | ${sync} | ${a.toFixed(0)} | ${b.toFixed(0)} | ${(b / a).toFixed(2)}× |`);
  }
}

// Commit → snapshot durable in the journal.
const file = freshDb();
await runWriter(file, 1, 1, 'NORMAL');
const r = await replicate(file);
const durable = new Map<bigint, number>();
r.on('snapshot', (s) => durable.set(s.txid, performance.timeOrigin + performance.now()));
const first = r.position().txid;
const paced = await runWriter(file, opts.quick ? 100 : 1000, 1, 'NORMAL', 5);
await r.catchUp();
await r.close();
const lat: number[] = [];
paced.commits.forEach((t, i) => {
  const d = durable.get(first + BigInt(i + 1));
  if (d !== undefined) lat.push(d - t);
});
fs.rmSync(path.dirname(file), { recursive: true, force: true });
console.log(
  `\ncommit → snapshot durable (200 commits/s, synchronous NORMAL): p50 ${pct(lat, 50).toFixed(2)} ms, p99 ${pct(lat, 99).toFixed(2)} ms (${lat.length} commits)`,
);
