/**
 * `npm run bench [-- --quick] [-- --runs N] [-- --json FILE]`: the workloads of
 * ../shared/bench/WORKLOADS.md for three configurations in one run — native better-sqlite3 (no
 * replication), our engine without capture, Mycelite with capture — each run in a fresh process and a
 * fresh directory on the real disk, configurations interleaved, medians. Then replication figures:
 * commit-to-replica lag through a hub on loopback, replica apply throughput, restore time against a file
 * copy, and the writer's peak RSS during one large transaction; shared databases (scripts/bench-shared.ts:
 * merges per second with 3 devices, device-to-device latency, the cost of a rebase); history length
 * (scripts/bench-length.ts: open() time and memory for 1,000 and 100,000 transactions of history).
 * Prints tables; writes JSON.
 * `--quick` shrinks everything for a CI smoke run (one run each; no thresholds anywhere).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import type { Config, RunResult, Workload } from './bench-run.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CONFIGS: Config[] = ['native', 'engine', 'mycelite', 'mycelite-sqlite'];
const WORKLOADS: Workload[] = ['a', 'b', 'c', 'r'];

const opts = new Command('bench')
  .description('Mycelite benchmarks (docs/BENCHMARKS.md)')
  .option('--quick', 'small sizes and one run each: a smoke test for CI', false)
  .option('--runs <n>', 'runs per configuration and workload (median reported)', (v) => Number(v))
  .option('--json <file>', 'where to write the results', 'bench-results.json')
  .option('--dir <dir>', 'scratch directory on the disk to measure (default: .bench/ here)', '.bench')
  .option('--skip-replication', 'only the workload table', false)
  .option('--skip-shared', 'without the shared-database figures', false)
  .option('--skip-length', 'without the history-length figures', false)
  .parse()
  .opts<{
    quick: boolean;
    runs?: number;
    json: string;
    dir: string;
    skipReplication: boolean;
    skipShared: boolean;
    skipLength: boolean;
  }>();

const runs = opts.runs ?? (opts.quick ? 1 : 5);
const scale = opts.quick ? 0.05 : 1;
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

function node(script: string, args: string[]): string {
  const r = spawnSync(process.execPath, ['--expose-gc', path.join(HERE, script), ...args], {
    encoding: 'utf8',
    maxBuffer: 1 << 26,
  });
  if (r.status !== 0) throw new Error(`${script} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

function workloadTable(base: string): Record<string, Record<Config, RunResult[]>> {
  const results: Record<string, Record<Config, RunResult[]>> = {};
  for (const w of WORKLOADS) {
    results[w] = { native: [], engine: [], mycelite: [], 'mycelite-sqlite': [] };
    for (let r = 0; r < runs; r++) {
      for (const c of r % 2 === 0 ? CONFIGS : [...CONFIGS].reverse()) {
        const dir = fs.mkdtempSync(path.join(base, `${w}-${c}-`));
        const out = node('bench-run.js', [
          '--config',
          c,
          '--workload',
          w,
          '--dir',
          dir,
          '--scale',
          String(scale),
        ]);
        results[w]![c].push(JSON.parse(out) as RunResult);
        fs.rmSync(dir, { recursive: true, force: true });
      }
      process.stderr.write('.');
    }
  }
  process.stderr.write('\n');
  return results;
}

function printWorkloads(results: Record<string, Record<Config, RunResult[]>>): Record<string, unknown> {
  const rows: Record<string, unknown> = {};
  console.log(
    `\nWorkloads (../shared/bench/WORKLOADS.md), median of ${runs}${opts.quick ? ', quick sizes' : ''}:`,
  );
  console.log(
    'workload | native ms | engine ms (×native) | mycelite ms (×native) | capture overhead | durability sqlite ms (×native) | journal/db | replay == db',
  );
  console.log('---|---:|---:|---:|---:|---:|---:|---');
  for (const [w, byConfig] of Object.entries(results)) {
    const ms = (c: Config): number => median(byConfig[c].map((r) => r.ms));
    const n = ms('native');
    const e = ms('engine');
    const m = ms('mycelite');
    const q = ms('mycelite-sqlite');
    const my = byConfig.mycelite;
    const ratio = median(my.map((r) => r.journalBytes / r.dbBytes));
    const replay = [...my, ...byConfig['mycelite-sqlite']].every((r) => r.replayEqual === true);
    rows[w] = {
      nativeMs: n,
      engineMs: e,
      myceliteMs: m,
      vsNative: m / n,
      engineVsNative: e / n,
      captureOverhead: m / e - 1,
      sqliteDurabilityMs: q,
      sqliteDurabilityVsNative: q / n,
      journalOverDb: ratio,
      replay,
    };
    console.log(
      `${w} | ${n.toFixed(0)} | ${e.toFixed(0)} (${(e / n).toFixed(2)}×) | ${m.toFixed(0)} (${(m / n).toFixed(2)}×) | ${((m / e - 1) * 100).toFixed(1)}% | ${q.toFixed(0)} (${(q / n).toFixed(2)}×) | ${w === 'r' ? '-' : `${ratio.toFixed(2)}×`} | ${replay ? 'yes' : 'NO'}`,
    );
  }
  return rows;
}

async function main(): Promise<void> {
  const base = path.resolve(opts.dir);
  fs.mkdirSync(base, { recursive: true });
  const started = Date.now();
  const machine = {
    cpus: `${os.cpus().length} × ${os.cpus()[0]?.model ?? '?'}`,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    date: new Date().toISOString(),
  };
  console.log(
    `Mycelite benchmarks on ${machine.cpus}, ${machine.memoryGiB} GiB, Node ${machine.node}, scratch ${base}`,
  );
  const out: Record<string, unknown> = { machine, quick: opts.quick, runs };
  try {
    out['workloads'] = printWorkloads(workloadTable(base));
    if (!opts.skipReplication) {
      const extra = JSON.parse(
        node('bench-replication.js', ['--dir', base, ...(opts.quick ? ['--quick'] : [])]),
      ) as Record<string, unknown>;
      out['replication'] = extra;
      console.log('\nReplication:');
      for (const [k, v] of Object.entries(extra))
        console.log(`  ${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`);
    }
    if (!opts.skipReplication && !opts.skipShared) {
      const shared = JSON.parse(
        node('bench-shared.js', ['--dir', base, ...(opts.quick ? ['--quick'] : [])]),
      ) as Record<string, unknown>;
      out['shared'] = shared;
      console.log(
        '\nShared databases (3 devices merging; device-to-device latency; rebase of 100 pending changes):',
      );
      for (const [k, v] of Object.entries(shared)) console.log(`  ${k}: ${JSON.stringify(v)}`);
    }
    if (!opts.skipLength) {
      const length = JSON.parse(
        node('bench-length.js', ['--dir', base, ...(opts.quick ? ['--quick'] : [])]),
      ) as Record<string, unknown>;
      out['length'] = length;
      console.log(
        '\nHistory length (open() with the engine loaded; RSS and heap it adds; background check):',
      );
      for (const [k, v] of Object.entries(length)) console.log(`  ${k}: ${JSON.stringify(v)}`);
    }
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
  }
  out['seconds'] = Math.round((Date.now() - started) / 1000);
  fs.writeFileSync(opts.json, `${JSON.stringify(out, null, 2)}\n`);
  console.log(`\n${out['seconds']} s; results in ${opts.json}`);
  const bad = Object.values(out['workloads'] as Record<string, { replay: boolean }>).some((w) => !w.replay);
  if (bad) process.exitCode = 1;
}

await main();
