// `mycelite query DB SQL`, as a user runs it: read-only SQL on a plain SQLite file, a writer's database
// while the writer has it open, and a replica; writes refused; nothing ever created.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { open } from '../src/node/index.js';
import { runCli } from './helpers/cli.js';
import { startTestHub } from './helpers/hub.js';
import { cleanupTempDirs, tempDir } from './helpers/util.js';

const children: ChildProcess[] = [];
const closers: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  for (const c of closers.reverse()) await c();
  cleanupTempDirs();
});

async function run(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const r = await runCli(args, { MYCELITE_TOKEN: '' }, (p) => children.push(p));
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('a plain SQLite file: rows as exec prints them, writes refused, nothing created', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'plain.db');
  const native = new BetterSqlite3(file);
  native.exec("create table t(a, b); insert into t values (1, 'x'), (2, null)");
  native.close();
  const table = await run('query', file, 'select a, b from t order by a');
  assert.equal(table.code, 0, table.stderr);
  assert.equal(table.stdout, 'a\tb\n1\tx\n2\t\n');
  const json = await run('query', file, 'select a from t order by a', '--json');
  assert.equal(json.stdout, '{"a":1}\n{"a":2}\n');
  const write = await run('query', file, 'insert into t values (3, 3)');
  assert.equal(write.code, 1);
  assert.match(write.stderr, /^mycelite: .*attempt to write a readonly database\n$/);
  assert.deepEqual(fs.readdirSync(dir), ['plain.db'], 'query created files');
});

test("a writer's database while the writer has it open", async () => {
  const file = path.join(tempDir(), 'app.db');
  const db = await open(file);
  closers.push(() => {
    db.close();
  });
  db.exec('create table t(a); insert into t values (1), (2), (3)');
  const r = await run('query', file, 'select count(*) as n from t');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'n\n3\n');
  // exec, the writer, is refused while the writer is open; query is not.
  const exec = await run('exec', file, 'select 1');
  assert.equal(exec.code, 1);
  assert.match(exec.stderr, /already open for writing/);
});

test('a replica, and --at from its journal', async () => {
  const h = await startTestHub(tempDir('mycelite-hubdata-'));
  closers.push(() => h.close());
  const dir = tempDir();
  const file = path.join(dir, 'app.db');
  const replica = path.join(dir, 'replica.db');
  const wt = await h.token('app', 'writer');
  const rt = await h.token('app', 'reader');
  // The replica starts from the hub's image at txid 2 and follows on from there.
  for (const sql of ['create table t(a); insert into t values (1)', 'insert into t values (2)']) {
    const db = await open(file);
    db.exec(sql);
    db.close();
    assert.equal((await run('push', file, '--hub', h.url, '--db', 'app', '--token', wt)).code, 0);
    const follow = await run('follow', h.url, replica, '--db', 'app', '--token', rt, '--once');
    assert.equal(follow.code, 0, follow.stderr);
  }
  const now = await run('query', replica, 'select count(*) as n from t');
  assert.equal(now.stdout, 'n\n2\n', now.stderr);
  const then = await run('query', replica, '--at', '2', 'select count(*) as n from t');
  assert.equal(then.stdout, 'n\n1\n', then.stderr);
});

test('errors: a missing file, a WAL database, a file that is not a database; nothing created', async () => {
  const dir = tempDir();
  const missing = await run('query', path.join(dir, 'missing.db'), 'select 1');
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /^mycelite: .*missing\.db does not exist\n$/);
  const wal = path.join(dir, 'wal.db');
  const native = new BetterSqlite3(wal);
  native.pragma('journal_mode = WAL');
  native.exec('create table t(a)');
  native.close();
  const r = await run('query', wal, 'select * from t');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^mycelite: .*wal\.db is in WAL mode/);
  fs.writeFileSync(path.join(dir, 'notes.txt'), 'hello, this is no database\n'.repeat(10));
  const text = await run('query', path.join(dir, 'notes.txt'), 'select 1 from sqlite_master');
  assert.equal(text.code, 1);
  assert.match(text.stderr, /file is not a database/);
  assert.deepEqual(fs.readdirSync(dir).sort(), ['notes.txt', 'wal.db']);
});
