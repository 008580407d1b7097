/**
 * What recording each local transaction's logical change costs (the session's preupdate hook plus
 * take(): changeset generation and a new session), and what re-applying one costs. Not a test.
 *
 *   npx tsc -p . && node dist/scripts/measure-changes.js [transactions]
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Database } from '../src/engine/database.js';
import { loadSqlite } from '../src/engine/sqlite.js';
import { open } from '../src/node/index.js';
import { applyLocalChange } from '../src/shared/apply.js';
import { ChangeRecorder, type LocalChange } from '../src/shared/changes.js';

const N = Number(process.argv[2] ?? 2000);
const SETUP =
  'CREATE TABLE IF NOT EXISTS item(id TEXT PRIMARY KEY, name TEXT, qty INTEGER, note TEXT);' +
  'CREATE INDEX IF NOT EXISTS item_name ON item(name);';

interface Workload {
  name: string;
  /** The SQL of transaction `i`. */
  sql: (i: number) => string;
  count: number;
}

const workloads: Workload[] = [
  {
    name: 'insert 1 row',
    sql: (i) => `INSERT INTO item VALUES ('k${i}', 'name ${i}', ${i}, 'a note of some length')`,
    count: N,
  },
  { name: 'update 1 row', sql: (i) => `UPDATE item SET qty = qty + 1 WHERE id = 'k${i % N}'`, count: N },
  {
    name: 'insert 1000 rows',
    sql: (i) =>
      `WITH RECURSIVE n(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM n WHERE v < 1000) ` +
      `INSERT INTO item SELECT 'b${i}-' || v, 'bulk', v, 'x' FROM n`,
    count: 20,
  },
];

/** Microseconds per transaction of `w` on `db`, with `after` run after each one (timed too). */
function run(db: Database, w: Workload, after: () => void): number {
  const start = performance.now();
  for (let i = 0; i < w.count; i++) {
    db.exec(`BEGIN; ${w.sql(i)}; COMMIT`);
    after();
  }
  return ((performance.now() - start) * 1000) / w.count;
}

async function measure(label: string, openDb: (name: string) => Promise<Database>): Promise<void> {
  console.log(`\n${label}: µs per transaction (${N} single-row transactions, 20 of 1000 rows)`);
  console.log('workload           | plain | recorded + take() | of which take() | changeset bytes | apply');
  const plain = await openDb('plain');
  const recorded = await openDb('recorded');
  const hub = await openDb('hub');
  for (const db of [plain, recorded, hub]) db.exec(SETUP);
  const recorder = new ChangeRecorder(recorded);
  for (const w of workloads) {
    const base = run(plain, w, () => {});
    let takeMs = 0;
    let bytes = 0;
    const taken: LocalChange[] = [];
    const withRecorder = run(recorded, w, () => {
      const t = performance.now();
      const change = recorder.take();
      takeMs += performance.now() - t;
      bytes += change.changeset.byteLength;
      taken.push(change);
    });
    const t = performance.now();
    for (const change of taken) {
      const outcome = applyLocalChange(hub, change);
      if (!outcome.applied) throw new Error(`not applied: ${outcome.rejected}`);
    }
    const apply = ((performance.now() - t) * 1000) / w.count;
    const takeUs = (takeMs * 1000) / w.count;
    console.log(
      `${w.name.padEnd(18)} | ${base.toFixed(0).padStart(5)} | ${withRecorder.toFixed(0).padStart(17)} | ` +
        `${takeUs.toFixed(0).padStart(15)} | ${(bytes / w.count).toFixed(0).padStart(15)} | ${apply.toFixed(0).padStart(5)}`,
    );
  }
  recorder.close();
  for (const db of [plain, recorded, hub]) db.close();
}

const sqlite3 = await loadSqlite();
await measure('in memory (engine only)', async () => Database.open(sqlite3, ':memory:'));
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-changes-'));
try {
  await measure('Mycelite files (journal durability, fsync)', (name) => open(path.join(dir, `${name}.db`)));
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
