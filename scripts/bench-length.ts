/**
 * History length (issue 22): what open() costs, in time and memory, for 1,000 and 100,000 (and, with
 * `--max 1000000`, 1,000,000) one-row transactions of history (`history: false`: nothing compacted away).
 * Each history is built once through open() with `synchronous = OFF` (no fsync per commit), closed
 * cleanly; then each size is opened in a fresh process (the engine loaded first, so the figure is open()
 * alone), sizes interleaved, `runs` times; medians. Prints one JSON object.
 *
 *   node dist/scripts/bench-length.js [--dir DIR] [--runs N] [--max N] [--quick]
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { open } from '../src/node/index.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    dir: { type: 'string', default: '.bench' },
    runs: { type: 'string', default: '5' },
    max: { type: 'string', default: '100000' },
    quick: { type: 'boolean', default: false },
  },
});
const runs = values.quick ? 1 : Number(values.runs);
const max = values.quick ? 5_000 : Number(values.max);
if (!Number.isSafeInteger(runs) || runs < 1 || !Number.isSafeInteger(max) || max < 1000) {
  process.stderr.write('bench-length: --runs must be ≥ 1 and --max ≥ 1000\n');
  process.exit(2);
}
const sizes = [1_000, 100_000, 1_000_000].filter((n) => n <= max);
if (!sizes.includes(max)) sizes.push(max);
const base = fs.mkdtempSync(path.join(values.dir, 'length-'));

async function build(n: number): Promise<{ file: string; journalMB: number; buildS: number }> {
  const file = path.join(base, `h${n}.db`);
  const started = performance.now();
  const db = await open(file, { history: false });
  db.exec('pragma synchronous = OFF; create table t(id integer primary key, v blob)');
  const insert = db.prepare('insert into t(v) values (randomblob(64))');
  for (let i = 0; i < n; i++) insert.run();
  await db.historyCheck;
  db.close();
  const journalMB = fs.statSync(`${file}-mycelite/journal`).size / 1e6;
  return { file, journalMB, buildS: (performance.now() - started) / 1000 };
}

interface Measured {
  openMs: number;
  checkMs: number;
  rssMiB: number;
  heapMiB: number;
  rows: number;
}

function measure(file: string): Measured {
  const r = spawnSync(
    process.execPath,
    ['--expose-gc', path.join(HERE, 'bench-length-open.js'), file, path.join(base, 'scratch.db')],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`bench-length-open ${file} failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout) as Measured;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

try {
  const built = [];
  for (const n of sizes) built.push({ n, ...(await build(n)) });
  const samples = new Map<number, Measured[]>(sizes.map((n) => [n, []]));
  for (let run = 0; run < runs; run++) {
    for (const b of built) {
      const m = measure(b.file);
      if (m.rows !== b.n) throw new Error(`${b.file}: ${m.rows} rows, expected ${b.n}`);
      samples.get(b.n)!.push(m);
    }
  }
  const out: Record<string, unknown> = {};
  for (const b of built) {
    const s = samples.get(b.n)!;
    const pick = (k: keyof Measured): number => Number(median(s.map((x) => x[k])).toFixed(1));
    out[`${b.n} txs`] = {
      journalMB: Number(b.journalMB.toFixed(1)),
      openMs: pick('openMs'),
      checkMs: pick('checkMs'),
      rssMiB: pick('rssMiB'),
      heapMiB: pick('heapMiB'),
    };
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
} finally {
  fs.rmSync(base, { recursive: true, force: true });
}
