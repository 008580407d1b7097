// A native SQLite application for the sidecar tests (better-sqlite3): the same workload as wal-writer.py.
// Usage: wal-writer.mjs DB N MODE [PAUSE_MS [AUTOCHECKPOINT_PAGES]] (default: SQLite's 1000).
import Database from 'better-sqlite3';

const [db, nArg, mode, pauseArg, autoArg] = process.argv.slice(2);
const n = Number(nArg);
const pause = Number(pauseArg ?? 0);
const con = new Database(db, { timeout: 10000 });
if (con.pragma('journal_mode = WAL', { simple: true }) !== 'wal') throw new Error('not wal');
if (autoArg !== undefined) con.pragma(`wal_autocheckpoint = ${Number(autoArg)}`);
const start = con.prepare('select k from meta').get().k;
const ins = con.prepare('insert into t(id, v) values (?, ?)');
const upd = con.prepare("update t set v = v || 'u' where id = ?");
const del = con.prepare('delete from t where id = ?');
const meta = con.prepare('update meta set k = ?');
const txn = con.transaction((k) => {
  ins.run(k, `r${k}${'x'.repeat(k % 97)}`);
  if (k % 3 === 0) upd.run(Math.floor(k / 2));
  if (k % 5 === 0) del.run(k - 4);
  if (k % 50 === 0) {
    con.exec(
      'with recursive c(x) as (select 1 union all select x + 1 from c where x < 100) insert into big(b) select randomblob(1000) from c',
    );
  }
  if (k % 50 === 25) con.exec('delete from big');
  meta.run(k);
});
const sleep = new Int32Array(new SharedArrayBuffer(4));
for (let k = start + 1; k <= start + n; k++) {
  txn(k);
  if (mode === 'truncate' && k % 40 === 0) {
    const t = performance.now();
    const [r] = con.pragma('wal_checkpoint(TRUNCATE)');
    console.log('checkpoint', r.busy, r.log, r.checkpointed, Math.round(performance.now() - t));
  }
  if (k % 10 === 0) console.log(k);
  if (pause > 0) Atomics.wait(sleep, 0, 0, pause);
}
console.log('done', start + n);
con.close();
