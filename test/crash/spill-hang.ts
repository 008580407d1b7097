/**
 * Crash-test fixture: leaves a transaction half written to the database file, then waits to be killed.
 *
 *   node dist/test/crash/spill-hang.js <db> <journal_mode>
 *
 * Makes free pages (insert, delete), then in one transaction with a tiny page cache inserts enough rows
 * that SQLite spills dirty pages (reusing the free pages) into the database file before any commit,
 * prints `spilled\n` and sleeps. SQLite does not journal a free page it reuses (its old content is
 * garbage), so after the kill SQLite's rollback leaves those free pages with the new bytes.
 */
import { open } from '../../src/node/index.js';

const [dbPath, journalMode = 'DELETE'] = process.argv.slice(2);
const db = await open(dbPath!);
db.pragma(`journal_mode=${journalMode}`);
db.exec('CREATE TABLE t(a)');
const insert = db.prepare('INSERT INTO t VALUES (randomblob(3000))');
db.transaction(() => {
  for (let i = 0; i < 300; i++) insert.run();
})();
db.exec('DELETE FROM t');
db.pragma('cache_size=10');
db.exec('BEGIN');
for (let i = 0; i < 200; i++) insert.run();
process.stdout.write('spilled\n');
setInterval(() => {}, 1000);
