/**
 * `node dist/scripts/bench-cli.js [--runs N] [--dir DIR]`: the wall time of one command-line call,
 * `mycelite exec DB "select 1"` (and `mycelite query`, `mycelite --version`), against `sqlite3 DB "select 1"`
 * and a bare `node -e 0`, each a fresh process, interleaved, medians. What a shell script or a cron job
 * pays per call (issue 18 asks for ≤ 150 ms on this machine).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BIN = path.join(HERE, '..', '..', 'bin', 'mycelite.js');
const opts = new Command('bench-cli')
  .option('--runs <n>', 'runs per command (median)', (v) => Number(v), 15)
  .option('--dir <dir>', 'scratch directory', '.bench')
  .option('--vs <bin>', "another checkout's bin/mycelite.js to time beside this one (e.g. before a change)")
  .parse()
  .opts<{ runs: number; dir: string; vs?: string }>();

fs.mkdirSync(opts.dir, { recursive: true });
const dir = fs.mkdtempSync(path.join(opts.dir, 'cli-'));
const db = path.join(dir, 'app.db');
const run = (cmd: string, args: string[]): number => {
  const t = performance.now();
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  const ms = performance.now() - t;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return ms;
};
run(process.execPath, [BIN, 'exec', db, 'create table t(a); insert into t values (1)']);
const hasSqlite3 = spawnSync('sqlite3', ['-version']).status === 0;
const cells: [string, string, string[]][] = [
  ['node -e 0', process.execPath, ['-e', '0']],
  ['mycelite --version', process.execPath, [BIN, '--version']],
  ['mycelite exec DB "select 1"', process.execPath, [BIN, 'exec', db, 'select 1']],
  ['mycelite query DB "select 1"', process.execPath, [BIN, 'query', db, 'select 1']],
  ...(opts.vs
    ? ([
        ['other: mycelite --version', process.execPath, [opts.vs, '--version']],
        ['other: mycelite exec DB "select 1"', process.execPath, [opts.vs, 'exec', db, 'select 1']],
      ] as [string, string, string[]][])
    : []),
  ...(hasSqlite3
    ? [['sqlite3 DB "select 1"', 'sqlite3', [db, 'select 1']] as [string, string, string[]]]
    : []),
];
const times = new Map<string, number[]>(cells.map(([name]) => [name, []]));
for (let i = 0; i < opts.runs; i++)
  for (const [name, cmd, args] of cells) times.get(name)!.push(run(cmd, args));
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const base = median(times.get('node -e 0')!);
console.log(`| command | median ms | over node -e 0 |`);
console.log(`|---|---:|---:|`);
for (const [name] of cells) {
  const m = median(times.get(name)!);
  console.log(`| ${name} | ${m.toFixed(0)} | ${(m - base).toFixed(0)} |`);
}
console.log(
  `(${opts.runs} interleaved runs each, fresh processes; ${hasSqlite3 ? '' : 'no sqlite3 here; '}load average ${(await import('node:os')).loadavg()[0]!.toFixed(1)})`,
);
fs.rmSync(dir, { recursive: true, force: true });
