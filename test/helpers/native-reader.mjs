// Test helper: a *native* SQLite reader (better-sqlite3) in its own process. Reads `SELECT count(*),
// sum(x) FROM t` in a loop (and PRAGMA integrity_check every so often) until told to stop, checking the
// writer's invariant: count is a multiple of 100 and sum is 0. SQLITE_BUSY is retried.
// Usage: node native-reader.mjs <db path>. Writes one JSON line per event on stdout:
//   { ready: true } once the table is visible; { violation: ... } for every broken invariant or error;
//   { done: true, reads, busy, checks, maxCount } on SIGTERM or when stdin closes.
import Database from 'better-sqlite3';

const dbPath = process.argv[2];
const db = new Database(dbPath, { timeout: 0, fileMustExist: true });
const stats = { reads: 0, busy: 0, checks: 0, maxCount: 0, violations: 0 };
const say = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
let stop = false;
const finish = () => {
  stop = true;
};
process.on('SIGTERM', finish);
process.stdin.on('end', finish);
process.stdin.resume();

const isBusy = (e) => /SQLITE_BUSY|database is locked/.test(`${e.code} ${e.message}`);
let ready = false;
let i = 0;

function step() {
  const until = Date.now() + 20;
  while (Date.now() < until) {
    i++;
    try {
      const row = db.prepare('SELECT count(*) AS n, coalesce(sum(x), 0) AS s FROM t').get();
      stats.reads++;
      if (!ready) {
        ready = true;
        say({ ready: true });
      }
      stats.maxCount = Math.max(stats.maxCount, row.n);
      if (row.n % 100 !== 0 || row.s !== 0) {
        stats.violations++;
        say({ violation: `count ${row.n}, sum ${row.s}` });
      }
      if (i % 25 === 0) {
        const r = db.pragma('integrity_check', { simple: true });
        stats.checks++;
        if (r !== 'ok') {
          stats.violations++;
          say({ violation: `integrity_check: ${r}` });
        }
      }
    } catch (e) {
      if (isBusy(e)) stats.busy++;
      else if (!ready && /no such table/.test(e.message)) {
        // The writer has not created the table yet.
      } else {
        stats.violations++;
        say({ violation: `${e.code ?? ''} ${e.message}` });
      }
    }
  }
  if (stop) {
    db.close();
    say({ done: true, ...stats });
    process.exit(0);
  }
  setImmediate(step);
}
step();
