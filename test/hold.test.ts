// Journal durability (docs/ARCHITECTURE.md, "Journal durability"): SQLite's writes held until the commit's
// snapshot is in our journal, SQLite's rollback journal moved out of the way, the synced marker and redo
// at open. Every case runs real SQLite on real files.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { loadHash } from '../src/format/index.js';
import { readSyncedMarker, writeSyncedMarker } from '../src/journal/synced-marker.js';
import { type MyceliteDatabase, nodeRuntime, open, openReadonly } from '../src/node/index.js';
import { verifyDatabase } from '../src/restore/restore.js';
import { assertReplay, cleanupTempDirs, fileHash, nativeIntegrity, tempDir } from './helpers/util.js';

after(() => cleanupTempDirs());

type Durability = 'journal' | 'sqlite';

/** Deterministic steps (no RANDOM()): each durability must produce the same states. */
const STEPS: [string, (db: MyceliteDatabase) => void][] = [
  [
    'schema',
    (db) =>
      db.exec(
        'PRAGMA page_size=4096; CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v BLOB); CREATE INDEX t_k ON t(k)',
      ),
  ],
  [
    'inserts',
    (db) =>
      db.transaction(() => {
        const ins = db.prepare('INSERT INTO t(k, v) VALUES (?, zeroblob(?) || ?)');
        for (let i = 0; i < 300; i++) ins.run(`k${(i * 7919) % 1000}`, 50 + ((i * 31) % 900), `x${i}`);
      })(),
  ],
  [
    'rollback',
    (db) => {
      db.exec('BEGIN');
      db.exec("UPDATE t SET v = zeroblob(2000) || 'r' WHERE id % 2 = 0");
      db.exec('ROLLBACK');
    },
  ],
  [
    'savepoint',
    (db) =>
      db.transaction(() => {
        db.exec("INSERT INTO t(k, v) VALUES ('s1', 'kept')");
        db.exec('SAVEPOINT a');
        db.exec('DELETE FROM t WHERE id < 100');
        db.exec('ROLLBACK TO a; RELEASE a');
        db.exec("UPDATE t SET k = k || '!' WHERE id % 5 = 0");
      })(),
  ],
  [
    'statement rollback',
    (db) => {
      db.exec('CREATE TABLE u(a INTEGER PRIMARY KEY, b TEXT)');
      db.exec("INSERT INTO u VALUES (1, 'one'), (5, 'five')");
      // The second row fails: the statement's first row is rolled back, the transaction goes on.
      db.exec('BEGIN');
      assert.throws(() => db.exec('INSERT INTO u SELECT a + 4, b FROM u ORDER BY a DESC'));
      db.exec("INSERT INTO u VALUES (9, 'nine')");
      db.exec('COMMIT');
    },
  ],
  [
    'cache spill past the budget',
    (db) => {
      db.pragma('cache_size=10');
      db.transaction(() => {
        const ins = db.prepare('INSERT INTO t(k, v) VALUES (?, zeroblob(?) || ?)');
        for (let i = 0; i < 400; i++) ins.run(`big${i}`, 3000, `y${i}`);
        db.exec("UPDATE t SET v = v || 'z' WHERE id % 3 = 0");
      })();
      db.pragma('cache_size=-2000');
    },
  ],
  [
    'spilled rollback',
    (db) => {
      db.pragma('cache_size=10');
      db.exec('BEGIN');
      db.exec("UPDATE t SET v = zeroblob(3500) || 'q'");
      db.exec('ROLLBACK');
      db.pragma('cache_size=-2000');
    },
  ],
  [
    'delete and vacuum',
    (db) => {
      db.exec("DELETE FROM t WHERE k LIKE 'big%' AND id % 4 != 0");
      db.exec('VACUUM');
    },
  ],
  [
    'page size change',
    (db) => {
      db.pragma('page_size=1024');
      db.exec('VACUUM');
    },
  ],
  [
    'auto_vacuum',
    (db) => {
      db.pragma('auto_vacuum=FULL');
      db.exec('VACUUM');
      db.exec('DELETE FROM t WHERE id % 2 = 1');
    },
  ],
];

async function positions(durability: Durability, dir: string): Promise<string[]> {
  const file = path.join(dir, `${durability}.db`);
  const db = await open(file, { durability, memoryBudget: 16 * 1024 });
  const out: string[] = [];
  try {
    for (const [name, step] of STEPS) {
      step(db);
      const p = db.position();
      out.push(`${name}: ${p.txid}/${p.checksum}`);
    }
  } finally {
    db.close();
  }
  await assertReplay(file, durability);
  assert.equal(nativeIntegrity(file), 'ok');
  return out;
}

describe('journal durability', () => {
  test("gives the same states, step by step, as durability 'sqlite' (rollbacks, savepoints, statement rollback, spills, VACUUM, page size, auto_vacuum)", async () => {
    await loadHash();
    const dir = tempDir();
    const held = await positions('journal', dir);
    const plain = await positions('sqlite', dir);
    assert.deepEqual(held, plain);
    assert.equal(fileHash(path.join(dir, 'journal.db')), fileHash(path.join(dir, 'sqlite.db')));
  });

  test('the database file is untouched until the commit, and no DB-journal ever appears', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'a.db');
    const db = await open(file, { memoryBudget: 16 * 1024 });
    try {
      db.exec('CREATE TABLE t(v)');
      db.transaction(() => {
        for (let i = 0; i < 50; i++) db.prepare('INSERT INTO t VALUES (zeroblob(1000))').run();
      })();
      const before = fileHash(file);
      db.pragma('cache_size=10');
      db.exec('BEGIN');
      db.exec('UPDATE t SET v = zeroblob(3000)');
      db.exec('INSERT INTO t SELECT v FROM t');
      assert.equal(fileHash(file), before, 'nothing reached the file before the commit');
      assert.equal(fs.existsSync(`${file}-journal`), false);
      assert.ok(fs.statSync(`${file}-mycelite/rollback`).size > 0, 'the moved rollback journal is used');
      assert.equal(db.prepare('SELECT count(*) FROM t').pluck().get(), 100, 'reads see the held writes');
      db.exec('COMMIT');
      assert.notEqual(fileHash(file), before);
      assert.equal(fs.existsSync(`${file}-mycelite/rollback`), false);
    } finally {
      db.close();
    }
    await assertReplay(file, 'after the commit');
  });

  test('close checkpoints: the marker names the head; a clean reopen redoes nothing', async () => {
    await loadHash();
    const dir = tempDir();
    const file = path.join(dir, 'a.db');
    const db = await open(file);
    db.exec('CREATE TABLE t(v); INSERT INTO t VALUES (1)');
    const head = db.position();
    db.close();
    assert.deepEqual(markerPoint(file), head);
  });
});

describe('journal durability: edges', () => {
  test('a transaction writing to this database and an ATTACHed one is refused, and nothing of it stays', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'a.db');
    const db = await open(file);
    try {
      db.exec('CREATE TABLE t(v)');
      db.exec(`ATTACH '${path.join(dir, 'other.db')}' AS other`);
      db.exec('CREATE TABLE other.u(v)');
      const before = db.position();
      db.exec('BEGIN');
      db.exec('INSERT INTO t VALUES (1)');
      db.exec('INSERT INTO other.u VALUES (1)');
      assert.throws(() => db.exec('COMMIT'), /ATTACHed one cannot commit with durability 'journal'/);
      if (db.inTransaction) db.exec('ROLLBACK');
      assert.deepEqual(db.position(), before);
      assert.equal(db.prepare('SELECT count(*) FROM t').pluck().get(), 0);
      assert.equal(db.prepare('SELECT count(*) FROM other.u').pluck().get(), 0);
      // One database per transaction commits.
      db.exec('INSERT INTO t VALUES (2)');
      db.exec('INSERT INTO other.u VALUES (2)');
      assert.equal(db.position().txid, before.txid + 1n);
    } finally {
      db.close();
    }
    await assertReplay(file, 'after the refused transaction');
  });

  test('an existing database is bootstrapped and the marker names the image', async () => {
    await loadHash();
    const dir = tempDir();
    const file = path.join(dir, 'plain.db');
    const Native = (await import('better-sqlite3')).default;
    const n = new Native(file);
    n.exec('CREATE TABLE t(v); INSERT INTO t VALUES (1), (2)');
    n.close();
    const db = await open(file);
    const head = db.position();
    db.close();
    assert.equal(head.txid, 1n);
    assert.deepEqual(markerPoint(file), head);
  });
});

/** The position `file`'s synced marker names (undefined when it has none or it is torn). */
function markerPoint(file: string): { txid: bigint; checksum: bigint } | undefined {
  const m = readSyncedMarker(nodeRuntime.fs, `${file}-mycelite/synced`);
  return m && m !== 'bad' ? { txid: m.txid, checksum: m.checksum } : undefined;
}

/** Sets `file`'s synced marker to `at` (as a checkpoint at `at` would have; the file lags it since). */
function setMarker(file: string, at: { txid: bigint; checksum: bigint }): void {
  const m = nodeRuntime.fs.open(`${file}-mycelite/synced`);
  try {
    writeSyncedMarker(m, { ...at, fingerprint: { size: 0, page1: 0n }, checkedTxid: 0n, holdsWrites: true });
  } finally {
    m.close();
  }
}

describe('redo at open', () => {
  /** A database at `old` (a copy of its file at txid `at`) and its later state; returns both hashes. */
  async function lagging(): Promise<{
    file: string;
    dir: string;
    old: Buffer;
    at: { txid: bigint; checksum: bigint };
    want: string;
  }> {
    await loadHash();
    const dir = tempDir();
    const file = path.join(dir, 'a.db');
    let db = await open(file);
    db.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)');
    db.transaction(() => {
      for (let i = 0; i < 200; i++) db.prepare('INSERT INTO t(v) VALUES (zeroblob(500))').run();
    })();
    const at = db.position();
    db.close();
    const old = fs.readFileSync(file);
    db = await open(file);
    for (let i = 0; i < 20; i++)
      db.prepare("UPDATE t SET v = zeroblob(?) || 'u' WHERE id % 7 = ?").run(400 + i * 20, i % 7);
    db.exec('DELETE FROM t WHERE id > 150');
    db.exec('VACUUM');
    for (let i = 0; i < 50; i++) db.prepare('INSERT INTO t(v) VALUES (zeroblob(900))').run();
    db.close();
    return { file, dir, old, at, want: fileHash(file) };
  }

  test('a file left at the marker is brought to the head', async () => {
    const { file, old, at, want } = await lagging();
    fs.writeFileSync(file, old);
    setMarker(file, at);
    const db = await open(file);
    assert.equal(db.prepare('SELECT count(*) FROM t').pluck().get(), 200);
    db.close();
    assert.equal(fileHash(file), want);
  });

  test('a torn file (pages of the marker state and of later states mixed) is brought to the head', async () => {
    const { file, old, at, want } = await lagging();
    const now = fs.readFileSync(file);
    // Every third 4 KiB page from the old state, a half page torn in the middle: a power loss mid-write-back.
    const mixed = Buffer.from(now);
    for (let off = 0; off + 4096 <= Math.min(old.length, now.length); off += 3 * 4096)
      old.copy(mixed, off, off, off + 4096);
    old.copy(mixed, 4096 * 4 + 1000, 4096 * 4 + 1000, 4096 * 4 + 3000);
    fs.writeFileSync(file, mixed);
    setMarker(file, at);
    (await open(file)).close();
    assert.equal(fileHash(file), want);
  });

  test('a torn marker: the file is checked against the journal and rebuilt', async () => {
    const { file, old, want } = await lagging();
    fs.writeFileSync(file, old);
    fs.writeFileSync(`${file}-mycelite/synced`, Buffer.from('MYCSYNC1 torn'));
    (await open(file)).close();
    assert.equal(fileHash(file), want);
  });

  test('a marker whose point was compacted away: rebuilt from the history', async () => {
    const { file, old, at, want } = await lagging();
    const db = await open(file, { history: false });
    // Every point older than now is merged into one: the marker's txid is no point any more.
    db.compact({ retain: '1s:all,forever:1d', now: Date.now() + 60_000 });
    const head = db.position();
    db.close();
    fs.writeFileSync(file, old);
    setMarker(file, at);
    const again = await open(file);
    assert.deepEqual(again.position(), head);
    again.close();
    assert.equal(fileHash(file), want);
  });

  test("SIGKILL between checkpoints: the marker is behind, open() redoes every acknowledged commit; durability 'sqlite' then keeps a marker that holds no writes", async () => {
    await loadHash();
    const dir = tempDir();
    const file = path.join(dir, 'a.db');
    const script = `
      import { open } from ${JSON.stringify(new URL('../src/node/index.js', import.meta.url).href)};
      const db = await open(${JSON.stringify(file)});
      db.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)');
      for (let i = 1; i <= 300; i++) {
        db.prepare('INSERT INTO t(v) VALUES (zeroblob(?))').run(100 + (i % 50) * 30);
        if (i % 20 === 0) process.stdout.write(i + '\\n');
      }
      process.stdout.write('done\\n');
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      let out = '';
      child.stdout!.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        if (out.includes('done\n')) resolve();
      });
      child.on('exit', () => reject(new Error('the child exited before it committed')));
    });
    child.kill('SIGKILL');
    await new Promise((r) => child.on('exit', r));
    const marker = readSyncedMarker(nodeRuntime.fs, `${file}-mycelite/synced`);
    assert.ok(
      marker && marker !== 'bad' && marker.txid < 301n,
      `the marker is behind: ${String(marker && marker !== 'bad' ? marker.txid : marker)}`,
    );
    // A reader must not trust the file before a writer brought it up to date.
    await assert.rejects(openReadonly(file), /did not close it .* open it for writing once/);
    const inode = fs.statSync(file).ino;
    const db = await open(file, { durability: 'sqlite' });
    assert.equal(
      fs.statSync(file).ino,
      inode,
      'redone in place (not rebuilt), although the journal had a torn tail of zeros',
    );
    assert.equal(db.prepare('SELECT count(*) FROM t').pluck().get(), 300);
    assert.equal(db.position().txid, 301n);
    db.exec('INSERT INTO t(v) VALUES (1)');
    db.close();
    const after = readSyncedMarker(nodeRuntime.fs, `${file}-mycelite/synced`);
    assert.ok(
      after && after !== 'bad' && after.txid === 302n && !after.holdsWrites,
      "durability 'sqlite' closes with a marker at the head that says it does not hold writes",
    );
    const v = await verifyDatabase(nodeRuntime.fs, file, path.join(dir, 'verify.tmp'));
    assert.ok(v.ok, v.problem);
    const back = await open(file);
    back.exec('INSERT INTO t(v) VALUES (2)');
    back.close();
    await assertReplay(file, 'back to journal durability');
  });
});
