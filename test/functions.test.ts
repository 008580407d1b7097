/**
 * User-defined functions and aggregates (`db.function()`, `db.aggregate()`), as better-sqlite3 has them:
 * against better-sqlite3 itself where both give the same, and through Mycelite's `open()` on a real file,
 * where what a function computed is in the journal and comes back from a restore.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { Database } from '../src/engine/database.js';
import { SqliteError } from '../src/engine/errors.js';
import { loadSqlite, type Sqlite3 } from '../src/engine/sqlite.js';
import { nodeRuntime, open } from '../src/node/index.js';
import { restoreDatabase } from '../src/restore/restore.js';

let sqlite3: Sqlite3;
let dir: string;

before(async () => {
  sqlite3 = await loadSqlite();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-functions-'));
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The same setup on our engine and on better-sqlite3 (native SQLite). */
function both(setup: (db: Database | BetterSqlite3.Database) => void): [Database, BetterSqlite3.Database] {
  const ours = Database.open(sqlite3, ':memory:');
  const theirs = new BetterSqlite3(':memory:');
  setup(ours);
  setup(theirs);
  return [ours, theirs];
}

const SETUP = (db: Database | BetterSqlite3.Database): void => {
  db.exec(
    "create table t(g text, v int); insert into t values ('a', 1), ('a', 2), ('b', 5), ('b', 7), ('b', 9)",
  );
};

describe('db.function', () => {
  test('scalar functions: arguments, results and arity, as better-sqlite3', () => {
    const [ours, theirs] = both(SETUP);
    for (const db of [ours, theirs]) {
      db.function('add2', (a: number, b: number) => a + b);
      db.function('concat_all', { varargs: true }, (...parts: unknown[]) => parts.join('|'));
      db.function('empty', () => null);
      db.function('kind', (v: unknown) =>
        v instanceof Uint8Array ? 'bytes' : v === null ? 'null' : typeof v,
      );
    }
    const sql = [
      "select add2(2, 3) as a, concat_all(1, 'x', 2.5) as c, empty() as n",
      "select kind(x'00ff') as k1, kind(null) as k2, kind(1) as k3, kind('s') as k4",
      'select g, add2(v, 100) as s from t order by rowid',
    ];
    for (const s of sql) assert.deepEqual(ours.prepare(s).all(), theirs.prepare(s).all(), s);
    for (const db of [ours, theirs]) {
      assert.throws(() => db.prepare('select add2(1)').get(), /wrong number of arguments/);
    }
    ours.close();
    theirs.close();
  });

  test('what the function throws is the statement error, the same object', () => {
    const db = Database.open(sqlite3, ':memory:');
    const boom = new Error('no such customer');
    db.function('check_customer', (id: number) => {
      if (id > 10) throw boom;
      return id;
    });
    assert.equal((db.prepare('select check_customer(3) as c').get() as Record<string, unknown>).c, 3);
    assert.throws(
      () => db.prepare('select check_customer(?)').get(11),
      (e) => e === boom,
    );
    assert.throws(
      () => db.exec('select check_customer(12)'),
      (e) => e === boom,
    );
    // The connection goes on; a later SQLite error is SQLite's.
    assert.throws(() => db.exec('select * from missing'), SqliteError);
    db.close();
  });

  test('deterministic: allowed in an index expression, a plain function is not', () => {
    const db = Database.open(sqlite3, ':memory:');
    db.exec('create table p(email text)');
    db.function('lower_plain', (s: string) => s.toLowerCase());
    db.function('lower_det', { deterministic: true }, (s: string) => s.toLowerCase());
    assert.throws(() => db.exec('create index bad on p(lower_plain(email))'), /non-deterministic/);
    db.exec('create unique index by_email on p(lower_det(email))');
    db.prepare('insert into p values (?)').run('Ann@Example.com');
    assert.throws(() => db.prepare('insert into p values (?)').run('ann@example.COM'), /UNIQUE/);
    db.close();
  });

  test('directOnly: refused inside a view', () => {
    const db = Database.open(sqlite3, ':memory:');
    db.function('secret', { directOnly: true }, () => 42);
    db.exec('create view v as select secret() as s');
    assert.equal((db.prepare('select secret() as s').get() as Record<string, unknown>).s, 42);
    assert.throws(() => db.prepare('select s from v').get(), /unsafe use of secret/);
    db.close();
  });

  test('safeIntegers: INTEGER arguments as bigint; bigint results as INTEGER', () => {
    const db = Database.open(sqlite3, ':memory:');
    db.function('next_id', { safeIntegers: true }, (v: bigint) => v + 1n);
    const big = 2n ** 62n + 1n;
    const row = db.prepare('select next_id(?) as n, typeof(next_id(?)) as t').safeIntegers().get(big, big);
    assert.deepEqual(row, { n: big + 1n, t: 'integer' });
    db.close();
  });

  test('registering again replaces the function and leaks no WASM table slot', () => {
    const db = Database.open(sqlite3, ':memory:');
    db.function('f', () => 0);
    const table = sqlite3.wasm.functionTable().length;
    for (let i = 1; i <= 300; i++) db.function('f', () => i);
    db.aggregate('g', { start: 0, step: (t: number) => t + 1 });
    assert.equal((db.prepare('select f() as v').get() as Record<string, unknown>).v, 300);
    assert.equal(sqlite3.wasm.functionTable().length, table);
    db.close();
  });

  test('bad arguments are TypeErrors', () => {
    const db = Database.open(sqlite3, ':memory:');
    assert.throws(() => db.function('f', 42 as never), TypeError);
    assert.throws(() => db.aggregate('g', {} as never), TypeError);
    db.close();
    assert.throws(() => db.function('f', () => 1), /not open/);
  });
});

describe('db.aggregate', () => {
  test('start, step, result and GROUP BY, as better-sqlite3', () => {
    const [ours, theirs] = both(SETUP);
    for (const db of [ours, theirs]) {
      db.aggregate('sumsq', { start: 0, step: (t: number, v: number) => t + v * v });
      db.aggregate('collect', {
        start: () => [],
        step: (list: number[], v: number) => {
          list.push(v);
        },
        result: (list: number[]) => list.join(','),
      });
    }
    const sql = [
      'select g, sumsq(v) as s, collect(v) as c from t group by g order by g',
      'select sumsq(v) as s, collect(v) as c from t where v > 100',
      'select sumsq(v) as s from t',
    ];
    for (const s of sql) assert.deepEqual(ours.prepare(s).all(), theirs.prepare(s).all(), s);
    ours.close();
    theirs.close();
  });

  test('with inverse it is a window function, as better-sqlite3', () => {
    const [ours, theirs] = both(SETUP);
    for (const db of [ours, theirs]) {
      db.aggregate('win_sum', {
        start: 0,
        step: (t: number, v: number) => t + v,
        inverse: (t: number, v: number) => t - v,
      });
    }
    const s =
      'select v, win_sum(v) over (order by rowid rows between 1 preceding and current row) as w from t';
    const rows = ours.prepare(s).all();
    assert.deepEqual(rows, theirs.prepare(s).all());
    assert.deepEqual(
      rows.map((r) => (r as { w: number }).w),
      [1, 3, 7, 12, 16],
    );
    ours.close();
    theirs.close();
  });

  test('a step that throws fails the statement with its error', () => {
    const db = Database.open(sqlite3, ':memory:');
    SETUP(db);
    const bad = new RangeError('negative');
    db.aggregate('strict_sum', {
      start: 0,
      step: (t: number, v: number) => {
        if (v > 6) throw bad;
        return t + v;
      },
    });
    assert.throws(
      () => db.prepare('select strict_sum(v) from t').get(),
      (e) => e === bad,
    );
    assert.equal(
      (db.prepare('select strict_sum(v) as s from t where v < 6').get() as Record<string, unknown>).s,
      8,
    );
    db.close();
  });
});

describe('statement.expand() and db.serialize(), as better-sqlite3', () => {
  test('expand: one object per table, expressions under $', () => {
    const [ours, theirs] = both((db) => {
      db.exec('create table u(id int, name text); create table p(id int, uid int, title text)');
      db.exec("insert into u values (1, 'ann'); insert into p values (10, 1, 'hello')");
    });
    const s = 'select u.id, u.name, p.id, p.title, length(p.title) as n from u join p on p.uid = u.id';
    const rows = ours.prepare(s).expand().all();
    assert.deepEqual(rows, theirs.prepare(s).expand().all());
    assert.deepEqual(rows, [{ u: { id: 1, name: 'ann' }, p: { id: 10, title: 'hello' }, $: { n: 5 } }]);
    assert.deepEqual(ours.prepare(s).expand().raw().get(), [1, 'ann', 10, 'hello', 5]);
    ours.close();
    theirs.close();
  });

  test('serialize: the bytes of the database, which native SQLite opens', async () => {
    const file = path.join(dir, 'serialize.db');
    const db = await open(file);
    db.exec("create table t(a); insert into t values ('x'), ('y')");
    const bytes = db.serialize();
    assert.ok(Buffer.from(bytes).equals(fs.readFileSync(file)), 'serialize() differs from the file');
    db.close();
    const copy = new BetterSqlite3(Buffer.from(bytes));
    assert.deepEqual(copy.prepare('select a from t').pluck().all(), ['x', 'y']);
    copy.close();
  });
});

describe('through Mycelite: what functions computed is replicated as bytes', () => {
  test('a function used in an INSERT is in the journal and in the restore', async () => {
    const file = path.join(dir, 'app.db');
    const db = await open(file);
    let n = 0;
    db.function('ticket', () => `T-${++n}-${Math.random().toString(36).slice(2)}`);
    db.aggregate('joined', {
      start: () => [],
      step: (a: string[], s: string) => {
        a.push(s);
      },
      result: (a: string[]) => a.join(' '),
    });
    db.exec('create table orders(id text, qty int)');
    const insert = db.prepare('insert into orders values (ticket(), ?)');
    db.transaction(() => {
      for (let q = 1; q <= 3; q++) insert.run(q);
    })();
    const written = db.prepare('select joined(id) as ids from orders').get();
    db.close();
    const out = path.join(dir, 'restored.db');
    await restoreDatabase(nodeRuntime.fs, file, out);
    const copy = new BetterSqlite3(out, { readonly: true });
    const ids = copy.prepare('select id from orders order by rowid').all() as { id: string }[];
    copy.close();
    assert.equal(ids.map((r) => r.id).join(' '), (written as { ids: string }).ids);
    assert.match(ids[2]!.id, /^T-3-/);
  });
});
