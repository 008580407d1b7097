// Going back to an earlier point is a revert: one new snapshot whose state equals the point, so the
// history stays linear, everything after the point stays restorable, and hubs and replicas follow
// (issue 15, case 2: `restore DB --output DB --force` then `exec` used to write a history that no longer
// replayed and poisoned the hub).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { open, openReplica, ViewRangeError } from '../src/node/index.js';
import { runCli } from './helpers/cli.js';
import { startTestHub } from './helpers/hub.js';
import { cleanupTempDirs, fileHash, replayMatches, replayTo, tempDir } from './helpers/util.js';

const cleanups: (() => unknown)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanupTempDirs();
});

async function threeRows(): Promise<string> {
  const db = path.join(tempDir(), 'a.db');
  for (const sql of [
    'create table t(x)',
    'insert into t values (1)',
    'insert into t values (2)',
    'insert into t values (3)',
  ]) {
    const r = await runCli(['exec', db, sql]);
    assert.equal(r.status, 0, r.stderr);
  }
  return db;
}

async function count(db: string): Promise<string> {
  const r = await runCli(['exec', db, 'select count(*) from t']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, '', 'no warning: the revert is not an outside change');
  return r.stdout.trim().split('\n')[1]!;
}

describe('revert', () => {
  test('mycelite revert --txid: the state of the point as a new snapshot, the later points kept', async () => {
    const db = await threeRows();
    const atTwo = fileHash(await replayTo(db, { txid: 2n }));
    const before = fileHash(db);
    const r = await runCli(['revert', db, '--txid', '2']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(
      r.stdout,
      /^reverted .*a\.db to txid 2 \(.*\) as snapshot 5 \(the history after it is kept\)\n$/,
    );
    assert.equal(fileHash(db), atTwo, 'byte for byte the state of txid 2');
    assert.equal(await count(db), '1');
    assert.ok((await replayMatches(db)).ok);
    assert.equal(fileHash(await replayTo(db, { txid: 4n })), before, 'the point before the revert is kept');
    const v = await runCli(['verify', db]);
    assert.equal(v.status, 0, v.stdout + v.stderr);
    // The point after it is still there: revert to it.
    const back = await runCli(['revert', db, '--txid', '4']);
    assert.equal(back.status, 0, back.stderr);
    assert.equal(await count(db), '3');
    assert.ok((await replayMatches(db)).ok);
  });

  test('restore DB --output DB --force is a revert, and exec after it writes a history that replays', async () => {
    const db = await threeRows();
    const r = await runCli(['restore', db, '--txid', '1', '--output', db, '--force']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(
      r.stdout,
      /reverted .* to txid 1 .* as snapshot 5 .*restoring over the database itself is `mycelite revert`/,
    );
    const w = await runCli(['exec', db, 'insert into t values (9); select count(*) from t']);
    assert.equal(w.status, 0, w.stderr);
    assert.equal(w.stderr, '');
    assert.equal(w.stdout, 'count(*)\n1\n');
    assert.ok((await replayMatches(db)).ok);
    const v = await runCli(['verify', db]);
    assert.equal(v.status, 0, v.stdout + v.stderr);
    // Without --force it refuses, as restore always did.
    const refused = await runCli(['restore', db, '--txid', '1', '--output', db]);
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /exists: choose another --output or pass --force/);
  });

  test('the hub and a new replica follow a revert', async () => {
    const db = await threeRows();
    const h = await startTestHub();
    cleanups.push(() => h.close());
    const token = await h.token('app', 'writer');
    const push = ['push', db, '--hub', h.url, '--db', 'app', '--token', token];
    assert.equal((await runCli(push)).status, 0);
    assert.equal((await runCli(['revert', db, '--txid', '2'])).status, 0);
    const p = await runCli(push);
    assert.equal(p.status, 0, p.stderr);
    const replica = path.join(tempDir(), 'replica.db');
    const f = await runCli([
      'follow',
      h.url,
      replica,
      '--db',
      'app',
      '--token',
      await h.token('app', 'reader'),
      '--once',
    ]);
    assert.equal(f.status, 0, f.stderr);
    assert.equal(fileHash(replica), fileHash(db));
  });

  test('db.revert(): a live replica applies it; a point retention dropped is a clear error', async () => {
    const h = await startTestHub();
    cleanups.push(() => h.close());
    const dir = tempDir();
    const file = path.join(dir, 'w.db');
    const w = await open(file, { hub: { url: h.url, db: 'live', token: await h.token('live', 'writer') } });
    cleanups.push(() => w.close());
    w.exec('create table t(x)');
    for (let i = 0; i < 5; i++) w.prepare('insert into t values (?)').run(i);
    const r = await openReplica(path.join(dir, 'r.db'), {
      hub: { url: h.url, db: 'live', token: await h.token('live', 'reader') },
    });
    cleanups.push(() => r.close());
    const result = w.revert(3n);
    assert.equal(result.target.txid, 3n);
    assert.equal(result.snapshot?.txid, 7n);
    assert.equal(
      w.prepare('select count(*) from t').pluck().get(),
      2,
      'the connection reads the reverted state',
    );
    w.exec('insert into t values (100)');
    await w.sync!.flush(20_000);
    await r.waitFor(w.position().txid, 20_000);
    assert.equal(fileHash(path.join(dir, 'r.db')), fileHash(file));
    assert.throws(() => w.revert(99n), ViewRangeError);
    w.exec('begin');
    assert.throws(() => w.revert(2n), /commit or roll back the open transaction first/);
    w.exec('rollback');
    assert.equal(w.revert(w.position().txid).snapshot, undefined, 'already there: nothing to write');
  });

  test('revert without a point is a usage error', async () => {
    const db = await threeRows();
    const r = await runCli(['revert', db]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /^mycelite: revert needs --txid N or --at ISO-8601/);
    assert.ok(!fs.existsSync(`${db}-mycelite/journal.damaged`));
  });
});
