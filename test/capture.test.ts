// Capture correctness: every committed transaction becomes exactly one snapshot, and the journal replays
// into a database byte-identical to the writer's, at every txid. Real files, real SQLite (wasm writer,
// native better-sqlite3 for checks), no mocks.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import BetterSqlite3 from 'better-sqlite3';
import { nodeRuntime, open } from '../src/node/index.js';
import { type LogEntry, logDatabase } from '../src/restore/restore.js';
import {
  assertReplay,
  cleanupTempDirs,
  fileHash,
  HELPERS,
  replayBytes,
  replayTo,
  sha256,
  tempDir,
} from './helpers/util.js';

after(cleanupTempDirs);

// ---------------------------------------------------------------------------------------------------
// synchronous × journal_mode
// ---------------------------------------------------------------------------------------------------

/** A fixed workload: SQL and how many snapshots it must add (rollbacks, reads and failures: none). */
const FIXED: [string, number][] = [
  ['CREATE TABLE t(id INTEGER PRIMARY KEY, a, b UNIQUE)', 1],
  ["INSERT INTO t(a, b) VALUES ('x', 1)", 1],
  ['SELECT count(*) FROM t', 0],
  [
    'BEGIN; INSERT INTO t(a, b) VALUES (randomblob(50000), 2); INSERT INTO t(a, b) VALUES (3.5, 3); COMMIT',
    1,
  ],
  ['BEGIN; INSERT INTO t(a, b) VALUES (randomblob(90000), 4); ROLLBACK', 0],
  ["INSERT INTO t(a, b) VALUES ('dup', 1)", 0], // UNIQUE violation in autocommit
  ['UPDATE t SET a = 1 WHERE id = -5', 0], // matches nothing
  ['BEGIN; SAVEPOINT s; DELETE FROM t; ROLLBACK TO s; UPDATE t SET a = random() WHERE id = 1; COMMIT', 1],
  ['BEGIN; SELECT * FROM t; COMMIT', 0],
  ['CREATE INDEX ia ON t(a)', 1],
  ['PRAGMA cache_size = 10', 0],
  [
    'WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300) INSERT INTO t(a, b) SELECT randomblob(2000), 100 + x FROM c',
    1,
  ],
  ['BEGIN; UPDATE t SET a = randomblob(2500); ROLLBACK', 0],
  ['DELETE FROM t WHERE id % 2 = 0', 1],
  ['VACUUM', 1],
  ['PRAGMA page_size = 8192; VACUUM', 1],
  ['DROP INDEX ia', 1],
  ['ALTER TABLE t ADD COLUMN c DEFAULT 5', 1],
  ['DROP TABLE t', 1],
];

describe('synchronous × journal_mode', () => {
  for (const sync of ['OFF', 'NORMAL', 'FULL', 'EXTRA']) {
    for (const mode of ['DELETE', 'TRUNCATE', 'PERSIST', 'MEMORY']) {
      test(`synchronous=${sync}, journal_mode=${mode}`, async () => {
        const dir = tempDir();
        const dbPath = path.join(dir, 'm.db');
        const db = await open(dbPath);
        try {
          db.exec(`PRAGMA synchronous = ${sync}`);
          assert.equal(String(db.pragma('journal_mode', { simple: true })).toLowerCase(), 'delete');
          assert.equal(
            String(db.pragma(`journal_mode = ${mode}`, { simple: true })).toLowerCase(),
            mode.toLowerCase(),
          );
          let expect = db.position().txid;
          for (const [sql, delta] of FIXED) {
            try {
              db.exec(sql);
            } catch (e) {
              assert.match((e as Error).message, /UNIQUE/, sql);
              if (db.inTransaction) db.exec('ROLLBACK');
            }
            expect += BigInt(delta);
            assert.equal(db.position().txid, expect, `txid after: ${sql}`);
            await assertReplay(dbPath, `after ${sql}`);
          }
          // One snapshot per committing step, numbered 1..n.
          const txids: bigint[] = [];
          for await (const e of logDatabase(nodeRuntime.fs, dbPath)) txids.push(e.txid);
          assert.deepEqual(
            txids,
            Array.from({ length: Number(expect) }, (_, i) => BigInt(i + 1)),
          );
        } finally {
          db.close();
        }
        await assertReplay(dbPath, 'after close');
      });
    }
  }

  test('journal_mode=OFF is refused or captured correctly', async () => {
    const dir = tempDir();
    const dbPath = path.join(dir, 'off.db');
    const db = await open(dbPath);
    try {
      db.exec('CREATE TABLE t(a)');
      let mode: unknown;
      try {
        mode = db.pragma('journal_mode = OFF', { simple: true });
      } catch (e) {
        assert.match((e as Error).message, /journal_mode=OFF|OFF/);
        return;
      }
      assert.equal(String(mode).toLowerCase(), 'off');
      db.exec("INSERT INTO t VALUES ('a')");
      db.exec('BEGIN; INSERT INTO t VALUES (randomblob(10000)); COMMIT');
      assert.equal(db.position().txid, 3n);
      await assertReplay(dbPath, 'journal_mode=OFF');
    } finally {
      db.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// Opening: bootstrap, WAL, second writer, reopen
// ---------------------------------------------------------------------------------------------------

describe('open', () => {
  test('bootstrap: a database made by native SQLite becomes txid 1', async () => {
    const dir = tempDir();
    const dbPath = path.join(dir, 'native.db');
    const n = new BetterSqlite3(dbPath);
    n.pragma('journal_mode = delete');
    n.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, a); CREATE INDEX ta ON t(a)');
    const ins = n.prepare('INSERT INTO t(a) VALUES (?)');
    for (let i = 0; i < 500; i++) ins.run(i % 7 === 0 ? Buffer.alloc(3000, i) : `row ${i}`);
    n.close();
    const original = fileHash(dbPath);

    const db = await open(dbPath);
    try {
      assert.equal(db.position().txid, 1n);
      assert.equal(fileHash(dbPath), original, 'bootstrap does not change the database');
      await assertReplay(dbPath, 'after bootstrap');
      assert.equal((db.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n, 500);
      db.exec("INSERT INTO t(a) VALUES ('more')");
      assert.equal(db.position().txid, 2n);
      await assertReplay(dbPath, 'after a write');
      db.exec(
        'BEGIN; DELETE FROM t WHERE id % 3 = 0; UPDATE t SET a = randomblob(100) WHERE id % 5 = 0; COMMIT',
      );
      assert.equal(db.position().txid, 3n);
      await assertReplay(dbPath, 'after a transaction');
    } finally {
      db.close();
    }
    const first = await replayTo(dbPath, { txid: 1n });
    assert.equal(fileHash(first), original, 'restore at txid 1 is the bootstrapped database');
  });

  test('journal_mode=WAL through Mycelite answers the mode it keeps, as SQLite does without shared memory; with locking_mode=EXCLUSIVE it is refused naming WAL', async () => {
    const dir = tempDir();
    const dbPath = path.join(dir, 'w.db');
    const db = await open(dbPath);
    try {
      db.exec('CREATE TABLE t(a)');
      // What an application that sets WAL at start sees: the pragma runs and returns the mode kept.
      assert.equal(db.pragma('journal_mode = WAL', { simple: true }), 'delete');
      db.pragma('journal_mode = TRUNCATE');
      assert.equal(db.pragma('journal_mode = WAL', { simple: true }), 'truncate');
      assert.equal(db.pragma('journal_mode', { simple: true }), 'truncate');
      db.exec('INSERT INTO t VALUES (1)');
      assert.equal(db.position().txid, 2n);
      assert.ok(!fs.existsSync(`${dbPath}-wal`), 'no WAL file');
      db.pragma('locking_mode = EXCLUSIVE');
      assert.throws(() => db.pragma('journal_mode = WAL'), /journal_mode=WAL.*EXCLUSIVE/);
      db.pragma('locking_mode = NORMAL');
      db.exec('INSERT INTO t VALUES (2)');
      assert.equal(db.position().txid, 3n);
      await assertReplay(dbPath, 'after WAL was asked for');
    } finally {
      db.close();
    }
  });

  test('a WAL database native SQLite left with committed frames in its WAL: open() has native SQLite fold them in and switch to rollback mode, warns, and captures from there', async () => {
    const dir = tempDir();
    const dbPath = path.join(dir, 'wal.db');
    // A native application that commits in WAL mode and dies without closing: its frames stay in the WAL.
    const app = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import D from 'better-sqlite3'; const d = new D(${JSON.stringify(dbPath)}); d.pragma('journal_mode = WAL');
         d.exec('create table t(a); with recursive c(x) as (select 1 union all select x + 1 from c where x < 100) insert into t select x from c');
         process.kill(process.pid, 'SIGKILL');`,
      ],
      { cwd: path.dirname(fileURLToPath(import.meta.url)), encoding: 'utf8' },
    );
    assert.equal(app.signal, 'SIGKILL', app.stderr);
    assert.ok(fs.statSync(`${dbPath}-wal`).size > 0, 'the frames are in the WAL');
    const warned: string[] = [];
    const db = await open(dbPath, { onWarning: (w) => warned.push(w.code) });
    try {
      assert.deepEqual(warned, ['left_wal']);
      assert.equal(db.warnings[0]?.code, 'left_wal');
      assert.equal((db.prepare('select count(*) as n from t').get() as { n: number }).n, 100);
      db.exec('insert into t values (101)');
    } finally {
      db.close();
    }
    assert.equal(fs.readFileSync(dbPath)[18], 1, 'rollback mode');
    assert.equal(fs.existsSync(`${dbPath}-wal`), false);
    await assertReplay(dbPath, 'after leaving WAL');
    const again = new BetterSqlite3(dbPath, { readonly: true });
    assert.equal((again.prepare('select count(*) as n from t').get() as { n: number }).n, 101);
    again.close();
  });

  test('a WAL database another connection has open is refused at open, saying what to do; nothing is created or changed', async () => {
    const dir = tempDir();
    const dbPath = path.join(dir, 'wal.db');
    const n = new BetterSqlite3(dbPath);
    try {
      n.pragma('journal_mode = WAL');
      n.exec('CREATE TABLE t(a); INSERT INTO t VALUES (1)');
      const before = fs.readFileSync(dbPath);
      await assert.rejects(open(dbPath), (e: Error) => {
        assert.match(e.message, /is in WAL mode and another process has it open/);
        assert.match(e.message, /mycelite replicate/);
        return true;
      });
      assert.ok(fs.readFileSync(dbPath).equals(before), 'the file is as it was');
      assert.deepEqual(fs.readdirSync(dir).sort(), ['wal.db', 'wal.db-shm', 'wal.db-wal']);
    } finally {
      n.close();
    }
  });

  for (const durability of ['journal', 'sqlite'] as const) {
    test(`durability ${durability}: native SQLite switching the open writer's database to WAL mode is seen at the writer's next transaction, after reads and its own commits (the VFS answers for the absent -wal without a stat only while the header bytes a stat saw stay)`, async () => {
      const dir = tempDir();
      const dbPath = path.join(dir, 'switch.db');
      const db = await open(dbPath, { durability, onWarning: () => {} });
      try {
        db.exec('CREATE TABLE t(a); INSERT INTO t VALUES (1)');
        const count = (): number => (db.prepare('select count(*) as n from t').get() as { n: number }).n;
        for (let i = 0; i < 5; i++) assert.equal(count(), 1);
        db.exec('INSERT INTO t VALUES (2)');
        for (let i = 0; i < 5; i++) assert.equal(count(), 2);
        const n = new BetterSqlite3(dbPath);
        try {
          assert.equal(n.pragma('journal_mode = WAL', { simple: true }), 'wal');
          n.exec('INSERT INTO t VALUES (3)');
          assert.ok(fs.statSync(`${dbPath}-wal`).size > 0, 'the commit is in the WAL');
          // Not the file's stale 2 rows: the writer has no shared memory for a WAL and refuses.
          assert.throws(count, /unable to open database file/);
          assert.throws(count, /unable to open database file/);
        } finally {
          n.close();
        }
        assert.equal(fs.existsSync(`${dbPath}-wal`), false);
        assert.throws(count, /unable to open database file/);
      } finally {
        try {
          db.close();
        } catch {
          // The outside change to WAL mode may keep the close from finishing: not what this test is about.
        }
      }
    });
  }

  for (const durability of ['journal', 'sqlite'] as const) {
    test(`durability ${durability}: the writer's own commits keep its -wal answered without a stat, and native SQLite switching to WAL mode after them, or after a rollback, is still seen`, async () => {
      const fileSize = nodeRuntime.fs.fileSize.bind(nodeRuntime.fs);
      let walStats = 0;
      nodeRuntime.fs.fileSize = (p: string): number => {
        if (p.endsWith('-wal')) walStats++;
        return fileSize(p);
      };
      const dir = tempDir();
      const dbPath = path.join(dir, 'own.db');
      try {
        const db = await open(dbPath, { durability, onWarning: () => {} });
        try {
          db.exec('CREATE TABLE t(a)');
          const ins = db.prepare('INSERT INTO t VALUES (?)');
          const count = (): number => (db.prepare('select count(*) as n from t').get() as { n: number }).n;
          for (const round of [0, 1]) {
            walStats = 0;
            for (let i = 0; i < 20; i++) ins.run(i);
            assert.ok(walStats <= 1, `${walStats} stats of -wal for 20 commits`);
            db.exec('BEGIN; INSERT INTO t VALUES (-1)');
            if (round === 1) {
              db.exec('ROLLBACK');
              const n = new BetterSqlite3(dbPath);
              try {
                assert.equal(n.pragma('journal_mode = WAL', { simple: true }), 'wal');
                n.exec('INSERT INTO t VALUES (99)');
                // The writer's next transaction, after its rollback, sees the switch (and refuses).
                assert.throws(count, /unable to open database file/);
                assert.throws(() => ins.run(100), /unable to open database file/);
              } finally {
                n.close();
              }
            } else {
              db.exec('COMMIT');
              assert.equal(count(), 21);
            }
          }
        } finally {
          try {
            db.close();
          } catch {
            // The switch to WAL mode may keep the close from finishing: not what this test is about.
          }
        }
      } finally {
        nodeRuntime.fs.fileSize = fileSize;
      }
    });
  }

  test('a second writer is refused, in another process and in this one', async () => {
    const dir = tempDir();
    const dbPath = path.join(dir, 'two.db');
    const db = await open(dbPath);
    try {
      db.exec('CREATE TABLE t(a)');
      const entry = fileURLToPath(new URL('../src/node/index.js', import.meta.url));
      const r = spawnSync(process.execPath, [path.join(HELPERS, 'second-writer.mjs'), entry, dbPath], {
        encoding: 'utf8',
        timeout: 30_000,
      });
      assert.equal(r.status, 0, r.stderr);
      const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { ok: boolean; message?: string };
      assert.equal(out.ok, false, 'the other process must not open the database');
      assert.match(out.message!, /another process/);

      await assert.rejects(open(dbPath), /another process/);
      // The refused opens did not disturb the writer.
      db.exec('INSERT INTO t VALUES (1)');
      assert.equal(db.position().txid, 2n);
      await assertReplay(dbPath, 'after refused second writers');
    } finally {
      db.close();
    }
    // Once closed, another process may open it.
    const entry = fileURLToPath(new URL('../src/node/index.js', import.meta.url));
    const r = spawnSync(process.execPath, [path.join(HELPERS, 'second-writer.mjs'), entry, dbPath], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.deepEqual(JSON.parse(r.stdout.trim()), { ok: true });
  });

  test('reopen: txids continue and replay == database', async () => {
    const dir = tempDir();
    const dbPath = path.join(dir, 're.db');
    for (let round = 0; round < 3; round++) {
      const db = await open(dbPath);
      try {
        if (round === 0) db.exec('CREATE TABLE t(a)');
        assert.equal(db.position().txid, BigInt(round * 3 + (round === 0 ? 1 : 0)));
        if (round === 0) {
          db.exec("INSERT INTO t VALUES ('a'); INSERT INTO t VALUES (randomblob(20000))");
        } else {
          db.exec(
            "INSERT INTO t VALUES ('a'); INSERT INTO t VALUES (randomblob(20000)); DELETE FROM t WHERE rowid = (SELECT min(rowid) FROM t)",
          );
        }
        assert.equal(db.position().txid, BigInt(round * 3 + 3));
        await assertReplay(dbPath, `round ${round}`);
      } finally {
        db.close();
      }
      await assertReplay(dbPath, `round ${round} after close`);
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// Huge transaction, restore by time and txid
// ---------------------------------------------------------------------------------------------------

describe('restore', () => {
  test('restore of a txid before the first names the whole range', async () => {
    const dir = tempDir();
    const dbPath = path.join(dir, 'zero.db');
    const db = await open(dbPath);
    try {
      db.exec('CREATE TABLE t(a); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)');
    } finally {
      db.close();
    }
    await assert.rejects(replayBytes(dbPath, { txid: 0n }), /txid 1 \(.*\) \.\. txid 3 \(/);
  });

  test('a ~60 MB transaction with a 1 MiB memory budget spills old pages and replays', async (t) => {
    const dir = tempDir();
    const dbPath = path.join(dir, 'huge.db');
    const spill = `${dbPath}-mycelite/spill`;
    const db = await open(dbPath, { memoryBudget: 1 << 20 });
    try {
      db.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, a)');
      // 8 MB of existing pages, so the big transaction overwrites pages whose old content must be kept.
      db.exec(
        'WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 80) INSERT INTO t(a) SELECT randomblob(100000) FROM c',
      );
      const rss = process.memoryUsage().rss;
      db.exec('BEGIN');
      db.exec('UPDATE t SET a = randomblob(100000)');
      db.exec(
        'WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 520) INSERT INTO t(a) SELECT randomblob(100000) FROM c',
      );
      assert.ok(fs.existsSync(spill), 'old pages past the budget are spilled to disk');
      db.exec('COMMIT');
      const grown = process.memoryUsage().rss - rss;
      assert.equal(db.position().txid, 3n);
      assert.ok(!fs.existsSync(spill), 'the spill file is deleted at commit');
      assert.deepEqual(
        fs.readdirSync(`${dbPath}-mycelite`).filter((f) => f.startsWith('spill')),
        [],
      );
      assert.ok(fs.statSync(dbPath).size > 60e6);
      await assertReplay(dbPath, 'after the huge transaction');
      // Informational only (never asserted): RSS growth during the 60 MB transaction.
      t.diagnostic(`rss growth ${(grown / 2 ** 20).toFixed(1)} MiB`);
    } finally {
      db.close();
    }
  });

  test('restore by time, by unknown txid and before the first snapshot', async () => {
    const dir = tempDir();
    const dbPath = path.join(dir, 'time.db');
    const db = await open(dbPath);
    const hashes: string[] = [];
    try {
      db.exec('CREATE TABLE t(a)');
      hashes.push(fileHash(dbPath));
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setTimeout(r, 25));
        db.exec(`INSERT INTO t VALUES (${i})`);
        hashes.push(fileHash(dbPath));
      }
    } finally {
      db.close();
    }
    const log: LogEntry[] = [];
    for await (const e of logDatabase(nodeRuntime.fs, dbPath)) log.push(e);
    assert.deepEqual(
      log.map((e) => e.txid),
      [1n, 2n, 3n, 4n],
    );
    for (let i = 0; i < log.length; i++) {
      const s = log[i]!;
      assert.equal(
        sha256(await replayBytes(dbPath, { at: s.timestamp })),
        hashes[i],
        `at txid ${s.txid}'s time`,
      );
      const next = log[i + 1];
      if (next && next.timestamp > s.timestamp + 1) {
        const mid = Math.floor((s.timestamp + next.timestamp) / 2);
        assert.equal(
          sha256(await replayBytes(dbPath, { at: mid })),
          hashes[i],
          `between ${s.txid} and ${next.txid}`,
        );
        assert.equal(sha256(await replayBytes(dbPath, { at: next.timestamp - 1 })), hashes[i]);
      }
    }
    assert.equal(sha256(await replayBytes(dbPath, { at: Date.now() + 1e6 })), hashes[3]);
    const earliest = new Date(log[0]!.timestamp).toISOString();
    await assert.rejects(replayBytes(dbPath, { at: log[0]!.timestamp - 1 }), (e: Error) => {
      assert.ok(e.message.includes(earliest), `${e.message} names the earliest point ${earliest}`);
      return true;
    });
    await assert.rejects(replayBytes(dbPath, { txid: 9n }), (e: Error) => {
      assert.match(e.message, /9/);
      assert.match(e.message, /txid 1 \(.*\) \.\. txid 4 \(/);
      return true;
    });
    // A failed restore leaves no output and no temporary file behind.
    assert.deepEqual(
      fs.readdirSync(dir).filter((f) => f.includes('replay') || f.includes('restoring')),
      [],
    );
  });
});
