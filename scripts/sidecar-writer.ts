/**
 * The native application of `npm run bench:sidecar` (scripts/bench-sidecar.ts): better-sqlite3 in WAL
 * mode, N transactions of `rows` inserted 200-byte rows each, optionally paced. Prints one JSON line:
 * the elapsed time and each commit's wall-clock time (ms, sub-millisecond resolution).
 */
import BetterSqlite3 from 'better-sqlite3';

const [file, nArg, rowsArg, sync, paceArg] = process.argv.slice(2);
const n = Number(nArg);
const rows = Number(rowsArg);
const pace = Number(paceArg ?? 0);
const db = new BetterSqlite3(file!);
db.pragma('journal_mode = WAL');
db.pragma(`synchronous = ${sync}`);
db.exec('create table if not exists t(id integer primary key, v blob)');
const ins = db.prepare('insert into t(v) values (randomblob(200))');
const txn = db.transaction(() => {
  for (let i = 0; i < rows; i++) ins.run();
});
const commits: number[] = [];
const wait = new Int32Array(new SharedArrayBuffer(4));
const t0 = performance.now();
for (let i = 0; i < n; i++) {
  if (rows === 1) ins.run();
  else txn();
  commits.push(performance.timeOrigin + performance.now());
  if (pace > 0) Atomics.wait(wait, 0, 0, pace);
}
const elapsedMs = performance.now() - t0;
db.close();
process.stdout.write(`${JSON.stringify({ elapsedMs, commits })}\n`);
