// The logical half of many-device writes: a ChangeRecorder keeps each local transaction's change (a
// session changeset plus its DDL), applyLocalChange re-applies it on the hub's state in one transaction
// with conflict rules. Two real SQLite databases stand for the device and the hub; nothing is mocked.
import assert from 'node:assert/strict';
import { afterEach, before, describe, test } from 'node:test';
import { Database } from '../src/engine/database.js';
import { loadSqlite, type Sqlite3, type SqlValue } from '../src/engine/sqlite.js';
import {
  type ApplyOutcome,
  applyLocalChange,
  type Conflict,
  type ConflictChoice,
} from '../src/shared/apply.js';
import { ChangeRecorder, type LocalChange } from '../src/shared/changes.js';
import { readChangeset } from '../src/shared/changeset.js';

let sqlite3: Sqlite3;
const open: Database[] = [];
const recorders: ChangeRecorder[] = [];

before(async () => {
  sqlite3 = await loadSqlite();
});

afterEach(() => {
  for (const r of recorders.splice(0)) r.close();
  for (const db of open.splice(0)) db.close();
});

/** A fresh database with `sql` run on it. */
function database(sql: string): Database {
  const db = Database.open(sqlite3, ':memory:');
  open.push(db);
  db.exec('PRAGMA foreign_keys = ON');
  if (sql) db.exec(sql);
  return db;
}

/** A device (recording) and a hub that start from the same state. */
function twin(setup: string, options?: ConstructorParameters<typeof ChangeRecorder>[1]) {
  const device = database(setup);
  const hub = database(setup);
  const recorder = new ChangeRecorder(device, options);
  recorders.push(recorder);
  return {
    device,
    hub,
    recorder,
    /** Runs `sql` on the device and returns its recorded change. */
    local(sql: string): LocalChange {
      device.exec(sql);
      return recorder.take();
    },
  };
}

/** All rows of a table, in key order, as arrays. */
function rows(db: Database, table: string): SqlValue[][] {
  return db.prepare(`SELECT * FROM ${table} ORDER BY 1`).raw().all() as SqlValue[][];
}

/** The conflicts of an outcome, reduced to what the tests compare. */
function met(outcome: ApplyOutcome): [string, string, string, SqlValue[], ConflictChoice][] {
  return outcome.conflicts.map(({ conflict: c, choice }) => [c.kind, c.op, c.table, c.key, choice]);
}

/** The row changes of a change, reduced to text. */
function changes(db: Database, change: LocalChange): string[] {
  const show = (v: (SqlValue | undefined)[] | undefined) =>
    v === undefined ? '-' : v.map((x) => (x === undefined ? '?' : String(x))).join(',');
  return readChangeset(db, change.changeset).map(
    (c) => `${c.op} ${c.table}${c.indirect ? ' (indirect)' : ''} old=${show(c.old)} new=${show(c.new)}`,
  );
}

const BASE =
  "CREATE TABLE t(id INTEGER PRIMARY KEY, a, b); INSERT INTO t VALUES (1, 'a1', 'b1'), (2, 'a2', 'b2');";

describe('recording', () => {
  test('a savepoint rolled back inside a transaction leaves only what was kept', () => {
    const { device, recorder } = twin(BASE);
    device.exec(
      "BEGIN; UPDATE t SET a = 'kept' WHERE id = 1; SAVEPOINT s; UPDATE t SET b = 'undone' WHERE id = 1; " +
        "DELETE FROM t WHERE id = 2; INSERT INTO t VALUES (3, 'x', 'y'); ROLLBACK TO s; RELEASE s; COMMIT",
    );
    assert.deepEqual(changes(device, recorder.take()), ['update t old=1,a1,? new=?,kept,?']);
  });

  test('a whole transaction rolled back before take() gives an empty changeset; discard() forgets', () => {
    const { device, recorder } = twin(BASE);
    device.exec(
      "BEGIN; UPDATE t SET a = 'x' WHERE id = 1; DELETE FROM t WHERE id = 2; INSERT INTO t VALUES (3, 3, 3); ROLLBACK",
    );
    assert.equal(recorder.empty, false, 'the session saw the rows');
    const change = recorder.take();
    assert.deepEqual(changes(device, change), []);
    assert.deepEqual(change.ddl, { create: [], drop: [] });
    assert.equal(recorder.empty, true);
    device.exec("UPDATE t SET a = 'y' WHERE id = 1");
    assert.equal(recorder.empty, false);
    recorder.discard();
    assert.equal(recorder.empty, true);
    assert.deepEqual(changes(device, recorder.take()), []);
  });

  test('an insert then a delete of the same row records nothing', () => {
    const { device, recorder } = twin(BASE);
    device.exec('INSERT INTO t VALUES (9, 9, 9); DELETE FROM t WHERE id = 9');
    assert.deepEqual(changes(device, recorder.take()), []);
  });

  test('an update of a primary key is a delete and an insert', () => {
    const { device, recorder } = twin(BASE);
    device.exec('UPDATE t SET id = 20 WHERE id = 2');
    assert.deepEqual(changes(device, recorder.take()).sort(), [
      'delete t old=2,a2,b2 new=-',
      'insert t old=- new=20,a2,b2',
    ]);
  });

  test('take() starts afresh: each transaction is its own change', () => {
    const { recorder, local, device } = twin(BASE);
    assert.deepEqual(changes(device, local("UPDATE t SET a = 'one' WHERE id = 1")), [
      'update t old=1,a1,? new=?,one,?',
    ]);
    assert.deepEqual(changes(device, local("UPDATE t SET b = 'two' WHERE id = 2")), [
      'update t old=2,?,b2 new=?,?,two',
    ]);
    assert.equal(recorder.empty, true);
  });

  test('tables without a primary key are recorded by rowid; WITHOUT ROWID tables by their key', () => {
    const { device, local } = twin(
      "CREATE TABLE bag(x, y); INSERT INTO bag VALUES ('p', 1); CREATE TABLE kv(k TEXT PRIMARY KEY, v) WITHOUT ROWID;",
    );
    const change = local("UPDATE bag SET y = 2; INSERT INTO kv VALUES ('k', 'v')");
    assert.deepEqual(changes(device, change).sort(), [
      'insert kv old=- new=k,v',
      'update bag old=1,?,1 new=?,?,2',
    ]);
  });

  test('sqlite_% tables and excluded tables are not recorded', () => {
    const { device, local } = twin(
      'CREATE TABLE q(id INTEGER PRIMARY KEY AUTOINCREMENT, v); CREATE TABLE sync_state(k PRIMARY KEY, v);',
      {
        exclude: (table) => table.startsWith('sync_'),
      },
    );
    const change = local("INSERT INTO q(v) VALUES ('x'); INSERT INTO sync_state VALUES ('seq', 1); ANALYZE");
    assert.deepEqual(changes(device, change), ['insert q old=- new=1,x']);
  });

  test('an exclude option that throws: take() says so (with the cause) and nothing is lost', () => {
    const { device, recorder } = twin(BASE, {
      exclude: (table) => {
        if (table === 't') throw new Error('broken filter');
        return false;
      },
    });
    device.exec("UPDATE t SET a = 'x' WHERE id = 1");
    assert.throws(
      () => recorder.take(),
      (e: Error) =>
        /exclude option of ChangeRecorder threw/.test(e.message) &&
        (e.cause as Error).message === 'broken filter',
    );
    assert.deepEqual(changes(device, recorder.take()), ['update t old=1,a1,? new=?,x,?']);
  });

  test('keys beyond 2^53 come back exact (bigint)', () => {
    const { hub, local } = twin(
      'CREATE TABLE big(id INTEGER PRIMARY KEY, v); INSERT INTO big VALUES (1152921504606846976, 1);',
    );
    const change = local('UPDATE big SET v = 2');
    hub.exec('UPDATE big SET v = 3');
    const outcome = applyLocalChange(hub, change);
    assert.deepEqual(met(outcome), [['data', 'update', 'big', [2n ** 60n], 'local']]);
  });

  test('closing the database before the recorder is harmless', () => {
    const db = Database.open(sqlite3, ':memory:');
    const recorder = new ChangeRecorder(db);
    db.exec('CREATE TABLE t(id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1)');
    db.close();
    recorder.close();
    assert.throws(() => recorder.take(), /The ChangeRecorder is closed/);
  });

  test('a cascade is recorded as indirect rows', () => {
    const { device, local } = twin(
      'CREATE TABLE p(id INTEGER PRIMARY KEY); CREATE TABLE c(id INTEGER PRIMARY KEY, p REFERENCES p ON DELETE CASCADE);' +
        'INSERT INTO p VALUES (1); INSERT INTO c VALUES (10, 1);',
    );
    assert.deepEqual(changes(device, local('DELETE FROM p WHERE id = 1')).sort(), [
      'delete c (indirect) old=10,1 new=-',
      'delete p old=1 new=-',
    ]);
  });
});

describe('recording schema changes', () => {
  test('new objects are created tables first; dropped objects are dropped', () => {
    const { local } = twin(`${BASE} CREATE TABLE old(x); CREATE INDEX old_x ON old(x);`);
    const change = local(
      'CREATE TABLE n(id INTEGER PRIMARY KEY, a); CREATE TRIGGER tr AFTER INSERT ON n BEGIN SELECT 1; END;' +
        'CREATE VIEW v AS SELECT * FROM n; CREATE INDEX n_a ON n(a); DROP TABLE old;',
    );
    assert.equal(change.unmergeable, undefined);
    assert.deepEqual(change.ddl.create, [
      'CREATE TABLE n(id INTEGER PRIMARY KEY, a)',
      'CREATE INDEX n_a ON n(a)',
      'CREATE VIEW v AS SELECT * FROM n',
      'CREATE TRIGGER tr AFTER INSERT ON n BEGIN SELECT 1; END',
    ]);
    assert.deepEqual(change.ddl.drop, ['DROP INDEX IF EXISTS "old_x"', 'DROP TABLE IF EXISTS "old"']);
  });

  test('an ALTER of an existing table, a rename, or a drop and create with other SQL is unmergeable', () => {
    const { local } = twin(`${BASE} CREATE TABLE r(x); CREATE TABLE d(x);`);
    assert.match(local('ALTER TABLE t ADD COLUMN c').unmergeable ?? '', /^table "t" was changed/);
    assert.match(local('ALTER TABLE r RENAME TO r2').unmergeable ?? '', /^table "r" was renamed to "r2"/);
    assert.match(local('DROP TABLE d; CREATE TABLE d(x, y)').unmergeable ?? '', /^table "d" was changed/);
    assert.equal(
      local('CREATE TABLE later(x)').unmergeable,
      undefined,
      'the next change starts from the new schema',
    );
  });

  test('rows the session cannot see make the change unmergeable: CREATE TABLE … AS SELECT, FTS storage', () => {
    const { local, recorder, device } = twin(`${BASE} CREATE VIRTUAL TABLE f USING fts5(body);`);
    const copy = local('CREATE TABLE copy AS SELECT * FROM t');
    assert.match(
      copy.unmergeable ?? '',
      /^table "copy" was filled in a way SQLite does not record \(CREATE TABLE … AS SELECT\?\)/,
    );
    const fts = local("INSERT INTO f VALUES ('hello')");
    assert.match(fts.unmergeable ?? '', /^it writes "f_\w+", a virtual table's own storage \(FTS\?\)/);
    assert.equal(local('CREATE TABLE filled(x); INSERT INTO filled SELECT a FROM t').unmergeable, undefined);
    recorder.close();
    const excluding = new ChangeRecorder(device, { exclude: (table) => table.startsWith('f_') });
    recorders.push(excluding);
    device.exec("INSERT INTO f VALUES ('again')");
    assert.equal(excluding.take().unmergeable, undefined, 'excluded by the caller (who rebuilds the index)');
  });

  test('a table created and filled in one change is re-created and filled on the hub', () => {
    const { hub, local } = twin(BASE);
    const change = local(
      "CREATE TABLE notes(id TEXT PRIMARY KEY, body); INSERT INTO notes VALUES ('n1', 'hello')",
    );
    const outcome = applyLocalChange(hub, change);
    assert.deepEqual(outcome, { applied: true, conflicts: [] });
    assert.deepEqual(rows(hub, 'notes'), [['n1', 'hello']]);
  });
});

describe('re-applying: local op × what the hub did meanwhile (default policy)', () => {
  interface Case {
    name: string;
    hub: string;
    local: string;
    rows: SqlValue[][];
    conflicts: ReturnType<typeof met>;
    /** Further checks of the one conflict met. */
    conflict?: Partial<Conflict>;
  }
  const cases: Case[] = [
    // local INSERT of key 3
    {
      name: 'insert × untouched',
      hub: '',
      local: "INSERT INTO t VALUES (3, 'L', 'L')",
      rows: [
        [1, 'a1', 'b1'],
        [2, 'a2', 'b2'],
        [3, 'L', 'L'],
      ],
      conflicts: [],
    },
    {
      name: 'insert × other row updated',
      hub: "UPDATE t SET a = 'H' WHERE id = 1",
      local: "INSERT INTO t VALUES (3, 'L', 'L')",
      rows: [
        [1, 'H', 'b1'],
        [2, 'a2', 'b2'],
        [3, 'L', 'L'],
      ],
      conflicts: [],
    },
    {
      name: 'insert × same key inserted, same values',
      hub: "INSERT INTO t VALUES (3, 'L', 'L')",
      local: "INSERT INTO t VALUES (3, 'L', 'L')",
      rows: [
        [1, 'a1', 'b1'],
        [2, 'a2', 'b2'],
        [3, 'L', 'L'],
      ],
      conflicts: [['conflict', 'insert', 't', [3], 'hub']],
    },
    // local UPDATE of column a of row 1
    {
      name: 'update × untouched',
      hub: '',
      local: "UPDATE t SET a = 'L' WHERE id = 1",
      rows: [
        [1, 'L', 'b1'],
        [2, 'a2', 'b2'],
      ],
      conflicts: [],
    },
    {
      name: 'update × same column updated',
      hub: "UPDATE t SET a = 'H' WHERE id = 1",
      local: "UPDATE t SET a = 'L' WHERE id = 1",
      rows: [
        [1, 'L', 'b1'],
        [2, 'a2', 'b2'],
      ],
      conflicts: [['data', 'update', 't', [1], 'local']],
      conflict: { old: [1, 'a1', undefined], new: [undefined, 'L', undefined], current: [1, 'H', 'b1'] },
    },
    {
      name: 'update × other column updated',
      hub: "UPDATE t SET b = 'H' WHERE id = 1",
      local: "UPDATE t SET a = 'L' WHERE id = 1",
      rows: [
        [1, 'L', 'H'],
        [2, 'a2', 'b2'],
      ],
      conflicts: [],
    },
    {
      name: 'update × deleted',
      hub: 'DELETE FROM t WHERE id = 1',
      local: "UPDATE t SET a = 'L' WHERE id = 1",
      rows: [[2, 'a2', 'b2']],
      conflicts: [['notfound', 'update', 't', [1], 'hub']],
    },
    {
      name: 'update × deleted and inserted again with the same key',
      hub: "DELETE FROM t WHERE id = 1; INSERT INTO t VALUES (1, 'X', 'Y')",
      local: "UPDATE t SET a = 'L' WHERE id = 1",
      rows: [
        [1, 'L', 'Y'],
        [2, 'a2', 'b2'],
      ],
      conflicts: [['data', 'update', 't', [1], 'local']],
    },
    // local DELETE of row 1
    {
      name: 'delete × untouched',
      hub: '',
      local: 'DELETE FROM t WHERE id = 1',
      rows: [[2, 'a2', 'b2']],
      conflicts: [],
    },
    {
      name: 'delete × same column updated',
      hub: "UPDATE t SET a = 'H' WHERE id = 1",
      local: 'DELETE FROM t WHERE id = 1',
      rows: [[2, 'a2', 'b2']],
      conflicts: [['data', 'delete', 't', [1], 'local']],
      conflict: { old: [1, 'a1', 'b1'], current: [1, 'H', 'b1'] },
    },
    {
      name: 'delete × other column updated',
      hub: "UPDATE t SET b = 'H' WHERE id = 1",
      local: 'DELETE FROM t WHERE id = 1',
      rows: [[2, 'a2', 'b2']],
      conflicts: [['data', 'delete', 't', [1], 'local']],
    },
    {
      name: 'delete × deleted',
      hub: 'DELETE FROM t WHERE id = 1',
      local: 'DELETE FROM t WHERE id = 1',
      rows: [[2, 'a2', 'b2']],
      conflicts: [['notfound', 'delete', 't', [1], 'hub']],
    },
    {
      name: 'delete × deleted and inserted again with the same key',
      hub: "DELETE FROM t WHERE id = 1; INSERT INTO t VALUES (1, 'X', 'Y')",
      local: 'DELETE FROM t WHERE id = 1',
      rows: [[2, 'a2', 'b2']],
      conflicts: [['data', 'delete', 't', [1], 'local']],
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const { hub, local } = twin(BASE);
      const change = local(c.local);
      if (c.hub) hub.exec(c.hub);
      const outcome = applyLocalChange(hub, change);
      assert.equal(outcome.applied, true, outcome.rejected);
      assert.deepEqual(rows(hub, 't'), c.rows);
      assert.deepEqual(met(outcome), c.conflicts);
      if (c.conflict)
        assert.deepEqual(
          { ...outcome.conflicts[0]!.conflict, ...c.conflict },
          outcome.conflicts[0]!.conflict,
        );
    });
  }

  test('insert × same key inserted with other values: rejected, nothing applied, random keys recommended', () => {
    const { hub, local } = twin(BASE);
    const change = local("INSERT INTO t VALUES (3, 'L', 'L'); UPDATE t SET a = 'also' WHERE id = 2");
    hub.exec("INSERT INTO t VALUES (3, 'H', 'H')");
    const outcome = applyLocalChange(hub, change);
    assert.equal(outcome.applied, false);
    assert.match(
      outcome.rejected ?? '',
      /insert of "t" \[3\]: another row with this key was added meanwhile/,
    );
    assert.match(outcome.rejected ?? '', /use random keys \(e\.g\. UUID text\)/);
    assert.deepEqual(met(outcome), [['conflict', 'insert', 't', [3], 'reject']]);
    assert.deepEqual(outcome.conflicts[0]!.conflict.current, [3, 'H', 'H']);
    assert.deepEqual(
      rows(hub, 't'),
      [
        [1, 'a1', 'b1'],
        [2, 'a2', 'b2'],
        [3, 'H', 'H'],
      ],
      'the update of row 2 did not stay',
    );
    assert.equal(hub.inTransaction, false);
  });

  test('two devices inserting offline with random TEXT keys: both rows kept', () => {
    const setup = 'CREATE TABLE notes(id TEXT PRIMARY KEY, body);';
    const a = twin(setup);
    const b = database(setup);
    const recorderB = new ChangeRecorder(b);
    recorders.push(recorderB);
    const changeA = a.local(`INSERT INTO notes VALUES ('${crypto.randomUUID()}', 'from a')`);
    b.exec(`INSERT INTO notes VALUES ('${crypto.randomUUID()}', 'from b')`);
    const changeB = recorderB.take();
    assert.deepEqual(applyLocalChange(a.hub, changeB), { applied: true, conflicts: [] });
    assert.deepEqual(applyLocalChange(a.hub, changeA), { applied: true, conflicts: [] });
    assert.deepEqual(
      rows(a.hub, 'notes')
        .map((r) => r[1])
        .sort(),
      ['from a', 'from b'],
    );
  });
});

describe('re-applying: constraints and foreign keys reject the whole transaction', () => {
  const SETUP =
    'CREATE TABLE u(id TEXT PRIMARY KEY, email TEXT UNIQUE, lo INTEGER, hi INTEGER, CHECK (lo <= hi));' +
    "INSERT INTO u VALUES ('u1', 'one@x', 1, 10); CREATE TABLE other(id INTEGER PRIMARY KEY, v);";
  const cases: { name: string; hub: string; local: string; message: RegExp }[] = [
    {
      name: 'UNIQUE',
      hub: "INSERT INTO u VALUES ('h', 'two@x', 0, 0)",
      local: "INSERT INTO u VALUES ('l', 'two@x', 0, 0)",
      message: /insert of "u" \['l'\]: constraint conflict: UNIQUE constraint failed: u\.email/,
    },
    {
      name: 'CHECK',
      // Each side keeps lo <= hi; together they break it.
      hub: "UPDATE u SET hi = 3 WHERE id = 'u1'",
      local: "UPDATE u SET lo = 5 WHERE id = 'u1'",
      message: /update of "u" \['u1'\]: constraint conflict: CHECK constraint failed: lo <= hi/,
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const { hub, local } = twin(SETUP);
      const change = local(`INSERT INTO other VALUES (1, 'applies alone'); ${c.local}`);
      if (c.hub) hub.exec(c.hub);
      const before = hub.prepare('SELECT * FROM u ORDER BY id').raw().all();
      const outcome = applyLocalChange(hub, change);
      assert.equal(outcome.applied, false);
      assert.match(outcome.rejected ?? '', c.message);
      assert.equal(outcome.conflicts.at(-1)!.choice, 'reject');
      assert.deepEqual(hub.prepare('SELECT * FROM u ORDER BY id').raw().all(), before);
      assert.deepEqual(rows(hub, 'other'), [], 'nothing of the transaction stays');
    });
  }

  test('NOT NULL', () => {
    const { hub, local } = twin(
      'CREATE TABLE n(id TEXT PRIMARY KEY, v); CREATE TABLE other(id INTEGER PRIMARY KEY, v);',
    );
    const change = local("INSERT INTO other VALUES (1, 'x'); INSERT INTO n VALUES ('a', NULL)");
    // The hub's table has the same columns but v NOT NULL (made by another history of the schema).
    hub.exec('DROP TABLE n; CREATE TABLE n(id TEXT PRIMARY KEY, v NOT NULL)');
    const outcome = applyLocalChange(hub, change);
    assert.equal(outcome.applied, false);
    assert.match(outcome.rejected ?? '', /insert of "n" \['a'\]: .*NOT NULL constraint failed: n\.v/);
    assert.deepEqual(rows(hub, 'other'), []);
  });

  const FK =
    'CREATE TABLE p(id TEXT PRIMARY KEY); CREATE TABLE c(id TEXT PRIMARY KEY, p REFERENCES p);' +
    "CREATE TABLE other(id INTEGER PRIMARY KEY, v); INSERT INTO p VALUES ('p1'), ('p2');";

  test('a local row referencing a parent the hub deleted: rejected', () => {
    const { hub, local } = twin(FK);
    const change = local("INSERT INTO other VALUES (1, 'x'); INSERT INTO c VALUES ('c1', 'p1')");
    hub.exec("DELETE FROM p WHERE id = 'p1'");
    const outcome = applyLocalChange(hub, change);
    assert.equal(outcome.applied, false);
    assert.equal(
      outcome.rejected,
      'insert of "c" [\'c1\'] references a row of "p" that is not there (deleted meanwhile?)',
    );
    assert.deepEqual(met(outcome), [['foreign_key', 'insert', 'c', ['c1'], 'reject']]);
    assert.deepEqual(rows(hub, 'other'), []);
    assert.deepEqual(rows(hub, 'c'), []);
  });

  test('the same with WITHOUT ROWID tables and a composite foreign key: each row named', () => {
    const { hub, local } = twin(
      'CREATE TABLE p(a TEXT, b TEXT, PRIMARY KEY (a, b)) WITHOUT ROWID;' +
        'CREATE TABLE c(id TEXT PRIMARY KEY, pa, pb, FOREIGN KEY (pa, pb) REFERENCES p) WITHOUT ROWID;' +
        "INSERT INTO p VALUES ('x', '1'), ('y', '2');",
    );
    const change = local("INSERT INTO c VALUES ('c1', 'x', '1'), ('c2', 'x', '1'), ('c3', 'y', '2')");
    hub.exec("DELETE FROM p WHERE a = 'x'");
    const outcome = applyLocalChange(hub, change);
    assert.equal(outcome.applied, false);
    assert.deepEqual(met(outcome), [
      ['foreign_key', 'insert', 'c', ['c1'], 'reject'],
      ['foreign_key', 'insert', 'c', ['c2'], 'reject'],
    ]);
    assert.deepEqual(outcome.conflicts[0]!.conflict.current, ['c1', 'x', '1']);
    assert.equal(
      outcome.rejected,
      'insert of "c" [\'c1\'] references a row of "p" that is not there (deleted meanwhile?)',
    );
    assert.deepEqual(rows(hub, 'c'), []);
  });

  test('a local delete of a parent the hub gave a new child: rejected', () => {
    const { hub, local } = twin(FK);
    const change = local("INSERT INTO other VALUES (1, 'x'); DELETE FROM p WHERE id = 'p2'");
    hub.exec("INSERT INTO c VALUES ('h1', 'p2')");
    const outcome = applyLocalChange(hub, change);
    assert.equal(outcome.applied, false);
    assert.equal(
      outcome.rejected,
      'the change removes "p" [\'p2\'], which a row of "c" added meanwhile still references',
    );
    assert.deepEqual(met(outcome), [['foreign_key', 'delete', 'p', ['p2'], 'reject']]);
    assert.deepEqual(rows(hub, 'p'), [['p1'], ['p2']]);
    assert.deepEqual(rows(hub, 'other'), []);
  });

  test('a recorded cascade is applied once (foreign key actions do not run again): no conflicts', () => {
    const { hub, local } = twin(
      'CREATE TABLE p(id INTEGER PRIMARY KEY); CREATE TABLE c(id INTEGER PRIMARY KEY, p REFERENCES p ON DELETE CASCADE);' +
        'INSERT INTO p VALUES (1), (2); INSERT INTO c VALUES (10, 1), (11, 1), (20, 2);',
    );
    const change = local('DELETE FROM p WHERE id = 1');
    const outcome = applyLocalChange(hub, change);
    assert.deepEqual(outcome, { applied: true, conflicts: [] });
    assert.deepEqual(rows(hub, 'c'), [[20, 2]]);
  });

  test('triggers do not fire again: what they wrote was recorded', () => {
    const { hub, local } = twin(
      'CREATE TABLE t(id TEXT PRIMARY KEY, v); CREATE TABLE log(id TEXT PRIMARY KEY, what);' +
        "CREATE TRIGGER audit AFTER UPDATE ON t BEGIN INSERT INTO log VALUES (lower(hex(randomblob(8))), 'v=' || new.v); END;" +
        "INSERT INTO t VALUES ('a', 1);",
    );
    const change = local("UPDATE t SET v = 2 WHERE id = 'a'");
    const outcome = applyLocalChange(hub, change);
    assert.deepEqual(outcome, { applied: true, conflicts: [] });
    assert.deepEqual(
      rows(hub, 'log').map((r) => r[1]),
      ['v=2'],
    );
    hub.exec("UPDATE t SET v = 3 WHERE id = 'a'");
    assert.equal(rows(hub, 'log').length, 2, 'triggers fire again afterwards');
  });
});

describe('re-applying: more', () => {
  test('lesson 11: a rejected insert, then a later change updating that row: notfound, dropped, reported', () => {
    const { hub, local } = twin('CREATE TABLE u(id TEXT PRIMARY KEY, email TEXT UNIQUE, name);');
    const first = local("INSERT INTO u VALUES ('l1', 'x@y', 'local')");
    const second = local("UPDATE u SET name = 'renamed' WHERE id = 'l1'");
    hub.exec("INSERT INTO u VALUES ('h1', 'x@y', 'hub')");
    const one = applyLocalChange(hub, first);
    assert.equal(one.applied, false);
    assert.match(one.rejected ?? '', /UNIQUE constraint failed: u\.email/);
    const two = applyLocalChange(hub, second);
    assert.equal(two.applied, true);
    assert.deepEqual(met(two), [['notfound', 'update', 'u', ['l1'], 'hub']]);
    assert.deepEqual(rows(hub, 'u'), [['h1', 'x@y', 'hub']]);
  });

  test('DDL made identically on both sides is skipped; differently, rejected', () => {
    const same = twin(BASE);
    const change = same.local(
      "CREATE TABLE tags(id TEXT PRIMARY KEY, name); INSERT INTO tags VALUES ('t1', 'red')",
    );
    same.hub.exec("CREATE TABLE tags(id TEXT PRIMARY KEY, name); INSERT INTO tags VALUES ('t2', 'blue')");
    assert.deepEqual(applyLocalChange(same.hub, change), { applied: true, conflicts: [] });
    assert.deepEqual(rows(same.hub, 'tags'), [
      ['t1', 'red'],
      ['t2', 'blue'],
    ]);

    const other = twin(BASE);
    const change2 = other.local(
      "CREATE TABLE tags(id TEXT PRIMARY KEY, name); INSERT INTO tags VALUES ('t1', 'red')",
    );
    other.hub.exec(
      "CREATE TABLE tags(id TEXT PRIMARY KEY, label, color); INSERT INTO tags VALUES ('t2', 'blue', 1)",
    );
    const outcome = applyLocalChange(other.hub, change2);
    assert.equal(outcome.applied, false);
    assert.match(
      outcome.rejected ?? '',
      /^its schema change cannot be made here \(table tags already exists; .*CREATE TABLE tags/,
    );
    assert.deepEqual(rows(other.hub, 'tags'), [['t2', 'blue', 1]]);
  });

  test('a dropped table is dropped on the hub, after the rows', () => {
    const { hub, local } = twin(`${BASE} CREATE TABLE gone(x);`);
    const change = local("UPDATE t SET a = 'L' WHERE id = 1; DROP TABLE gone");
    assert.deepEqual(applyLocalChange(hub, change), { applied: true, conflicts: [] });
    assert.equal(hub.prepare("SELECT count(*) FROM sqlite_schema WHERE name = 'gone'").pluck().get(), 0);
    assert.deepEqual(rows(hub, 't')[0], [1, 'L', 'b1']);
  });

  test('a table without a primary key: rows keyed by rowid', () => {
    const { hub, local } = twin("CREATE TABLE bag(x, y); INSERT INTO bag VALUES ('p', 1), ('q', 2);");
    const change = local("UPDATE bag SET y = 10 WHERE x = 'p'; INSERT INTO bag VALUES ('r', 3)");
    hub.exec("UPDATE bag SET y = 5 WHERE x = 'p'");
    const outcome = applyLocalChange(hub, change);
    assert.equal(outcome.applied, true);
    assert.deepEqual(met(outcome), [['data', 'update', 'bag', [1], 'local']]);
    assert.deepEqual(outcome.conflicts[0]!.conflict.current, ['p', 5], 'the rowid is the key, not a column');
    assert.deepEqual(outcome.conflicts[0]!.conflict.new, [undefined, 10]);
    assert.deepEqual(hub.prepare('SELECT rowid, x, y FROM bag ORDER BY rowid').raw().all(), [
      [1, 'p', 10],
      [2, 'q', 2],
      [3, 'r', 3],
    ]);
  });

  test('a table without a primary key: two devices inserting offline mint the same rowid (rejected, said why)', () => {
    const { hub, local } = twin("CREATE TABLE bag(x, y); INSERT INTO bag VALUES ('p', 1);");
    const change = local("INSERT INTO bag VALUES ('from device', 2)");
    hub.exec("INSERT INTO bag VALUES ('from another device', 3)");
    const outcome = applyLocalChange(hub, change);
    assert.equal(outcome.applied, false);
    assert.match(
      outcome.rejected ?? '',
      /insert of "bag" \[2\]: .*a table without PRIMARY KEY is keyed by rowid\); use random keys/,
    );
    assert.deepEqual(rows(hub, 'bag'), [
      ['from another device', 3],
      ['p', 1],
    ]);
  });

  test('generated columns are not part of the change; the key after them still matches', () => {
    const { hub, local } = twin(
      'CREATE TABLE g(a, twice AS (a * 2), id TEXT PRIMARY KEY, thrice AS (a * 3) STORED);',
    );
    const change = local("INSERT INTO g(a, id) VALUES (2, 'k'); INSERT INTO g(a, id) VALUES (5, 'm')");
    hub.exec("INSERT INTO g(a, id) VALUES (7, 'm')");
    const outcome = applyLocalChange(hub, change, () => 'local');
    assert.equal(outcome.applied, true);
    assert.deepEqual(met(outcome), [['conflict', 'insert', 'g', ['m'], 'local']]);
    assert.deepEqual(hub.prepare('SELECT id, a, twice, thrice FROM g ORDER BY id').raw().all(), [
      ['k', 2, 4, 6],
      ['m', 5, 10, 15],
    ]);
  });

  test('a WITHOUT ROWID table with a composite key', () => {
    const { hub, local } = twin(
      "CREATE TABLE kv(ns TEXT, k TEXT, v, PRIMARY KEY (ns, k)) WITHOUT ROWID; INSERT INTO kv VALUES ('a', 'x', 1), ('a', 'y', 2);",
    );
    const change = local(
      "UPDATE kv SET v = 10 WHERE k = 'x'; DELETE FROM kv WHERE k = 'y'; INSERT INTO kv VALUES ('b', 'z', 3)",
    );
    hub.exec("UPDATE kv SET v = 5 WHERE k = 'x'");
    const outcome = applyLocalChange(hub, change);
    assert.equal(outcome.applied, true);
    assert.deepEqual(met(outcome), [['data', 'update', 'kv', ['a', 'x'], 'local']]);
    assert.deepEqual(rows(hub, 'kv'), [
      ['a', 'x', 10],
      ['b', 'z', 3],
    ]);
  });

  test('an unmergeable change is rejected with its reason and nothing is run', () => {
    const { hub, local } = twin(BASE);
    const change = local("ALTER TABLE t ADD COLUMN c; UPDATE t SET a = 'L' WHERE id = 1");
    assert.ok(change.unmergeable);
    const outcome = applyLocalChange(hub, change);
    assert.deepEqual(outcome, { applied: false, conflicts: [], rejected: change.unmergeable });
    assert.deepEqual(rows(hub, 't'), [
      [1, 'a1', 'b1'],
      [2, 'a2', 'b2'],
    ]);
  });

  test('tables that do not match are rejected, not skipped', () => {
    const setups: [string, RegExp][] = [
      ['DROP TABLE t', /^table "t" does not exist here, so its rows cannot be applied$/],
      [
        'DROP TABLE t; CREATE TABLE t(id INTEGER PRIMARY KEY, a)',
        /^table "t" has 2 columns here, the change has 3/,
      ],
      ['DROP TABLE t; CREATE TABLE t(id, a PRIMARY KEY, b)', /^table "t" has another primary key here/],
      ['DROP TABLE t; CREATE VIEW t AS SELECT 1 AS id, 2 AS a, 3 AS b', /^table "t" does not exist here/],
    ];
    for (const [hubSql, reason] of setups) {
      const { hub, local } = twin(BASE);
      const change = local(
        "UPDATE t SET a = 'L' WHERE id = 1; CREATE TABLE side(x); INSERT INTO side VALUES (1)",
      );
      hub.exec(hubSql);
      const outcome = applyLocalChange(hub, change);
      assert.equal(outcome.applied, false, hubSql);
      assert.match(outcome.rejected ?? '', reason);
      assert.equal(hub.prepare("SELECT count(*) FROM sqlite_schema WHERE name = 'side'").pluck().get(), 0);
    }
  });

  test('a table with more columns on the hub (added at the end) takes the change', () => {
    const { hub, local } = twin(BASE);
    const change = local("UPDATE t SET a = 'L' WHERE id = 1; INSERT INTO t VALUES (3, 'n', 'n')");
    hub.exec("ALTER TABLE t ADD COLUMN c DEFAULT 'dflt'");
    assert.deepEqual(applyLocalChange(hub, change), { applied: true, conflicts: [] });
    assert.deepEqual(rows(hub, 't'), [
      [1, 'L', 'b1', 'dflt'],
      [2, 'a2', 'b2', 'dflt'],
      [3, 'n', 'n', 'dflt'],
    ]);
  });
});

describe('re-applying: the handler', () => {
  /** Row 1's column a changed on both sides: a data conflict. */
  function dataConflict() {
    const t = twin(BASE);
    const change = t.local("UPDATE t SET a = 'L' WHERE id = 1; INSERT INTO t VALUES (3, 'n', 'n')");
    t.hub.exec("UPDATE t SET a = 'H' WHERE id = 1");
    return { ...t, change };
  }

  test("'hub' keeps the database's row, the rest applies", () => {
    const { hub, change } = dataConflict();
    const seen: Conflict[] = [];
    const outcome = applyLocalChange(hub, change, (c) => {
      seen.push(c);
      return 'hub';
    });
    assert.equal(outcome.applied, true);
    assert.deepEqual(met(outcome), [['data', 'update', 't', [1], 'hub']]);
    assert.equal(seen.length, 1);
    assert.deepEqual(rows(hub, 't'), [
      [1, 'H', 'b1'],
      [2, 'a2', 'b2'],
      [3, 'n', 'n'],
    ]);
  });

  test("'local' overwrites the row's changed columns", () => {
    const { hub, change } = dataConflict();
    const outcome = applyLocalChange(hub, change, () => 'local');
    assert.deepEqual(met(outcome), [['data', 'update', 't', [1], 'local']]);
    assert.deepEqual(rows(hub, 't')[0], [1, 'L', 'b1']);
  });

  test("'reject' rejects the whole transaction", () => {
    const { hub, change } = dataConflict();
    const outcome = applyLocalChange(hub, change, () => 'reject');
    assert.equal(outcome.applied, false);
    assert.equal(outcome.rejected, 'the conflict handler rejected it at a data conflict: update of "t" [1]');
    assert.deepEqual(rows(hub, 't'), [
      [1, 'H', 'b1'],
      [2, 'a2', 'b2'],
    ]);
  });

  test('undefined keeps the default; an insert conflict answered local replaces the row', () => {
    const { hub, local } = twin(BASE);
    const change = local("INSERT INTO t VALUES (3, 'L', 'L'); UPDATE t SET a = 'L' WHERE id = 1");
    hub.exec("INSERT INTO t VALUES (3, 'H', 'H'); UPDATE t SET a = 'H' WHERE id = 1");
    const outcome = applyLocalChange(hub, change, (c) => (c.kind === 'conflict' ? 'local' : undefined));
    assert.equal(outcome.applied, true);
    assert.deepEqual(met(outcome).sort(), [
      ['conflict', 'insert', 't', [3], 'local'],
      ['data', 'update', 't', [1], 'local'],
    ]);
    assert.deepEqual(rows(hub, 't'), [
      [1, 'L', 'b1'],
      [2, 'a2', 'b2'],
      [3, 'L', 'L'],
    ]);
  });

  test("'local' for a delete whose row is gone is the same as 'hub'", () => {
    const { hub, local } = twin(BASE);
    const change = local('DELETE FROM t WHERE id = 1');
    hub.exec('DELETE FROM t WHERE id = 1');
    const outcome = applyLocalChange(hub, change, () => 'local');
    assert.equal(outcome.applied, true);
    assert.deepEqual(met(outcome), [['notfound', 'delete', 't', [1], 'local']]);
  });

  test("'hub' for a constraint conflict drops that row change only", () => {
    const { hub, local } = twin(
      "CREATE TABLE u(id TEXT PRIMARY KEY, email UNIQUE); INSERT INTO u VALUES ('u1', 'a@x');",
    );
    const change = local("INSERT INTO u VALUES ('l1', 'b@x'); INSERT INTO u VALUES ('l2', 'c@x')");
    hub.exec("INSERT INTO u VALUES ('h1', 'b@x')");
    const outcome = applyLocalChange(hub, change, () => 'hub');
    assert.equal(outcome.applied, true);
    assert.deepEqual(met(outcome), [['constraint', 'insert', 'u', ['l1'], 'hub']]);
    assert.deepEqual(rows(hub, 'u'), [
      ['h1', 'b@x'],
      ['l2', 'c@x'],
      ['u1', 'a@x'],
    ]);
  });

  test('a choice the kind does not allow throws one clear line, and nothing is applied', () => {
    const refused: [string, string, RegExp][] = [
      [
        'DELETE FROM t WHERE id = 1',
        "UPDATE t SET a = 'L' WHERE id = 1; INSERT INTO t VALUES (3, 3, 3)",
        /chose 'local' for a notfound conflict \(update of "t" \[1\]\), which cannot be done: choose 'hub' or 'reject'/,
      ],
    ];
    for (const [hubSql, localSql, message] of refused) {
      const { hub, local } = twin(BASE);
      const change = local(localSql);
      hub.exec(hubSql);
      assert.throws(() => applyLocalChange(hub, change, () => 'local'), message);
      assert.equal(hub.inTransaction, false);
      assert.deepEqual(rows(hub, 't'), [[2, 'a2', 'b2']]);
    }
    const { hub, local } = twin(
      "CREATE TABLE p(id TEXT PRIMARY KEY); CREATE TABLE c(id TEXT PRIMARY KEY, p REFERENCES p); INSERT INTO p VALUES ('p1');",
    );
    const change = local("INSERT INTO c VALUES ('c1', 'p1')");
    hub.exec('DELETE FROM p');
    assert.throws(
      () => applyLocalChange(hub, change, () => 'hub'),
      /chose 'hub' for a foreign_key conflict .* choose 'reject'/,
    );
    assert.deepEqual(rows(hub, 'c'), []);
  });

  test('a handler that throws: the error comes out, nothing is applied', () => {
    const { hub, change } = dataConflict();
    assert.throws(
      () =>
        applyLocalChange(hub, change, () => {
          throw new Error('handler broke');
        }),
      /handler broke/,
    );
    assert.equal(hub.inTransaction, false);
    assert.deepEqual(rows(hub, 't').length, 2);
  });

  test('applyLocalChange refuses to run inside a transaction', () => {
    const { hub, change } = dataConflict();
    hub.exec('BEGIN');
    assert.throws(() => applyLocalChange(hub, change), /runs its own transaction: call it outside one/);
    hub.exec('ROLLBACK');
  });
});
