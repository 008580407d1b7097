/**
 * Micro-benchmark of the engine binding (src/engine) against sqlite-wasm's oo1 API and native
 * better-sqlite3: 100,000 point selects `SELECT v FROM t WHERE id = ?` on a 50,000-row
 * in-memory table. Prints µs per operation.
 *
 * Run: `npx tsc -p . && node dist/scripts/bench-engine.js`
 */
import BetterSqlite3 from 'better-sqlite3';
import { Database } from '../src/engine/database.js';
import { loadSqlite } from '../src/engine/sqlite.js';

const ROWS = 50_000;
const OPS = 100_000;
const SQL = 'SELECT v FROM t WHERE id = ?';

/** Deterministic pseudo-random ids, shared by every contender. */
const ids = new Int32Array(OPS);
let seed = 12345;
for (let i = 0; i < OPS; i++) {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  ids[i] = 1 + (seed % ROWS);
}

const ROUNDS = 7;

/**
 * Runs `op` over all ids ROUNDS times (after a warm-up pass), checks that every lookup found a
 * row, and prints the median and best µs per call.
 */
function measure(name: string, op: (id: number) => unknown): number {
  for (let i = 0; i < 20_000; i++) op(ids[i]!);
  const times: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    let found = 0;
    const t0 = performance.now();
    for (let i = 0; i < OPS; i++) if (op(ids[i]!) !== undefined) found++;
    times.push(((performance.now() - t0) * 1000) / OPS);
    if (found !== OPS) throw new Error(`${name}: only ${found} of ${OPS} lookups found a row`);
  }
  times.sort((a, b) => a - b);
  const median = times[ROUNDS >> 1]!;
  console.log(
    `${name.padEnd(44)} ${median.toFixed(3)} µs/op (median of ${ROUNDS}; best ${times[0]!.toFixed(3)})`,
  );
  return median;
}

const SCHEMA = 'CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)';

/** Fills table t with ROWS rows in one transaction through the given callbacks. */
function populate(exec: (sql: string) => void, insert: (id: number, v: string) => void): void {
  exec('BEGIN');
  for (let id = 1; id <= ROWS; id++) insert(id, `value-${id.toString(36)}-${(id * 7919) % 1000}`);
  exec('COMMIT');
}

const sqlite3 = await loadSqlite();

// This engine.
const db = Database.open(sqlite3, ':memory:').exec(SCHEMA);
const ins = db.prepare('INSERT INTO t(id, v) VALUES (?, ?)');
populate(
  (sql) => db.exec(sql),
  (id, v) => ins.run(id, v),
);
const sel = db.prepare(SQL);
const selPluck = db.prepare(SQL).pluck();
measure('engine      stmt.get(id)        (row object)', (id) => sel.get(id));
measure('engine      stmt.pluck().get(id)', (id) => selPluck.get(id));

// sqlite-wasm oo1.
const odb = new sqlite3.oo1.DB(':memory:', 'c');
odb.exec(SCHEMA);
odb.exec('BEGIN');
const oins = odb.prepare('INSERT INTO t(id, v) VALUES (?, ?)');
for (let id = 1; id <= ROWS; id++) {
  oins.bind([id, `value-${id.toString(36)}-${(id * 7919) % 1000}`]).stepReset();
}
oins.finalize();
odb.exec('COMMIT');
const osel = odb.prepare(SQL);
measure('oo1         bind/step/get(0)/reset', (id) => {
  osel.bind(1, id);
  const v = osel.step() ? osel.get(0) : undefined;
  osel.reset();
  return v;
});
measure('oo1         db.selectValue(sql, id)', (id) => odb.selectValue(SQL, id));

// better-sqlite3 (native).
const bdb = new BetterSqlite3(':memory:');
bdb.exec(SCHEMA);
const bins = bdb.prepare('INSERT INTO t(id, v) VALUES (?, ?)');
populate(
  (sql) => bdb.exec(sql),
  (id, v) => bins.run(id, v),
);
const bsel = bdb.prepare(SQL);
const bselPluck = bdb.prepare(SQL).pluck();
measure('better-sqlite3 stmt.get(id)     (row object)', (id) => bsel.get(id));
measure('better-sqlite3 stmt.pluck().get(id)', (id) => bselPluck.get(id));

osel.finalize();
odb.close();
db.close();
bdb.close();
