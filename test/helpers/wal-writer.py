# A native SQLite application for the sidecar tests (python3's sqlite3 module): commits transactions
# 1..N to a WAL database; transaction k leaves a state the test computes from k alone (test/replicate.test.ts).
# Usage: wal-writer.py DB N MODE [PAUSE_MS]; MODE "auto" (default auto-checkpoint) or "truncate" (also
# runs PRAGMA wal_checkpoint(TRUNCATE) every 40 transactions). Prints "k" every 10 commits and "done K".
import sqlite3
import sys
import time

db, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
pause = float(sys.argv[4]) / 1000 if len(sys.argv) > 4 else 0
con = sqlite3.connect(db, isolation_level=None, timeout=10)
if con.execute('pragma journal_mode=wal').fetchone()[0] != 'wal':
    sys.exit('not wal')
start = con.execute('select k from meta').fetchone()[0]
for k in range(start + 1, start + n + 1):
    con.execute('begin')
    con.execute('insert into t(id, v) values (?, ?)', (k, 'r%d' % k + 'x' * (k % 97)))
    if k % 3 == 0:
        con.execute("update t set v = v || 'u' where id = ?", (k // 2,))
    if k % 5 == 0:
        con.execute('delete from t where id = ?', (k - 4,))
    if k % 50 == 0:
        con.execute('with recursive c(x) as (select 1 union all select x + 1 from c where x < 100) '
                    'insert into big(b) select randomblob(1000) from c')
    if k % 50 == 25:
        con.execute('delete from big')
    con.execute('update meta set k = ?', (k,))
    con.execute('commit')
    if mode == 'truncate' and k % 40 == 0:
        t = time.monotonic()
        row = con.execute('pragma wal_checkpoint(TRUNCATE)').fetchone()
        print('checkpoint', row[0], row[1], row[2], round((time.monotonic() - t) * 1000), flush=True)
    if k % 10 == 0:
        print(k, flush=True)
    if pause:
        time.sleep(pause)
print('done', start + n, flush=True)
