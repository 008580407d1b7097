/**
 * Power-loss harness (src/files/power-loss.ts), shared by test/power-loss.test.ts and
 * scripts/power-loss.ts. Small versions of the benchmark workloads a, b and c
 * (../shared/bench/WORKLOADS.md) run on a writer whose file system cuts the power at one sync point;
 * the files are then rewritten to what a disk would hold (strict: nothing unsynced; every directory change
 * but no unsynced data; or torn, seeded),
 * the writer is reopened (recovery) and checked:
 *
 *  - lost: the database is one of the writer's states (a digest of schema and rows after each commit,
 *    computed on native SQLite), at or after the last acknowledged commit (and at most one past it);
 *  - divergence: the journal's replay equals the database byte for byte (verifyDatabase), also after one
 *    more commit; `PRAGMA integrity_check` is ok.
 *
 * The replica's apply is driven the same way: a writer's journal is fed to a ReplicaStore (a reset, single
 * appends and batches), the power cut at one of its sync points; after recovery the replica must be the
 * writer's file at its position (never behind a snapshot whose append returned), then continue to the
 * writer's last state.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import type { FaultPlan, FaultyFileSystem } from '../../src/files/faulty-fs.js';
import type { Runtime } from '../../src/files/file-system.js';
import type { CrashPlan, PowerLossFileSystem, RecoverOptions } from '../../src/files/power-loss.js';
import { nodeRuntime } from '../../src/node/index.js';
import { ReplicaStore } from '../../src/replica/replica.js';
import { restoreDatabase, verifyDatabase } from '../../src/restore/restore.js';
import { type MyceliteDatabase, openWith } from '../../src/writer/open.js';
import { prng } from './prng.js';
import { snapshotsAfter } from './replica.js';
import { nativeIntegrity } from './util.js';

export type Durability = 'journal' | 'sqlite';
export type WorkloadName = 'a' | 'b' | 'c';

/** What a workload needs of a connection (Mycelite's and better-sqlite3's both have it). */
interface Db {
  exec(sql: string): unknown;
  prepare(sql: string): { run(...a: unknown[]): unknown };
}

/** Sizes of the small workloads (WORKLOADS.md has the full ones). */
export const SMALL = { aTx: 8, aRows: 50, b: 40, cSetupTx: 3, cSetupRows: 300, cTx: 3, cUpdates: 200 };

function rows(n: number, seed: number): [string, string][] {
  const rand = prng(seed);
  const hex = (bytes: number): string => {
    let s = '';
    for (let i = 0; i < bytes; i++)
      s += Math.floor(rand() * 256)
        .toString(16)
        .padStart(2, '0');
    return s;
  };
  return Array.from({ length: n }, () => [hex(8), hex(42)]);
}

/** What a writer does between transactions, midway through a workload (none for the reference run). */
export interface Midway {
  /** Compacts the history (every point older than a second merged). */
  compact?(): void;
  /** Closes the connection and opens it again; returns the new one. */
  reopen?(): Promise<Db>;
}

/**
 * Runs workload `w` (WORKLOADS.md's schema and settings, small sizes); `ack()` after every statement or
 * transaction that committed, once it returned. `synchronous` and `journalMode` override FULL and DELETE. Midway (after a third and
 * after two thirds of the transactions) the writer compacts its history and is closed and reopened.
 */
export async function runWorkload(
  first: Db,
  w: WorkloadName,
  ack: () => void,
  synchronous = 'FULL',
  midway: Midway = {},
  journalMode = 'DELETE',
): Promise<void> {
  let db = first;
  const settings = (): void => {
    db.exec(`PRAGMA journal_mode = ${journalMode}`);
    db.exec(`PRAGMA synchronous = ${synchronous}`);
  };
  db.exec('PRAGMA page_size = 4096');
  settings();
  db.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT NOT NULL, v TEXT NOT NULL)');
  ack();
  db.exec('CREATE INDEX t_k ON t(k)');
  ack();
  /** Between transactions `i` and `i + 1` of `n`. */
  const between = async (i: number, n: number): Promise<void> => {
    if (i === Math.floor(n / 3)) midway.compact?.();
    if (i === Math.floor((2 * n) / 3) && midway.reopen) {
      db = await midway.reopen();
      settings();
    }
  };
  const insertTx = (data: [string, string][], from: number, count: number): void => {
    const ins = db.prepare('INSERT INTO t(k, v) VALUES (?, ?)');
    db.exec('BEGIN');
    for (let i = from; i < from + count; i++) ins.run(data[i]![0], data[i]![1]);
    db.exec('COMMIT');
    ack();
  };
  if (w === 'a') {
    const data = rows(SMALL.aTx * SMALL.aRows, 20261127);
    for (let t = 0; t < SMALL.aTx; t++) {
      await between(t, SMALL.aTx);
      insertTx(data, t * SMALL.aRows, SMALL.aRows);
    }
    return;
  }
  if (w === 'b') {
    const data = rows(SMALL.b, 20261127);
    for (const [i, [k, v]] of data.entries()) {
      await between(i, SMALL.b);
      db.prepare('INSERT INTO t(k, v) VALUES (?, ?)').run(k, v);
      ack();
    }
    return;
  }
  const total = SMALL.cSetupTx * SMALL.cSetupRows;
  const data = rows(total, 20261127);
  for (let t = 0; t < SMALL.cSetupTx; t++) insertTx(data, t * SMALL.cSetupRows, SMALL.cSetupRows);
  const rand = prng(20261128);
  const values = rows(SMALL.cTx * SMALL.cUpdates, 20261129).map((r) => r[1]);
  for (let t = 0; t < SMALL.cTx; t++) {
    await between(t, SMALL.cTx);
    const upd = db.prepare('UPDATE t SET v = ? WHERE id = ?');
    db.exec('BEGIN');
    for (let i = t * SMALL.cUpdates; i < (t + 1) * SMALL.cUpdates; i++) {
      upd.run(values[i], 1 + Math.floor(rand() * total));
    }
    db.exec('COMMIT');
    ack();
  }
}

/** Digest of what the workload's commits decide: the schema and every row. */
function digest(db: BetterSqlite3.Database): string {
  const h = createHash('sha256');
  for (const r of db
    .prepare("select name, sql from sqlite_master where name not like 'sqlite_%' order by name")
    .all())
    h.update(JSON.stringify(r));
  if (db.prepare("select 1 from sqlite_master where name = 't'").get()) {
    for (const r of db.prepare('select id, k, v from t order by id').raw().iterate())
      h.update(JSON.stringify(r));
  }
  return h.digest('hex');
}

/** The writer's states: `states[i]` is the digest after the i-th acknowledged commit (native SQLite). */
export async function referenceStates(w: WorkloadName): Promise<string[]> {
  const db = new BetterSqlite3(':memory:');
  try {
    const states = [digest(db)];
    await runWorkload(db as unknown as Db, w, () => states.push(digest(db)));
    return states;
  } finally {
    db.close();
  }
}

/** A scratch directory on tmpfs when there is one: the model decides durability, not the disk. */
export function scratchDir(prefix: string): string {
  const base = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
  return fs.mkdtempSync(path.join(base, prefix));
}

/** The runtime of `power` (SQLite's VFS keeps the first runtime's file system for the process). */
export function powerRuntime(power: PowerLossFileSystem): Runtime {
  return { fs: power, resolve: nodeRuntime.resolve, tempPath: nodeRuntime.tempPath };
}

/** One crash: where, and how the files are recovered. */
export interface CrashCase {
  /** A sync point, or 'end': the power cut after the workload (or after the fault), the writer still open. */
  at: CrashPlan | 'end';
  /** How the files are recovered (default strict: nothing unsynced survives). */
  recover?: RecoverOptions;
  /**
   * A call to fail first (`power` must wrap `fs`): the program stops at the error it gets, closes the
   * connection, then the power goes. A commit reported failed must then be absent after recovery (but a
   * write-back's failure, documented as durable in the journal).
   */
  fault?: { fs: FaultyFileSystem; plan: FaultPlan };
}

export interface CaseResult {
  /** Sync points the run passed (the dry run's count is the number of crash points). */
  points: string[];
  /** Commits acknowledged before the power cut. */
  acked: number;
  /** Index of the recovered state among the writer's states (-1: none of them). */
  state: number;
  problems: string[];
}

/** Opens a writer through `rt`, runs `w`, cuts the power as `c` says, recovers the files and checks them. */
export async function writerCase(
  power: PowerLossFileSystem,
  dir: string,
  durability: Durability,
  w: WorkloadName,
  states: string[],
  c: CrashCase,
  synchronous = 'FULL',
  journalMode = 'DELETE',
): Promise<CaseResult> {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'w.db');
  power.track(dir);
  if (c.at !== 'end') power.crashAt(c.at);
  let acked = 0;
  let db: MyceliteDatabase | undefined;
  const problems: string[] = [];
  const open = (): Promise<MyceliteDatabase> =>
    openWith(powerRuntime(power), file, { durability, memoryBudget: 64 << 10 });
  const midway: Midway = {
    compact: () => db!.compact({ retain: '1s:all,forever:1s', now: Date.now() + 10_000 }),
    reopen: async () => {
      db!.close();
      db = undefined;
      db = await open();
      return db;
    },
  };
  const fault = c.fault;
  if (fault) {
    fault.fs.fired.length = 0;
    fault.fs.arm(fault.plan);
  }
  let failure: unknown;
  try {
    db = await open();
    await runWorkload(db, w, () => acked++, synchronous, midway, journalMode);
  } catch (e) {
    failure = e;
  }
  fault?.fs.disarm();
  const fired = (fault?.fs.fired.length ?? 0) > 0;
  if (failure !== undefined && !power.crashed && !fired)
    problems.push(`failed without a power cut: ${(failure as Error).message}`);
  if (fired && failure === undefined) problems.push('the failed fsync reached no caller');
  if (c.at !== 'end' && !power.crashed)
    problems.push('the power was not cut: the crash point was never reached');
  const points = [...power.points];
  if (fired) {
    // The program stops at the error and closes the connection; then the power goes.
    try {
      db?.close();
    } catch {
      // a close after an I/O error may report it again
    }
  }
  power.crash('end');
  try {
    db?.close();
  } catch {
    // the connection's last writes fail: the power is off
  }
  power.recover(c.recover);
  power.untrack();
  // A commit reported failed is absent, but for journal durability's write-back (durable in the journal).
  const text = `${String(failure)} ${String((failure as Error | undefined)?.cause ?? '')}`;
  const most = fired && !/is in the journal, but writing it/.test(text) ? acked : acked + 1;
  const state = await checkWriter(power, file, durability, states, acked, most, problems);
  return { points, acked, state, problems };
}

/** Reopens the writer (recovery) and checks it; returns the index of its state. */
async function checkWriter(
  power: PowerLossFileSystem,
  file: string,
  durability: Durability,
  states: string[],
  acked: number,
  most: number,
  problems: string[],
): Promise<number> {
  let state = -1;
  try {
    const again = await openWith(powerRuntime(power), file, { durability });
    try {
      const d = digestOf(again);
      state = states.indexOf(d);
      if (state < 0) problems.push(`the database is none of the writer's states (acknowledged: ${acked})`);
      else if (state < acked) problems.push(`lost: acknowledged ${acked} commits, the database has ${state}`);
      else if (state > most)
        problems.push(`${state - acked} unacknowledged commits appeared (at most ${most - acked})`);
      again.exec('CREATE TABLE IF NOT EXISTS after_recovery(x)');
      again.exec('INSERT INTO after_recovery VALUES (1)');
    } finally {
      again.close();
    }
    const v = await verifyDatabase(nodeRuntime.fs, file, `${file}.verify`);
    if (!v.ok) problems.push(`replay != database: ${v.problem}`);
    fs.rmSync(`${file}.verify`, { force: true });
    const integrity = nativeIntegrity(file);
    if (integrity !== 'ok') problems.push(`integrity: ${integrity}`);
  } catch (e) {
    problems.push(`recovery failed: ${(e as Error).message}`);
  }
  return state;
}

/** The digest of a Mycelite connection's state (same as `digest`, through our engine). */
function digestOf(db: MyceliteDatabase): string {
  const h = createHash('sha256');
  const schema = db
    .prepare("select name, sql from sqlite_master where name not like 'sqlite_%' order by name")
    .all() as Record<string, unknown>[];
  for (const r of schema) h.update(JSON.stringify({ name: r['name'], sql: r['sql'] }));
  if (db.prepare("select 1 from sqlite_master where name = 't'").get()) {
    for (const r of db.prepare('select id, k, v from t order by id').raw().all()) h.update(JSON.stringify(r));
  }
  return h.digest('hex');
}

/** A writer's journal and file to feed replicas, and the file's sha256 at every txid. */
export interface Source {
  file: string;
  journal: string;
  last: bigint;
  hashAt(txid: bigint): Promise<string>;
}

/**
 * Runs workload `w` on a writer in `dir` (through `power`, untracked: SQLite's VFS keeps the file system
 * of the first open in the process) and returns it as a source for replicas.
 */
export async function writerSource(
  power: PowerLossFileSystem,
  dir: string,
  w: WorkloadName,
): Promise<Source> {
  const file = path.join(dir, 'source.db');
  const db = await openWith(powerRuntime(power), file, { memoryBudget: 64 << 10 });
  await runWorkload(db, w, () => {});
  // A shrink and a page size change too: the replica's post step and full images.
  db.exec('DELETE FROM t WHERE id % 3 = 0');
  db.exec('VACUUM');
  db.exec('PRAGMA page_size = 8192');
  db.exec('VACUUM');
  db.exec("INSERT INTO t(k, v) VALUES ('x', 'y')");
  const last = db.position().txid;
  db.close();
  const cache = new Map<bigint, string>();
  return {
    file,
    journal: `${file}-mycelite/journal`,
    last,
    async hashAt(txid) {
      let h = cache.get(txid);
      if (!h) {
        const out = path.join(dir, `at-${txid}.db`);
        await restoreDatabase(nodeRuntime.fs, file, out, { target: { txid }, force: true });
        h = createHash('sha256').update(fs.readFileSync(out)).digest('hex');
        fs.rmSync(out, { force: true });
        cache.set(txid, h);
      }
      return h;
    },
  };
}

/** Feeds every snapshot of `src` after the store's position: a reset first, then singles and batches of 3. */
async function feed(store: ReplicaStore, src: Source, acked: (txid: bigint) => void): Promise<void> {
  const { file, snaps } = snapshotsAfter(src.journal, store.position?.txid ?? 0n);
  let i = 0;
  if (!store.position && snaps.length > 0) {
    const s = snaps[i++]!;
    acked((await store.reset(file, s.bytes, s.header)).snapshot.txid);
  }
  while (i < snaps.length) {
    const n = i % 2 === 0 ? 3 : 1;
    const batch = snaps.slice(i, i + n);
    i += batch.length;
    const done = await store.appendBatch(batch);
    acked(done[done.length - 1]!.txid);
  }
}

/** A replica fed from `src` with the power cut as `c` says; after recovery it must be the writer's bytes. */
export async function replicaCase(
  power: PowerLossFileSystem,
  dir: string,
  src: Source,
  c: CrashCase,
): Promise<CaseResult> {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'r.db');
  power.track(dir);
  if (c.at !== 'end') power.crashAt(c.at);
  let acked = 0n;
  let store: ReplicaStore | undefined;
  const problems: string[] = [];
  const fault = c.fault;
  if (fault) {
    fault.fs.fired.length = 0;
    fault.fs.arm(fault.plan);
  }
  let failure: unknown;
  try {
    store = await ReplicaStore.open(powerRuntime(power), file);
    await feed(store, src, (t) => {
      acked = t;
    });
  } catch (e) {
    failure = e;
  }
  fault?.fs.disarm();
  const fired = (fault?.fs.fired.length ?? 0) > 0;
  if (failure !== undefined && !power.crashed && !fired)
    problems.push(`failed without a power cut: ${(failure as Error).message}`);
  if (fired && failure === undefined) problems.push('the failed fsync reached no caller');
  if (c.at !== 'end' && !power.crashed)
    problems.push('the power was not cut: the crash point was never reached');
  const points = [...power.points];
  power.crash('end');
  try {
    store?.close();
  } catch {
    // the power is off
  }
  power.recover(c.recover);
  power.untrack();
  let state = -1;
  try {
    const again = await ReplicaStore.open(powerRuntime(power), file);
    try {
      const at = again.position?.txid ?? 0n;
      state = Number(at);
      if (at < acked) problems.push(`lost: snapshot ${acked} was applied, the replica is at ${at}`);
      const check = again.checkDatabase();
      if (!check.ok) problems.push(`replica database ${check.checksum} != its journal's ${check.expected}`);
      if (
        at > 0n &&
        createHash('sha256').update(fs.readFileSync(file)).digest('hex') !== (await src.hashAt(at))
      )
        problems.push(`the replica at txid ${at} is not the writer's file at ${at}`);
      await feed(again, src, () => {});
    } finally {
      again.close();
    }
    if (createHash('sha256').update(fs.readFileSync(file)).digest('hex') !== (await src.hashAt(src.last)))
      problems.push("after continuing, the replica is not the writer's last state");
  } catch (e) {
    problems.push(`recovery failed: ${(e as Error).message}`);
  }
  return { points, acked: Number(acked), state, problems };
}
