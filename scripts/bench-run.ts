/**
 * One benchmark run in a fresh process (scripts/bench.ts starts it): one workload of
 * ../shared/bench/WORKLOADS.md under one configuration, in a fresh directory on the real disk. Prints one
 * JSON line: wall time of the timed part, database and journal bytes, and for Mycelite whether a replay
 * of the journal equals the database.
 *
 *   node dist/scripts/bench-run.js --config native|engine|mycelite|mycelite-sqlite --workload a|b|c|r --dir DIR [--scale F]
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { prng } from '../test/helpers/prng.js';

/** mycelite: journal durability (the default); mycelite-sqlite: durability 'sqlite' (SQLite's rollback journal). */
export type Config = 'native' | 'engine' | 'mycelite' | 'mycelite-sqlite';
export type Workload = 'a' | 'b' | 'c' | 'r';

export interface RunResult {
  ms: number;
  /** CPU time (user + system, all threads) of the timed part: steadier than `ms` on a shared machine. */
  cpuMs: number;
  dbBytes: number;
  journalBytes: number;
  replayEqual: boolean | null;
}

const SETUP = [
  'PRAGMA page_size = 4096',
  'PRAGMA journal_mode = DELETE',
  'PRAGMA synchronous = FULL',
  'CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT NOT NULL, v TEXT NOT NULL)',
  'CREATE INDEX t_k ON t(k)',
];

interface Db {
  exec(sql: string): unknown;
  prepare(sql: string): { run(...a: unknown[]): unknown; get(...a: unknown[]): unknown };
  close(): unknown;
}

/**
 * Rows of the workloads: k = 16 hex characters, v = 84 hex characters, from a fixed seed. The strings are
 * flat (one hex encoding each, not 42 concatenations): a rope's flattening would otherwise land inside
 * the timed part, in whichever configuration first reads it.
 */
function rows(n: number, seed: number): [string, string][] {
  const rand = prng(seed);
  const hexOf = (bytes: number): string => {
    const b = Buffer.alloc(bytes);
    for (let i = 0; i < bytes; i++) b[i] = Math.floor(rand() * 256);
    return b.toString('hex');
  };
  return Array.from({ length: n }, () => [hexOf(8), hexOf(42)]);
}

/** CPU time of this process so far, ms (user + system, every thread). */
function cpuNow(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** CPU time when the timed part started (set by settle). */
let cpu0 = 0;

/** Collects the data generation's garbage before the clock starts (bench.ts runs with --expose-gc). */
function settle(): number {
  (globalThis as { gc?: () => void }).gc?.();
  cpu0 = cpuNow();
  return performance.now();
}

async function openDb(config: Config, file: string): Promise<Db> {
  if (config === 'native') {
    const Native = (await import('better-sqlite3')).default;
    return new Native(file) as unknown as Db;
  }
  if (config === 'mycelite' || config === 'mycelite-sqlite') {
    const { open } = await import('../src/node/index.js');
    return (await open(file, { durability: config === 'mycelite' ? 'journal' : 'sqlite' })) as unknown as Db;
  }
  // Our engine over the Mycelite VFS, capture off: the same SQLite build and file I/O, no journal.
  const { loadSqlite } = await import('../src/engine/sqlite.js');
  const { Database } = await import('../src/engine/database.js');
  const { installMyceliteVfs } = await import('../src/vfs/vfs.js');
  const { nodeRuntime } = await import('../src/node/index.js');
  const sqlite3 = await loadSqlite();
  installMyceliteVfs(sqlite3, 'mycelite', { fs: nodeRuntime.fs, tempPath: nodeRuntime.tempPath });
  return Database.open(sqlite3, file, { vfs: 'mycelite' }) as unknown as Db;
}

function insertTx(db: Db, data: [string, string][], from: number, count: number): void {
  const ins = db.prepare('INSERT INTO t(k, v) VALUES (?, ?)');
  db.exec('BEGIN');
  for (let i = from; i < from + count; i++) ins.run(data[i]![0], data[i]![1]);
  db.exec('COMMIT');
}

/** Runs `workload`; returns the milliseconds of its timed part. `scale` shrinks it (quick mode). */
async function runWorkload(db: Db, workload: Workload, scale: number, seed: number): Promise<number> {
  const n = (x: number): number => Math.max(1, Math.round(x * scale));
  for (const s of SETUP) db.exec(s);
  if (workload === 'a') {
    const txs = n(200);
    const data = rows(txs * 100, seed);
    const t0 = settle();
    for (let t = 0; t < txs; t++) insertTx(db, data, t * 100, 100);
    return performance.now() - t0;
  }
  if (workload === 'b') {
    const count = n(2000);
    const data = rows(count, seed);
    const ins = db.prepare('INSERT INTO t(k, v) VALUES (?, ?)');
    const t0 = settle();
    for (let i = 0; i < count; i++) ins.run(data[i]![0], data[i]![1]);
    return performance.now() - t0;
  }
  // c and r share the setup: 50 transactions × 1,000 inserts (untimed).
  const setupTx = n(50);
  const data = rows(setupTx * 1000, seed);
  for (let t = 0; t < setupTx; t++) insertTx(db, data, t * 1000, 1000);
  const total = setupTx * 1000;
  const rand = prng(seed + 1);
  const id = (): number => 1 + Math.floor(rand() * total);
  if (workload === 'c') {
    const txs = n(10);
    const per = 5000;
    const values = rows(txs * per, seed + 2).map((r) => r[1]);
    const ids = Array.from({ length: txs * per }, id);
    const upd = db.prepare('UPDATE t SET v = ? WHERE id = ?');
    const t0 = settle();
    for (let t = 0; t < txs; t++) {
      db.exec('BEGIN');
      for (let i = t * per; i < (t + 1) * per; i++) upd.run(values[i], ids[i]);
      db.exec('COMMIT');
    }
    return performance.now() - t0;
  }
  const count = n(100_000);
  const ids = Array.from({ length: count }, id);
  const sel = db.prepare('SELECT v FROM t WHERE id = ?');
  const t0 = settle();
  for (let i = 0; i < count; i++) sel.get(ids[i]);
  return performance.now() - t0;
}

async function replayEqual(file: string): Promise<boolean> {
  const { nodeRuntime } = await import('../src/node/index.js');
  const { restoreDatabase } = await import('../src/restore/restore.js');
  const out = `${file}.replay`;
  await restoreDatabase(nodeRuntime.fs, file, out, { force: true });
  const h = (f: string): string => createHash('sha256').update(fs.readFileSync(f)).digest('hex');
  const same = h(out) === h(file);
  fs.rmSync(out, { force: true });
  return same;
}

/** Runs one configuration of one workload in `dir` (this process) and returns the result. */
export async function benchRun(
  config: Config,
  workload: Workload,
  dir: string,
  scale = 1,
): Promise<RunResult> {
  const file = path.join(dir, `${workload}.db`);
  const db = await openDb(config, file);
  const ms = await runWorkload(db, workload, scale, 20261127);
  const cpuMs = cpuNow() - cpu0;
  db.close();
  const journal = path.join(`${file}-mycelite`, 'journal');
  const journalBytes = fs.existsSync(journal) ? fs.statSync(journal).size : 0;
  return {
    ms,
    cpuMs,
    dbBytes: fs.statSync(file).size,
    journalBytes,
    replayEqual: config.startsWith('mycelite') ? await replayEqual(file) : null,
  };
}

if (process.argv[1] && import.meta.url.endsWith(path.basename(process.argv[1]))) {
  const { values } = parseArgs({
    options: {
      config: { type: 'string' },
      workload: { type: 'string' },
      dir: { type: 'string' },
      scale: { type: 'string', default: '1' },
    },
  });
  const r = await benchRun(
    values.config as Config,
    values.workload as Workload,
    values.dir!,
    Number(values.scale),
  );
  process.stdout.write(`${JSON.stringify(r)}\n`);
}
