/**
 * One honest timing of workload a (../shared/bench/WORKLOADS.md): 200 transactions × 100 inserts,
 * DELETE/FULL, page_size 4096, on the real disk. Native better-sqlite3 vs Mycelite (capture on),
 * interleaved, fresh directory per run, median of 5. The full harness is a later issue (npm run bench).
 * Each configuration runs in a fresh child process: `node dist/scripts/workload-a.js [--runs N]`.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const SETUP = [
  'PRAGMA page_size = 4096',
  'PRAGMA journal_mode = DELETE',
  'PRAGMA synchronous = FULL',
  'CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT NOT NULL, v TEXT NOT NULL)',
  'CREATE INDEX t_k ON t(k)',
];

function rows(n: number): [string, string][] {
  return Array.from({ length: n }, () => [randomBytes(8).toString('hex'), randomBytes(42).toString('hex')]);
}

async function child(config: string, dir: string): Promise<void> {
  const data = rows(200 * 100);
  const file = path.join(dir, 'a.db');
  let db: {
    exec(s: string): unknown;
    prepare(s: string): { run(...a: unknown[]): unknown };
    close(): unknown;
  };
  if (config === 'native') {
    const Native = (await import('better-sqlite3')).default;
    db = new Native(file);
  } else {
    const { open } = await import('../src/node/index.js');
    db = await open(file);
  }
  for (const s of SETUP) db.exec(s);
  const ins = db.prepare('INSERT INTO t(k, v) VALUES (?, ?)');
  const t0 = performance.now();
  for (let t = 0; t < 200; t++) {
    db.exec('BEGIN');
    for (let i = 0; i < 100; i++) {
      const [k, v] = data[t * 100 + i]!;
      ins.run(k, v);
    }
    db.exec('COMMIT');
  }
  const ms = performance.now() - t0;
  db.close();
  const journal = path.join(dir, 'a.db-mycelite', 'journal');
  const jb = fs.existsSync(journal) ? fs.statSync(journal).size : 0;
  process.stdout.write(JSON.stringify({ ms, dbBytes: fs.statSync(file).size, journalBytes: jb }));
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { child: { type: 'string' }, dir: { type: 'string' }, runs: { type: 'string', default: '5' } },
  });
  if (values.child) return child(values.child, values.dir!);
  const me = fileURLToPath(import.meta.url);
  const base = fs.mkdtempSync(path.join(process.cwd(), '.bench-'));
  const results: Record<string, { ms: number; dbBytes: number; journalBytes: number }[]> = {
    native: [],
    mycelite: [],
  };
  try {
    for (let r = 0; r < Number(values.runs); r++) {
      for (const config of ['native', 'mycelite']) {
        const dir = fs.mkdtempSync(path.join(base, `${config}-`));
        const out = spawnSync(process.execPath, [me, '--child', config, '--dir', dir], { encoding: 'utf8' });
        if (out.status !== 0) throw new Error(`${config} run failed: ${out.stderr}`);
        results[config]!.push(JSON.parse(out.stdout));
      }
    }
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const n = median(results.native!.map((x) => x.ms));
  const m = median(results.mycelite!.map((x) => x.ms));
  const last = results.mycelite!.at(-1)!;
  console.log(
    `workload a, median of ${values.runs}: native ${n.toFixed(0)} ms, mycelite ${m.toFixed(0)} ms, ratio ${(m / n).toFixed(2)}x`,
  );
  console.log(
    `journal ${last.journalBytes} bytes / db ${last.dbBytes} bytes = ${(last.journalBytes / last.dbBytes).toFixed(2)}x`,
  );
}

await main();
