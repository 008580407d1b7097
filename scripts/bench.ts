/**
 * `npm run bench [-- --quick] [-- --runs N] [-- --json FILE] [-- --workloads r]`: the workloads of
 * ../shared/bench/WORKLOADS.md for four configurations in one run — native better-sqlite3 (no
 * replication), our engine without capture, Mycelite with capture, Mycelite with durability 'sqlite' —
 * each run in a fresh process and a fresh directory on the real disk, configurations interleaved,
 * medians; the same on tmpfs (`--tmpfs`, /dev/shm by default: where an fsync costs nothing, the CPU cost)
 * for native, engine and Mycelite; `mycelite exec DB "select 1"` against the sqlite3 shell (process start
 * to exit). Then replication figures:
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
/** On tmpfs: the writer against native and against our engine alone (durability 'sqlite' adds nothing there). */
const TMPFS_CONFIGS: Config[] = ['native', 'engine', 'mycelite'];
const WORKLOADS: Workload[] = ['a', 'b', 'c', 'r'];

const opts = new Command('bench')
  .description('Mycelite benchmarks (docs/BENCHMARKS.md)')
  .option('--quick', 'small sizes and one run each: a smoke test for CI', false)
  .option('--runs <n>', 'runs per configuration and workload (median reported)', (v) => Number(v))
  .option('--json <file>', 'where to write the results', 'bench-results.json')
  .option('--dir <dir>', 'scratch directory on the disk to measure (default: .bench/ here)', '.bench')
  .option(
    '--tmpfs <dir>',
    'scratch directory on tmpfs for the CPU-cost table (default /dev/shm when it exists)',
    fs.existsSync('/dev/shm') ? '/dev/shm' : '',
  )
  .option('--no-tmpfs', 'without the tmpfs table')
  .option(
    '--workloads <list>',
    'which workloads, comma-separated (e.g. r: the point selects alone)',
    (v) => v.split(',').map((w) => w.trim()),
    ['a', 'b', 'c', 'r'],
  )
  .option('--skip-replication', 'only the workload table', false)
  .option('--skip-shared', 'without the shared-database figures', false)
  .option('--skip-length', 'without the history-length figures', false)
  .parse()
  .opts<{
    quick: boolean;
    runs?: number;
    json: string;
    dir: string;
    tmpfs: string | false;
    workloads: string[];
    skipReplication: boolean;
    skipShared: boolean;
    skipLength: boolean;
  }>();

const workloads = opts.workloads.map((w) => {
  if (!WORKLOADS.includes(w as Workload)) throw new Error(`unknown workload ${w} (${WORKLOADS.join(', ')})`);
  return w as Workload;
});
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

function workloadTable(base: string, configs = CONFIGS): Record<string, Record<Config, RunResult[]>> {
  const results: Record<string, Record<Config, RunResult[]>> = {};
  for (const w of workloads) {
    results[w] = { native: [], engine: [], mycelite: [], 'mycelite-sqlite': [] };
    for (let r = 0; r < runs; r++) {
      for (const c of r % 2 === 0 ? configs : [...configs].reverse()) {
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

/** The medians both workload tables show: native, engine and Mycelite ms, their ratios, journal/db. */
function common(byConfig: Record<Config, RunResult[]>): {
  ms: (c: Config) => number;
  row: Record<string, number>;
  text: string;
  journalOverDb: number;
} {
  const ms = (c: Config): number => median(byConfig[c].map((r) => r.ms));
  const [n, e, m] = [ms('native'), ms('engine'), ms('mycelite')];
  return {
    ms,
    row: {
      nativeMs: n,
      engineMs: e,
      myceliteMs: m,
      vsNative: m / n,
      engineVsNative: e / n,
      captureOverhead: m / e - 1,
    },
    text: `${n.toFixed(0)} | ${e.toFixed(0)} (${(e / n).toFixed(2)}×) | ${m.toFixed(0)} (${(m / n).toFixed(2)}×) | ${((m / e - 1) * 100).toFixed(1)}%`,
    journalOverDb: median(byConfig.mycelite.map((r) => r.journalBytes / r.dbBytes)),
  };
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
    const { ms, row, text, journalOverDb } = common(byConfig);
    const n = ms('native');
    const q = ms('mycelite-sqlite');
    const replay = [...byConfig.mycelite, ...byConfig['mycelite-sqlite']].every(
      (r) => r.replayEqual === true,
    );
    rows[w] = { ...row, sqliteDurabilityMs: q, sqliteDurabilityVsNative: q / n, journalOverDb, replay };
    console.log(
      `${w} | ${text} | ${q.toFixed(0)} (${(q / n).toFixed(2)}×) | ${w === 'r' ? '-' : `${journalOverDb.toFixed(2)}×`} | ${replay ? 'yes' : 'NO'}`,
    );
  }
  return rows;
}

/** The tmpfs table: the writer's and the engine's CPU cost against native (no fsync cost to hide it). */
function printTmpfs(
  results: Record<string, Record<Config, RunResult[]>>,
  dir: string,
): Record<string, unknown> {
  const rows: Record<string, unknown> = {};
  console.log(`\nOn tmpfs (${dir}), median of ${runs}${opts.quick ? ', quick sizes' : ''}:`);
  console.log(
    'workload | native ms | engine ms (×native) | mycelite ms (×native) | capture overhead | CPU ms native / engine / mycelite (mycelite ×native) | journal/db',
  );
  console.log('---|---:|---:|---:|---:|---:|---:');
  for (const [w, byConfig] of Object.entries(results)) {
    const { row, text, journalOverDb } = common(byConfig);
    const cpu = (c: Config): number => median(byConfig[c].map((r) => r.cpuMs));
    const [nc, ec, mc] = [cpu('native'), cpu('engine'), cpu('mycelite')];
    const replay = byConfig.mycelite.every((r) => r.replayEqual === true);
    rows[w] = {
      ...row,
      cpuMs: { native: nc, engine: ec, mycelite: mc },
      cpuVsNative: mc / nc,
      engineCpuVsNative: ec / nc,
      journalOverDb,
      replay,
    };
    console.log(
      `${w} | ${text} | ${nc.toFixed(0)} / ${ec.toFixed(0)} / ${mc.toFixed(0)} (${(mc / nc).toFixed(2)}×) | ${w === 'r' ? '-' : `${journalOverDb.toFixed(2)}×`}`,
    );
  }
  return rows;
}

/**
 * `mycelite exec DB "select 1"` against `sqlite3 DB "select 1"` (when the shell is on PATH): wall time
 * from spawn to exit, interleaved, medians. The database is made by Mycelite first (so exec opens an
 * existing journal, as a user's second command does).
 */
function startupFigure(base: string): Record<string, unknown> {
  const dir = fs.mkdtempSync(path.join(base, 'exec-'));
  const db = path.join(dir, 'app.db');
  const cli = path.join(HERE, '..', '..', 'bin', 'mycelite.js');
  const time = (cmd: string, args: string[]): number => {
    const t0 = performance.now();
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    const ms = performance.now() - t0;
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
    return ms;
  };
  time(process.execPath, [cli, 'exec', db, 'create table t(x); insert into t values (1)']);
  const shell = spawnSync('sqlite3', ['-version'], { encoding: 'utf8' }).status === 0;
  const mine: number[] = [];
  const theirs: number[] = [];
  const n = opts.quick ? 1 : Math.max(5, runs);
  for (let r = 0; r < n; r++) {
    mine.push(time(process.execPath, [cli, 'exec', db, 'select 1']));
    if (shell) theirs.push(time('sqlite3', [db, 'select 1']));
  }
  fs.rmSync(dir, { recursive: true, force: true });
  const out: Record<string, unknown> = { myceliteMs: median(mine), runs: n };
  if (shell) {
    out['sqlite3Ms'] = median(theirs);
    out['ratio'] = median(mine) / median(theirs);
  }
  return out;
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
    if (opts.tmpfs) {
      const tmp = fs.mkdtempSync(path.join(opts.tmpfs, 'mycelite-bench-'));
      try {
        out['tmpfs'] = printTmpfs(workloadTable(tmp, TMPFS_CONFIGS), opts.tmpfs);
      } finally {
        fs.rmSync(tmp, { recursive: true, force: true });
      }
    }
    const startup = startupFigure(base);
    out['exec select 1'] = startup;
    console.log(`\nmycelite exec DB "select 1" vs sqlite3 DB "select 1": ${JSON.stringify(startup)}`);
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
  const bad = [out['workloads'], out['tmpfs'] ?? {}].some((t) =>
    Object.values(t as Record<string, { replay: boolean }>).some((w) => !w.replay),
  );
  if (bad) process.exitCode = 1;
}

await main();
