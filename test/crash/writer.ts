/**
 * Crash-test writer: a child process that opens a database through Mycelite and commits transactions
 * until it is killed (test/crash/harness.ts sends SIGKILL at a random moment). open()'s durability comes
 * from MYCELITE_TEST_DURABILITY ('journal', the default, or 'sqlite').
 *
 *   node dist/test/crash/writer.js <db> <journal_mode> <synchronous> <seed> <acks-file>
 *
 * Every committed transaction of the main kind inserts a row `acks(n)` with a counter n (1, 2, 3, …);
 * AFTER the commit call returned, `n\n` is appended to the acks file with one write(2), which survives a
 * crash of this process. So the harness knows which commits the application saw acknowledged.
 * When the database is open (recovery done) the writer prints `ready\n` on stdout.
 */
import { openSync, writeSync } from 'node:fs';
import { open } from '../../src/node/index.js';
import { prng } from '../helpers/prng.js';

const [dbPath, journalMode = 'DELETE', synchronous = 'FULL', seedArg = '1', acksPath] = process.argv.slice(2);
if (!dbPath || !acksPath) {
  process.stderr.write('usage: writer.js <db> <journal_mode> <synchronous> <seed> <acks-file>\n');
  process.exit(2);
}

const rand = prng(Number(seedArg));
const int = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
const blob = (size: number): Uint8Array => {
  const b = new Uint8Array(size);
  // Cheap, not very compressible content.
  let x = int(1, 0x7fffffff);
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    b[i] = x >>> 16;
  }
  return b;
};
/** Mostly small rows, some bigger than a page (overflow chains). */
const rowSize = (): number => (rand() < 0.8 ? int(0, 600) : int(1000, 20_000));

// The harness may ask for frequent automatic compaction (kills then land inside compactions too).
const compactAt = Number(process.env['MYCELITE_TEST_COMPACT_AT'] ?? 0);
const durability = process.env['MYCELITE_TEST_DURABILITY'] === 'sqlite' ? 'sqlite' : 'journal';
const db = await open(dbPath, {
  durability,
  ...(compactAt > 0 ? { history: { compactAt, retain: '1s:all,forever:1s' } } : {}),
});
db.pragma(`journal_mode=${journalMode}`);
db.pragma(`synchronous=${synchronous}`);
db.exec(`
  CREATE TABLE IF NOT EXISTS acks(id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS data(id INTEGER PRIMARY KEY, k INTEGER, v BLOB);
  CREATE INDEX IF NOT EXISTS data_k ON data(k);
`);
const acksFd = openSync(acksPath, 'a');
let n = Number((db.prepare('SELECT coalesce(max(n), 0) FROM acks').pluck().get() as number) ?? 0);
writeSync(1, 'ready\n');

const insert = db.prepare('INSERT INTO data(k, v) VALUES (?, ?)');
const update = db.prepare(
  'UPDATE data SET v = ?, k = k + 1 WHERE id = (SELECT id FROM data WHERE id >= ? LIMIT 1)',
);
const del = db.prepare('DELETE FROM data WHERE id IN (SELECT id FROM data WHERE id >= ? LIMIT ?)');
const ack = db.prepare('INSERT INTO acks(n) VALUES (?)');
const count = db.prepare('SELECT count(*) FROM data').pluck();
const maxId = db.prepare('SELECT coalesce(max(id), 0) FROM data').pluck();

/** Random inserts, updates and deletes. */
function work(ops: number): void {
  const top = Number(maxId.get());
  for (let i = 0; i < ops; i++) {
    const r = rand();
    // Compacting runs are update-heavy, so the journal outgrows the database (compaction waits for that).
    if (r < (compactAt > 0 ? 0.2 : 0.55)) insert.run(int(0, 1000), blob(rowSize()));
    else if (r < 0.85) update.run(blob(rowSize()), int(0, top));
    else del.run(int(0, top), int(1, 5));
  }
}

/** Commits `body` with an ack row, then acknowledges it. */
function committed(body: () => void): void {
  const next = n + 1;
  db.exec('BEGIN');
  try {
    body();
    ack.run(next);
    db.exec('COMMIT');
  } catch (e) {
    if (db.inTransaction) db.exec('ROLLBACK');
    throw e;
  }
  n = next;
  writeSync(acksFd, `${n}\n`);
}

const tx = db.transaction((ops: number) => work(ops));

for (;;) {
  // Automatic compaction runs between transactions, on the event loop: let it.
  if (compactAt > 0) await new Promise((resolve) => setImmediate(resolve));
  const r = rand();
  if (r < 0.6) {
    committed(() => work(int(1, 12)));
  } else if (r < 0.7) {
    // db.transaction() plus a savepoint rolled back inside.
    committed(() => {
      tx(int(1, 5));
      db.exec('SAVEPOINT s');
      work(int(1, 10));
      db.exec('ROLLBACK TO s; RELEASE s');
    });
  } else if (r < 0.78) {
    // Explicit ROLLBACK of a transaction (sometimes one large enough to spill to the file).
    const big = rand() < 0.3;
    if (big) db.pragma('cache_size=20');
    db.exec('BEGIN');
    work(big ? int(50, 200) : int(1, 20));
    db.exec('ROLLBACK');
    if (big) db.pragma('cache_size=-2000');
  } else if (r < 0.86) {
    // A big transaction that spills the page cache to the database file before the commit.
    db.pragma('cache_size=20');
    try {
      committed(() => {
        for (let i = int(50, 250); i > 0; i--) insert.run(int(0, 1000), blob(int(500, 6000)));
        work(int(10, 40));
      });
    } finally {
      db.pragma('cache_size=-2000');
    }
  } else if (r < 0.89) {
    // Keep the database small: drop many rows (the file shrinks at the next VACUUM).
    const rows = Number(count.get());
    if (rows > 300) committed(() => del.run(0, rows - int(50, 200)));
  } else if (r < 0.91) {
    db.exec('VACUUM');
  } else if (r < 0.915) {
    // A page-size change: the snapshot is a full image.
    db.pragma(`page_size=${[1024, 4096, 8192][int(0, 2)]}`);
    db.exec('VACUUM');
  } else if (r < 0.93) {
    // A failing statement inside a transaction, then a rollback.
    db.exec('BEGIN');
    work(int(1, 5));
    try {
      db.exec('INSERT INTO acks(id, n) VALUES (1, -1)');
    } catch {
      // The UNIQUE constraint fails (acks row 1 exists) or not: either way roll back.
    }
    db.exec('ROLLBACK');
  } else {
    committed(() => work(1));
  }
}
