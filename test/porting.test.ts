/**
 * A small app written for better-sqlite3 — prepared statements, a transaction, a user-defined function
 * and aggregate, pragma, iterate — runs unchanged on Mycelite: the only change is `await open(file)` for
 * `new Database(file)`. Both run on real files; their results are the same.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { open } from '../src/node/index.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-porting-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The methods the app uses, which both libraries have. */
interface Db {
  exec(sql: string): unknown;
  prepare(sql: string): {
    run(...p: unknown[]): { changes: number };
    get(...p: unknown[]): unknown;
    all(...p: unknown[]): unknown[];
    iterate(...p: unknown[]): IterableIterator<unknown>;
    pluck(on?: boolean): unknown;
  };
  transaction<F extends (...a: never[]) => unknown>(fn: F): F;
  function(name: string, options: { deterministic?: boolean }, fn: (...a: never[]) => unknown): unknown;
  aggregate(name: string, options: { start: unknown; step: (t: never, v: never) => unknown }): unknown;
  pragma(source: string, options?: { simple?: boolean }): unknown;
  close(): unknown;
}

/** The app: a ledger with a category function, a bulk import in one transaction, a report. */
function ledgerApp(db: Db): unknown {
  db.pragma('foreign_keys = ON');
  db.function('category', { deterministic: true }, (label: string) =>
    /rent|mortgage/i.test(label) ? 'housing' : /coffee|lunch/i.test(label) ? 'food' : 'other',
  );
  db.aggregate('spent', { start: 0, step: (total: number, cents: number) => total + Math.abs(cents) });
  db.exec('create table entry(id integer primary key, label text not null, cents integer not null)');
  db.exec('create index entry_category on entry(category(label))');
  const insert = db.prepare('insert into entry(label, cents) values (?, ?)');
  const importAll = db.transaction((rows: [string, number][]) => {
    let n = 0;
    for (const [label, cents] of rows) n += insert.run(label, cents).changes;
    return n;
  });
  const imported = importAll([
    ['Rent March', -120000],
    ['Coffee', -350],
    ['Lunch', -1290],
    ['Salary', 450000],
  ]);
  const failed = (() => {
    try {
      importAll([
        ['Book', -2000],
        [null as unknown as string, 1],
      ]);
      return 'no error';
    } catch (e) {
      return (e as { code?: string }).code;
    }
  })();
  const report = db
    .prepare('select category(label) as category, spent(cents) as spent from entry group by 1 order by 1')
    .all();
  const labels: unknown[] = [];
  for (const row of db.prepare('select label from entry where cents < ? order by id').iterate(0))
    labels.push(row);
  const count = db.prepare('select count(*) as n from entry').get();
  const byIndex = db.prepare("select count(*) as n from entry where category(label) = 'food'").get();
  return {
    imported,
    failed,
    report,
    labels,
    count,
    byIndex,
    fk: db.pragma('foreign_keys', { simple: true }),
  };
}

test('a better-sqlite3 app runs on Mycelite by changing how the database is opened', async () => {
  const native = new BetterSqlite3(path.join(dir, 'native.db'));
  const expected = ledgerApp(native as unknown as Db);
  native.close();

  const db = await open(path.join(dir, 'mycelite.db'));
  const actual = ledgerApp(db as unknown as Db);
  const txid = db.position().txid;
  db.close();

  assert.deepEqual(actual, expected);
  assert.deepEqual((actual as { count: unknown }).count, { n: 4 });
  assert.equal((actual as { failed: unknown }).failed, 'SQLITE_CONSTRAINT_NOTNULL');
  assert.equal(txid, 3n, 'create table, create index, the import (the failed one rolled back)');
});
