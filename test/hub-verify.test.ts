// The hub never stores a snapshot that does not apply to its head, and never serves a damaged copy of
// its journal (docs/ARCHITECTURE.md, "Hub"; docs/RELIABILITY.md). Real SQLite, real files, real HTTP.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { runCli } from './helpers/cli.js';
import { startTestHub, type TestHub } from './helpers/hub.js';
import { cleanupTempDirs, fileHash, tempDir } from './helpers/util.js';

const closers: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of closers.reverse()) await c();
  cleanupTempDirs();
});

async function hub(dir = tempDir('mycelite-hubdata-')): Promise<TestHub> {
  const h = await startTestHub(dir);
  closers.push(() => h.close());
  return h;
}

test('CLI: a database changed behind Mycelite pushes a snapshot the hub refuses; new replicas still follow', async () => {
  const h = await hub();
  const dir = tempDir();
  const file = path.join(dir, 'app.db');
  const env = { MYCELITE_TOKEN: await h.token('app', 'writer') };
  const push = ['push', file, '--hub', h.url, '--db', 'app'];
  let r = await runCli(['exec', file, "create table t(a); insert into t values ('one'), ('two')"]);
  assert.equal(r.status, 0, r.stderr);
  r = await runCli(push, env);
  assert.equal(r.status, 0, r.stderr);
  // A native process changes a row in place (the file keeps its size: open() does not notice).
  const native = new BetterSqlite3(file);
  native.prepare("update t set a = 'six' where a = 'two'").run();
  native.close();
  r = await runCli(['exec', file, "insert into t values ('three')"]);
  assert.equal(r.status, 0, r.stderr);
  r = await runCli(push, env);
  assert.equal(r.status, 1, `push must fail: ${r.stdout}${r.stderr}`);
  assert.match(r.stderr, /refused snapshot 3 of database app .*does not apply/);
  assert.match(r.stderr, /mycelite verify/);
  const state = (await (
    await fetch(`${h.url}/v1/db/app`, { headers: { authorization: `Bearer ${await h.token('app', 'reader')}` } })
  ).json()) as { head: { txid: string } };
  assert.equal(state.head.txid, '2', 'the hub stored nothing of the refused push');
  // A new replica bootstraps from the hub's head and equals the writer's database as it was at txid 2.
  const replica = path.join(dir, 'replica.db');
  r = await runCli(['follow', h.url, replica, '--db', 'app', '--once'], {
    MYCELITE_TOKEN: await h.token('app', 'reader'),
  });
  assert.equal(r.status, 0, r.stderr);
  const rows = new BetterSqlite3(replica, { readonly: true });
  assert.deepEqual(rows.prepare('select a from t order by rowid').pluck().all(), ['one', 'two']);
  rows.close();
  void fileHash;
});
