import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { Database } from '../src/engine/database.js';
import { SqliteError } from '../src/engine/errors.js';
import { bindingFor, loadSqlite, type Sqlite3, type WasmExports } from '../src/engine/sqlite.js';

let sqlite3: Sqlite3;
let db: Database;

before(async () => {
  sqlite3 = await loadSqlite();
});

/** Opens a fresh in-memory database for one test. */
function fresh(): Database {
  if (db?.open && !db.inTransaction) db.close();
  db = Database.open(sqlite3, ':memory:');
  return db;
}

after(() => db?.close());

/** Copies a Uint8Array (incl. a Buffer) into a plain Uint8Array, for deepStrictEqual. */
const plain = (v: unknown): unknown => (v instanceof Uint8Array ? new Uint8Array(v) : v);
const plainRow = (row: unknown): unknown =>
  row && typeof row === 'object' && !(row instanceof Uint8Array)
    ? Object.fromEntries(Object.entries(row).map(([k, v]) => [k, plain(v)]))
    : plain(row);

test('loadSqlite caches the module', async () => {
  assert.equal(await loadSqlite(), sqlite3);
  assert.equal(loadSqlite(), loadSqlite());
});

describe('values', () => {
  test('round trip of every value type', () => {
    fresh();
    const sel = db.prepare('SELECT ? AS v, typeof(?1) AS t');
    const cases: [unknown, unknown, string][] = [
      [null, null, 'null'],
      [undefined, null, 'null'],
      [0, 0, 'integer'],
      [-1, -1, 'integer'],
      [2 ** 31, 2 ** 31, 'integer'],
      [-(2 ** 40) - 3, -(2 ** 40) - 3, 'integer'],
      [Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, 'integer'],
      [2 ** 60, 2 ** 60, 'integer'],
      [1.5, 1.5, 'real'],
      [-0, -0, 'real'],
      [1e300, 1e300, 'real'],
      [2 ** 64, 2 ** 64, 'real'],
      [Number.POSITIVE_INFINITY, Number.POSITIVE_INFINITY, 'real'],
      [Number.NaN, null, 'null'],
      [123n, 123, 'integer'],
      ['', '', 'text'],
      ['hello', 'hello', 'text'],
      ['héllo wörld ✓ 漢字 😀 \u{10FFFF}', 'héllo wörld ✓ 漢字 😀 \u{10FFFF}', 'text'],
      ['nul\u0000inside', 'nul\u0000inside', 'text'],
      [true, 1, 'integer'],
      [false, 0, 'integer'],
      [new Uint8Array([0, 1, 255]), new Uint8Array([0, 1, 255]), 'blob'],
      [new Uint8Array(0), new Uint8Array(0), 'blob'],
      [new Uint8Array([9, 8, 7]).buffer, new Uint8Array([9, 8, 7]), 'blob'],
      [Buffer.from('buf'), new Uint8Array([98, 117, 102]), 'blob'],
      [new Uint16Array([0x0201]), new Uint8Array([1, 2]), 'blob'],
    ];
    for (const [input, expected, type] of cases) {
      const row = sel.get(input as never) as { v: unknown; t: string };
      assert.deepEqual(row, { v: expected, t: type }, `value ${String(input)}`);
      if (typeof expected === 'number') assert.ok(Object.is(row.v, expected), `sign of ${input}`);
    }
  });

  test('large blobs and long strings survive heap growth', () => {
    fresh().exec('CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB, s TEXT)');
    const ins = db.prepare('INSERT INTO big(b, s) VALUES (?, ?)');
    const blobs: Uint8Array[] = [];
    const text = 'ünïcødé 😀 '.repeat(40_000);
    for (let i = 0; i < 24; i++) {
      const b = new Uint8Array(1024 * 1024);
      for (let j = 0; j < b.length; j += 4096) b[j] = (i * 31 + j) & 0xff;
      b[b.length - 1] = i;
      blobs.push(b);
      ins.run(b, text + i);
    }
    const rows = db.prepare('SELECT b, s FROM big ORDER BY id').all<{ b: Uint8Array; s: string }>();
    assert.equal(rows.length, 24);
    rows.forEach((r, i) => {
      assert.ok(r.b instanceof Uint8Array);
      assert.equal(r.b.length, 1024 * 1024);
      assert.deepEqual(r.b, blobs[i]);
      assert.equal(r.s, text + i);
    });
    assert.notEqual(rows[0]!.b.buffer, sqlite3.wasm.heap8u().buffer, 'blobs are copied out of WASM memory');
  });

  test('int64 extremes with safeIntegers', () => {
    fresh().exec('CREATE TABLE n(v INTEGER)');
    const max = 2n ** 63n - 1n;
    const min = -(2n ** 63n);
    const ins = db.prepare('INSERT INTO n VALUES (?)');
    for (const v of [max, min, 0n, -1n, 2n ** 53n + 1n]) ins.run(v);
    const values = db.prepare('SELECT v FROM n').pluck().safeIntegers().all();
    assert.deepEqual(values, [max, min, 0n, -1n, 2n ** 53n + 1n]);
    const lossy = db.prepare('SELECT v FROM n').pluck().all();
    assert.deepEqual(lossy, [Number(max), Number(min), 0, -1, 2 ** 53]);
    assert.throws(() => ins.run(max + 1n), RangeError);
    assert.throws(() => ins.run(min - 1n), RangeError);
    assert.equal(db.prepare('SELECT ? + 0').pluck().safeIntegers().get(max), max);
    db.defaultSafeIntegers();
    assert.equal(db.prepare('SELECT 1').pluck().get(), 1n);
    assert.equal(db.prepare('SELECT 1').pluck().safeIntegers(false).get(), 1);
  });

  test('unsupported values are rejected', () => {
    const sel = fresh().prepare('SELECT ?');
    assert.throws(() => sel.get(Symbol('x') as never), TypeError);
    assert.throws(() => sel.get(new Date() as never), TypeError);
    assert.equal(sel.pluck().get(7), 7, 'statement still usable');
  });
});

describe('parameters', () => {
  test('named parameters :name @name $name', () => {
    const sel = fresh().prepare('SELECT :a AS a, @b AS b, $c AS c, :a + 1 AS d');
    assert.deepEqual(sel.get({ a: 1, b: 'two', c: null }), { a: 1, b: 'two', c: null, d: 2 });
    assert.throws(() => sel.get({ a: 1, b: 2 }), /Missing named parameter "c"/);
    assert.throws(() => sel.get(1, 2, 3), TypeError);
    const proto = Object.create({ a: 1, b: 2, c: 3 });
    assert.throws(() => sel.get(proto), TypeError, 'inherited keys / non-plain objects are not named params');
  });

  test('positional parameters spread or in arrays, mixed with named', () => {
    const sel = fresh().prepare('SELECT ? AS x, ? AS y, ?3 AS z');
    assert.deepEqual(sel.get(1, 2, 3), { x: 1, y: 2, z: 3 });
    assert.deepEqual(sel.get([1, 2, 3]), { x: 1, y: 2, z: 3 });
    assert.deepEqual(sel.get([1], 2, [3]), { x: 1, y: 2, z: 3 });
    assert.throws(() => sel.get(1, 2), /Too few/);
    assert.throws(() => sel.get(1, 2, 3, 4), /Too many/);
    const mixed = db.prepare('SELECT ? AS p, :n AS n');
    assert.deepEqual(mixed.get(5, { n: 'x' }), { p: 5, n: 'x' });
    assert.deepEqual(db.prepare('SELECT 1 AS one').get(), { one: 1 });
  });

  test('bind() makes parameters permanent', () => {
    const sel = fresh().prepare('SELECT ? AS v').pluck().bind(42);
    assert.equal(sel.get(), 42);
    assert.equal(sel.get(), 42);
    assert.throws(() => sel.get(1), /already has bound parameters/);
    assert.throws(() => sel.bind(1), TypeError);
  });
});

describe('statements', () => {
  test('run() reports changes and lastInsertRowid', () => {
    fresh().exec('CREATE TABLE t(id INTEGER PRIMARY KEY, v)');
    const ins = db.prepare('INSERT INTO t(v) VALUES (?)');
    assert.deepEqual(ins.run('a'), { changes: 1, lastInsertRowid: 1 });
    assert.deepEqual(ins.run('b'), { changes: 1, lastInsertRowid: 2 });
    assert.deepEqual(db.prepare('UPDATE t SET v = v || ?').run('!'), { changes: 2, lastInsertRowid: 2 });
    assert.equal(db.prepare('CREATE TABLE u(x)').run().changes, 0, 'DDL reports no changes');
    assert.deepEqual(
      db
        .prepare('INSERT INTO t VALUES (?, ?)')
        .safeIntegers()
        .run(2n ** 62n, 'c'),
      {
        changes: 1,
        lastInsertRowid: 2n ** 62n,
      },
    );
    assert.equal(db.prepare('DELETE FROM t').run().changes, 3);
    const reader = db.prepare('SELECT 1');
    assert.equal(reader.reader, true);
    assert.equal(reader.readonly, true);
    assert.equal(ins.reader, false);
    assert.equal(ins.readonly, false);
    assert.equal(ins.source, 'INSERT INTO t(v) VALUES (?)');
    assert.throws(() => ins.get('x'), /does not return data/);
  });

  test('iterate: early break, then reuse; exhausted iterator', () => {
    fresh().exec(
      'CREATE TABLE t(i INTEGER); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<10) INSERT INTO t SELECT i FROM c',
    );
    const sel = db.prepare('SELECT i FROM t WHERE i >= ? ORDER BY i').pluck();
    const seen: unknown[] = [];
    for (const v of sel.iterate(3)) {
      seen.push(v);
      if (seen.length === 2) break;
    }
    assert.deepEqual(seen, [3, 4]);
    assert.equal(sel.busy, false);
    assert.deepEqual(sel.all(8), [8, 9, 10]);
    assert.deepEqual([...sel.iterate(9)], [9, 10]);
    const it = sel.iterate(1);
    assert.deepEqual(it.next(), { done: false, value: 1 });
    assert.equal(sel.busy, true);
    assert.throws(() => sel.get(1), /busy/);
    assert.throws(() => db.exec('DELETE FROM t'), /busy/, 'no writes while iterating');
    assert.throws(() => db.prepare('DELETE FROM t').run(), /busy/);
    assert.throws(() => db.close(), /busy/);
    assert.equal(db.prepare('SELECT count(*) FROM t').pluck().get(), 10, 'readers are allowed');
    assert.deepEqual(it.return?.(), { done: true, value: undefined });
    assert.deepEqual(it.next(), { done: true, value: undefined });
    assert.equal(db.prepare('DELETE FROM t').run().changes, 10);
    const never = sel.iterate(1);
    never.return?.();
    assert.deepEqual(sel.all(1), []);
  });

  test('pluck, raw and columns()', () => {
    fresh().exec("CREATE TABLE t(a INTEGER, b TEXT); INSERT INTO t VALUES (1, 'x'), (2, 'y')");
    const sel = db.prepare('SELECT a, b, a * 2 AS c FROM t ORDER BY a');
    assert.deepEqual(sel.all(), [
      { a: 1, b: 'x', c: 2 },
      { a: 2, b: 'y', c: 4 },
    ]);
    assert.deepEqual(sel.raw().all(), [
      [1, 'x', 2],
      [2, 'y', 4],
    ]);
    assert.deepEqual(sel.pluck().all(), [1, 2], 'pluck turns raw off');
    assert.deepEqual(sel.raw().get(), [1, 'x', 2], 'raw turns pluck off');
    assert.deepEqual(sel.raw(false).get(), { a: 1, b: 'x', c: 2 });
    assert.deepEqual(sel.columns(), [
      { name: 'a', column: 'a', table: 't', database: 'main', type: 'INTEGER' },
      { name: 'b', column: 'b', table: 't', database: 'main', type: 'TEXT' },
      { name: 'c', column: null, table: null, database: null, type: null },
    ]);
    assert.throws(() => db.prepare('DELETE FROM t').pluck(), TypeError);
    assert.deepEqual(db.prepare("SELECT 1 AS x, 2 AS x, 3 AS '__proto__'").get(), { x: 2, ['__proto__']: 3 });
  });

  test('column list change after schema change is picked up', () => {
    fresh().exec('CREATE TABLE t(a); INSERT INTO t VALUES (1)');
    const sel = db.prepare('SELECT * FROM t');
    assert.deepEqual(sel.get(), { a: 1 });
    db.exec('ALTER TABLE t ADD COLUMN b DEFAULT 7');
    assert.deepEqual(sel.get(), { a: 1, b: 7 });
  });
});

describe('transactions', () => {
  test('commit, rollback and nested savepoints', () => {
    fresh().exec('CREATE TABLE t(v)');
    const ins = db.prepare('INSERT INTO t VALUES (?)');
    const count = db.prepare('SELECT count(*) FROM t').pluck();
    const insertMany = db.transaction((values: number[]) => {
      for (const v of values) ins.run(v);
      return values.length;
    });
    assert.equal(insertMany([1, 2, 3]), 3);
    assert.equal(count.get(), 3);
    assert.equal(db.inTransaction, false);

    const failing = db.transaction(() => {
      ins.run(4);
      assert.equal(db.inTransaction, true);
      throw new Error('boom');
    });
    assert.throws(() => failing(), /boom/);
    assert.equal(count.get(), 3);
    assert.equal(db.inTransaction, false);

    const outer = db.transaction(() => {
      ins.run(10);
      assert.throws(() => failing(), /boom/); // inner rolls back to its savepoint only
      insertMany([11, 12]); // nested success is released into the outer transaction
      return count.get();
    });
    assert.equal(outer(), 6);
    assert.deepEqual(db.prepare('SELECT v FROM t ORDER BY rowid').pluck().all(), [1, 2, 3, 10, 11, 12]);

    const rollbackAll = db.transaction(() => {
      insertMany([20]);
      throw new Error('outer');
    });
    assert.throws(() => rollbackAll(), /outer/);
    assert.equal(count.get(), 6);
    assert.equal(db.inTransaction, false);
  });

  test('variants, this/arguments, and promise rejection', () => {
    fresh().exec('CREATE TABLE t(v)');
    const tx = db.transaction(function (this: unknown, a: number, b: number) {
      return [this, a + b];
    });
    const self = {};
    assert.deepEqual(tx.call(self, 1, 2), [self, 3]);
    for (const variant of [tx.deferred, tx.immediate, tx.exclusive, tx.default]) {
      assert.equal(variant.database, db);
      assert.deepEqual(variant(2, 3), [undefined, 5]);
    }
    const asyncTx = db.transaction(async () => 1);
    assert.throws(() => asyncTx(), /cannot return a promise/);
    assert.equal(db.inTransaction, false);
    assert.throws(() => db.transaction(42 as never), TypeError);
  });
});

describe('database', () => {
  test('pragma', () => {
    fresh();
    assert.equal(db.pragma('user_version', { simple: true }), 0);
    assert.deepEqual(db.pragma('user_version = 42'), []);
    assert.deepEqual(db.pragma('user_version'), [{ user_version: 42 }]);
    assert.equal(db.pragma('user_version', { simple: true }), 42);
    assert.equal(db.pragma('journal_mode', { simple: true }), 'memory');
  });

  test('exec runs several statements; errors carry codes', () => {
    fresh().exec('CREATE TABLE a(x); CREATE TABLE b(y); INSERT INTO a VALUES (1);');
    assert.equal(db.prepare('SELECT count(*) FROM sqlite_schema').pluck().get(), 2);
    assert.throws(
      () => db.exec('INSERT INTO a VALUES (2); SELECT * FROM nope'),
      (e: unknown) =>
        e instanceof SqliteError && e.code === 'SQLITE_ERROR' && /no such table: nope/.test(e.message),
    );
    assert.throws(() => db.prepare('SELECT 1; SELECT 2'), /more than one statement/);
    assert.throws(() => db.prepare(' -- nothing '), /no statements/);
    assert.doesNotThrow(() => db.prepare('SELECT 1; -- trailing comment\n /* more */ ;'));
    assert.throws(
      () => db.prepare('SELEKT 1'),
      (e: unknown) => e instanceof SqliteError && e.errcode === 1,
    );
  });

  test('constraint error has the extended code and the statement is reusable', () => {
    fresh().exec('CREATE TABLE t(k TEXT PRIMARY KEY, u UNIQUE) WITHOUT ROWID');
    const ins = db.prepare('INSERT INTO t VALUES (?, ?)');
    ins.run('a', 1);
    assert.throws(
      () => ins.run('b', 1),
      (e: unknown) =>
        e instanceof SqliteError &&
        e.code === 'SQLITE_CONSTRAINT_UNIQUE' &&
        e.errcode === 2067 &&
        e.message.includes('INSERT INTO t VALUES') &&
        e.message.includes('UNIQUE constraint failed: t.u'),
    );
    assert.throws(() => ins.run('a', 2), { name: 'SqliteError', code: 'SQLITE_CONSTRAINT_PRIMARYKEY' });
    assert.deepEqual(ins.run('c', 3), { changes: 1, lastInsertRowid: 0 });
    assert.equal(db.prepare('SELECT count(*) FROM t').pluck().get(), 2);
  });

  test('close finalizes statements, is idempotent, and makes statements throw', () => {
    fresh().exec('CREATE TABLE t(v)');
    const stmts = [
      db.prepare('SELECT 1'),
      db.prepare('INSERT INTO t VALUES (?)'),
      db.prepare('SELECT * FROM t'),
    ];
    db.transaction(() => {})(); // also prepares the 9 cached transaction statements
    const binding = bindingFor(sqlite3) as unknown as { x: WasmExports };
    const real = binding.x;
    let finalized = 0;
    binding.x = Object.create(real, {
      sqlite3_finalize: {
        value: (p: number) => {
          finalized++;
          return real.sqlite3_finalize(p);
        },
      },
    });
    try {
      assert.equal(db.open, true);
      db.close();
    } finally {
      binding.x = real;
    }
    assert.equal(finalized, stmts.length + 9);
    assert.equal(db.open, false);
    assert.equal(db.handle, 0);
    assert.equal(db.inTransaction, false);
    db.close();
    for (const s of stmts)
      assert.throws(() => s.all(), { name: 'TypeError', message: /database connection is not open/ });
    assert.throws(() => stmts[1]!.run(1), /not open/);
    assert.throws(() => db.prepare('SELECT 1'), /not open/);
    assert.throws(() => db.exec('SELECT 1'), /not open/);
  });

  test("close leaves a virtual table's own statements (FTS5) to SQLite: no double free", () => {
    fresh().exec("CREATE VIRTUAL TABLE f USING fts5(body); INSERT INTO f VALUES ('hello world')");
    const mine = db.prepare('SELECT count(*) FROM f');
    const binding = bindingFor(sqlite3) as unknown as { x: WasmExports };
    const real = binding.x;
    const finalized: string[] = [];
    binding.x = Object.create(real, {
      sqlite3_finalize: {
        value: (p: number) => {
          finalized.push(sqlite3.capi.sqlite3_sql(p) ?? '');
          return real.sqlite3_finalize(p);
        },
      },
    });
    try {
      db.close();
    } finally {
      binding.x = real;
    }
    // FTS5 prepared six statements of its own; finalizing them here made SQLite free them again.
    assert.deepEqual(finalized, [mine.source]);
    const other = Database.open(sqlite3, ':memory:');
    other.exec("CREATE VIRTUAL TABLE g USING fts5(body); INSERT INTO g VALUES ('still sound')");
    assert.equal(other.prepare("SELECT body FROM g WHERE g MATCH 'sound'").pluck().get(), 'still sound');
    other.close();
  });

  test('open options: files, readonly, create, vfs', () => {
    const name = `/engine-test-${process.pid}-${Date.now()}.db`;
    const rw = Database.open(sqlite3, name);
    assert.equal(rw.name, name);
    assert.equal(rw.memory, false);
    rw.exec('CREATE TABLE t(v); INSERT INTO t VALUES (1)').close();
    const ro = Database.open(sqlite3, name, { readonly: true });
    assert.equal(ro.readonly, true);
    assert.equal(ro.prepare('SELECT v FROM t').pluck().get(), 1);
    assert.throws(() => ro.exec('INSERT INTO t VALUES (2)'), { code: 'SQLITE_READONLY' });
    ro.close();
    assert.throws(() => Database.open(sqlite3, `${name}.missing`, { create: false }), {
      code: 'SQLITE_CANTOPEN',
    });
    assert.throws(() => Database.open(sqlite3, name, { vfs: 'no-such-vfs' }), /no such vfs: no-such-vfs/);
    const mem = Database.open(sqlite3, '/x', { vfs: 'memdb' });
    assert.equal(mem.exec('CREATE TABLE m(x)').prepare('SELECT count(*) FROM m').pluck().get(), 0);
    mem.close();
    assert.equal(fresh().memory, true);
  });
});

/** The subset of the statement API shared by this engine and better-sqlite3. */
interface AnyStatement {
  run(...params: unknown[]): unknown;
  get(...params: unknown[]): unknown;
  all(...params: unknown[]): unknown[];
  iterate(...params: unknown[]): Iterable<unknown>;
  pluck(): AnyStatement;
  raw(): AnyStatement;
}

describe('identical semantics to better-sqlite3', () => {
  /** Small deterministic PRNG (mulberry32). */
  const rng = (seed: number) => () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };

  test('known difference: integer-valued numbers bind as INTEGER, not REAL', () => {
    const theirs = new BetterSqlite3(':memory:');
    assert.equal(fresh().prepare('SELECT typeof(?)').pluck().get(5), 'integer');
    assert.equal(theirs.prepare('SELECT typeof(?)').pluck().get(5), 'real');
    assert.equal(db.prepare('SELECT typeof(?)').pluck().get(5.5), 'real');
    theirs.close();
  });

  for (const safe of [false, true]) {
    test(`random workload (safeIntegers=${safe})`, () => {
      const rand = rng(safe ? 7 : 42);
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
      const int = () =>
        pick([0, 1, -1, 7, 2 ** 31, -(2 ** 40), Number.MAX_SAFE_INTEGER, Math.floor(rand() * 1000)]);
      const num = () => pick([int(), rand() * 1e6 - 5e5, 0.5, -2.25, 1e-300, null]);
      const big = () => pick([2n ** 63n - 1n, -(2n ** 63n), BigInt(Math.floor(rand() * 1e9)), null]);
      const str = () =>
        pick(['', 'a', 'ünï😀', 'x'.repeat(Math.floor(rand() * 300)), `k${Math.floor(rand() * 50)}`, null]);
      const blob = () =>
        pick([
          null,
          new Uint8Array(0),
          Uint8Array.from({ length: Math.floor(rand() * 100) }, () => rand() * 256),
        ]);
      const schema =
        'CREATE TABLE w(id INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT UNIQUE, b BLOB, u); CREATE INDEX wi ON w(i)';
      const mine = Database.open(sqlite3, ':memory:').exec(schema).defaultSafeIntegers(safe);
      const theirs = new BetterSqlite3(':memory:').exec(schema).defaultSafeIntegers(safe);
      const ops: [string, () => unknown[], 'run' | 'all' | 'get' | 'pluck' | 'raw' | 'iterate'][] = [
        [
          'INSERT INTO w(i, r, s, b, u) VALUES (?, ?, ?, ?, ?)',
          () => [int(), num(), str(), blob(), pick([big(), str(), blob()])],
          'run',
        ],
        [
          'INSERT OR REPLACE INTO w(id, i, s) VALUES (?, ?, ?)',
          () => [Math.floor(rand() * 40), num(), str()],
          'run',
        ],
        // Bound numbers never meet integer arithmetic: better-sqlite3 binds every number as REAL.
        ['UPDATE w SET r = r * ?, i = i + 1 WHERE id % 3 = ?', () => [num(), Math.floor(rand() * 3)], 'run'],
        ['DELETE FROM w WHERE id = ?', () => [Math.floor(rand() * 60)], 'run'],
        ['SELECT * FROM w ORDER BY id', () => [], 'all'],
        ['SELECT * FROM w WHERE i > ? ORDER BY i, id', () => [num()], 'all'],
        ['SELECT * FROM w WHERE s = :s', () => [{ s: str() }], 'get'],
        ['SELECT count(*), sum(i), total(r), max(length(s)), group_concat(hex(b)) FROM w', () => [], 'raw'],
        ['SELECT typeof(i), typeof(r), typeof(u), u FROM w ORDER BY id', () => [], 'all'],
        ['SELECT s FROM w WHERE s IS NOT NULL ORDER BY s LIMIT ?', () => [Math.floor(rand() * 5)], 'pluck'],
        ['SELECT id, b FROM w WHERE id >= ? ORDER BY id', () => [Math.floor(rand() * 30)], 'iterate'],
        ['SELECT ? AS a, ? AS b, ? AS c', () => [big(), str(), blob()], 'get'],
      ];
      for (let step = 0; step < 1500; step++) {
        const [sql, args, mode] = pick(ops);
        const params = args();
        const outcome = (engine: 'mine' | 'theirs'): unknown => {
          const stmt = (engine === 'mine'
            ? mine.prepare(sql)
            : theirs.prepare(sql)) as unknown as AnyStatement;
          try {
            switch (mode) {
              case 'run':
                return stmt.run(...params);
              case 'all':
                return stmt.all(...params).map(plainRow);
              case 'get':
                return plainRow(stmt.get(...params));
              case 'pluck':
                return stmt
                  .pluck()
                  .all(...params)
                  .map(plain);
              case 'raw':
                return stmt
                  .raw()
                  .all(...params)
                  .map((r) => (r as unknown[]).map(plain));
              case 'iterate': {
                const rows: unknown[] = [];
                for (const r of stmt.iterate(...params)) if (rows.push(plainRow(r)) >= 3) break;
                return rows;
              }
            }
          } catch (e) {
            return { error: (e as { code?: string }).code ?? String(e) };
          }
        };
        assert.deepStrictEqual(outcome('mine'), outcome('theirs'), `step ${step}: ${sql} ${String(params)}`);
      }
      mine.close();
      theirs.close();
    });
  }
});
