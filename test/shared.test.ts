// Shared databases (issue 14): several devices write one database; each commits locally at once (also
// offline), and when they meet the hub every device ends with the same database, byte for byte, holding
// everyone's changes, with every conflict and rejection reported.
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import type { ConflictEvent } from '../src/client/writer-sync.js';
import { type MyceliteDatabase, open } from '../src/node/index.js';
import { startTestHub, type TestHub } from './helpers/hub.js';
import { cleanupTempDirs, fileHash, replayMatches, tempDir } from './helpers/util.js';

const cleanups: (() => unknown)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanupTempDirs();
});

const SCHEMA = 'create table if not exists entries(id text primary key, who text, amount integer, note text)';

async function device(h: TestHub, name: string, dir = tempDir()): Promise<MyceliteDatabase> {
  const db = await open(path.join(dir, `${name}.db`), {
    shared: true,
    hub: { url: h.url, db: 'budget', token: await h.token('budget', 'writer') },
  });
  cleanups.push(() => db.close());
  return db;
}

function rows(db: MyceliteDatabase): unknown[] {
  return db.prepare('select id, who, amount, note from entries order by id').raw().all();
}

async function synced(...dbs: MyceliteDatabase[]): Promise<void> {
  // Each device pushes its changes; then all take in everyone's.
  for (let round = 0; round < 2; round++) {
    for (const d of dbs) await d.sync!.flush(20_000);
  }
  for (const d of dbs) await (d.sync as unknown as { whenIdle(): Promise<void> }).whenIdle();
}

describe('shared databases', () => {
  test('two devices write offline at the same time; after sync both hold both, byte for byte', async () => {
    const h = await startTestHub();
    cleanups.push(() => h.close());
    const a = await device(h, 'a');
    a.exec(SCHEMA);
    a.prepare('insert into entries values (?, ?, ?, ?)').run('a1', 'alice', 10, 'rent');
    await synced(a);
    const b = await device(h, 'b');
    await synced(b);
    assert.deepEqual(rows(b), rows(a), "a new device starts with the hub's data");
    // Both write before either syncs: the second to sync rebases.
    a.prepare('insert into entries values (?, ?, ?, ?)').run('a2', 'alice', 20, 'food');
    b.prepare('insert into entries values (?, ?, ?, ?)').run('b1', 'bob', 5, 'coffee');
    b.prepare('update entries set note = ? where id = ?').run('rent (paid)', 'a1');
    assert.equal(b.sync!.pending(), 2);
    await synced(a, b);
    assert.deepEqual(rows(a), [
      ['a1', 'alice', 10, 'rent (paid)'],
      ['a2', 'alice', 20, 'food'],
      ['b1', 'bob', 5, 'coffee'],
    ]);
    assert.deepEqual(rows(b), rows(a));
    assert.equal(fileHash(path.join(path.dirname(a.name), 'a.db')), fileHash(b.name));
    assert.ok((await replayMatches(a.name)).ok);
    assert.ok((await replayMatches(b.name)).ok);
    assert.equal(a.sync!.pending(), 0);
    assert.equal(b.sync!.pending(), 0);
  });

  test('the same row edited on two devices: the later sync wins, and the conflict is reported', async () => {
    const h = await startTestHub();
    cleanups.push(() => h.close());
    const a = await device(h, 'a');
    a.exec(SCHEMA);
    a.prepare('insert into entries values (?, ?, ?, ?)').run('x', 'alice', 1, 'first');
    await synced(a);
    const b = await device(h, 'b');
    await synced(b);
    const conflicts: ConflictEvent[] = [];
    b.sync!.on('conflict', (c) => conflicts.push(c));
    a.prepare('update entries set amount = 2 where id = ?').run('x');
    b.prepare('update entries set amount = 3 where id = ?').run('x');
    await synced(a);
    await synced(b, a);
    assert.deepEqual(rows(a), [['x', 'alice', 3, 'first']]);
    assert.deepEqual(rows(b), rows(a));
    assert.equal(conflicts.length, 1);
    assert.equal(conflicts[0]!.conflict.kind, 'data');
    assert.equal(conflicts[0]!.choice, 'local');
    assert.equal(fileHash(a.name), fileHash(b.name));
  });

  test("a local change that breaks a constraint on the hub's state is rejected as a whole and reported", async () => {
    const h = await startTestHub();
    cleanups.push(() => h.close());
    const a = await device(h, 'a');
    a.exec('create table if not exists users(id text primary key, email text unique)');
    await synced(a);
    const b = await device(h, 'b');
    await synced(b);
    const rejected: { seq: bigint; reason: string }[] = [];
    b.sync!.on('rejected', (r) => rejected.push(r));
    a.prepare('insert into users values (?, ?)').run('u1', 'x@example.com');
    b.prepare('insert into users values (?, ?)').run('u2', 'x@example.com');
    await synced(a);
    await synced(b, a);
    assert.deepEqual(a.prepare('select id from users').raw().all(), [['u1']]);
    assert.deepEqual(b.prepare('select id from users').raw().all(), [['u1']]);
    assert.equal(rejected.length, 1);
    assert.match(rejected[0]!.reason, /UNIQUE|constraint/i);
    assert.equal(fileHash(a.name), fileHash(b.name));
  });
});

describe('modes', () => {
  test('a device refuses to write into a single-writer database, with a message that says why', async () => {
    const h = await startTestHub();
    cleanups.push(() => h.close());
    const dir = tempDir();
    const w = await open(path.join(dir, 'w.db'), {
      hub: { url: h.url, db: 'budget', token: await h.token('budget', 'writer') },
    });
    w.exec('create table t(x)');
    await w.sync!.flush(20_000);
    await w.sync!.close();
    w.close();
    const d = await device(h, 'd');
    d.exec(SCHEMA);
    await assert.rejects(d.sync!.flush(20_000), /single-writer database .*cannot write to it/);
    assert.equal(d.sync!.status().state, 'error');
  });
});
