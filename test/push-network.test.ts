// The writer's push side when the network or the hub fails: a connection cut mid-body or mid-answer, a
// hub killed with SIGKILL and restarted, bodies over the hub's limit. Nothing is lost, nothing is stored
// twice: the hub's journal ends up equal to the writer's, byte for byte.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { HubClient } from '../src/client/hub-client.js';
import { type MyceliteDatabase, open } from '../src/node/index.js';
import { type SpawnedHub, spawnHub, startTestHub, type TestHub } from './helpers/hub.js';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.js';
import { cleanupTempDirs, journalEnd, journalOf, tempDir } from './helpers/util.js';

const closers: (() => Promise<void> | void)[] = [];

after(async () => {
  for (const c of closers.reverse()) await c();
  cleanupTempDirs();
});

async function testHub(options = {}): Promise<TestHub> {
  const h = await startTestHub(tempDir('mycelite-hubdata-'), options);
  closers.push(() => h.close());
  return h;
}

async function proxyTo(port: number): Promise<TcpProxy> {
  const p = await startTcpProxy(port);
  closers.push(() => p.close());
  return p;
}

async function writer(file: string, options: Parameters<typeof open>[1]): Promise<MyceliteDatabase> {
  const db = await open(file, options);
  closers.push(async () => {
    await db.sync?.close();
    if (db.open) db.close();
  });
  return db;
}

function hubBody(dir: string, name: string): Buffer {
  return fs.readFileSync(path.join(dir, 'dbs', name, 'journal')).subarray(64);
}

function localBody(file: string): Buffer {
  // Up to the last snapshot: a live writer keeps zeros written ahead past it.
  return fs.readFileSync(journalOf(file)).subarray(64, journalEnd(journalOf(file)));
}

async function assertSame(
  url: string,
  dir: string,
  token: string,
  name: string,
  db: MyceliteDatabase,
  file: string,
) {
  const st = await new HubClient({ url, db: name, token }).state();
  assert.equal(st?.head.txid, db.position().txid, 'hub head txid == local txid');
  assert.equal(st?.head.checksum, db.position().checksum, 'hub head checksum == local checksum');
  assert.ok(hubBody(dir, name).equals(localBody(file)), 'hub journal == local journal, byte for byte');
}

test('a connection cut mid-body is retried: hub equals local, nothing twice', async () => {
  const h = await testHub();
  const proxy = await proxyTo(h.port);
  const token = await h.token('cut', 'writer');
  const file = path.join(tempDir(), 'cut.db');
  const db = await writer(file, { hub: { url: proxy.url, db: 'cut', token } });
  db.exec('create table t(a)');
  await db.sync!.flush(10_000);
  proxy.cutOnceAfter(4_000, 'up');
  const errors: string[] = [];
  db.sync!.on('status', (s) => {
    if (s.lastError) errors.push(s.lastError);
  });
  db.exec('insert into t values (randomblob(200000))');
  await db.sync!.flush(20_000);
  assert.equal(proxy.cuts(), 1, 'the push body was cut once');
  assert.ok(errors.length > 0, 'the cut was seen as an error');
  assert.equal(db.sync!.status().lastError, undefined, 'and forgotten once pushing worked again');
  db.exec('insert into t values (2)');
  await db.sync!.flush(20_000);
  await assertSame(h.url, h.dir, token, 'cut', db, file);
});

test('a push whose answer is lost is retried and skipped by the hub: no duplicate', async () => {
  const h = await testHub();
  const proxy = await proxyTo(h.port);
  const token = await h.token('lost', 'writer');
  const file = path.join(tempDir(), 'lost.db');
  const db = await writer(file, { hub: { url: proxy.url, db: 'lost', token } });
  db.exec('create table t(a)');
  await db.sync!.flush(10_000);
  const pushed: { hubTxid: bigint; count: number }[] = [];
  db.sync!.on('pushed', (e) => pushed.push(e));
  proxy.cutOnceAfter(12, 'down');
  db.exec('insert into t values (randomblob(5000))');
  db.exec('insert into t values (randomblob(5000))');
  await db.sync!.flush(20_000);
  assert.equal(proxy.cuts(), 1, 'one answer was cut');
  assert.equal(
    pushed.reduce((n, e) => n + e.count, 0),
    2,
    `the hub head moved by exactly 2: ${JSON.stringify(pushed, (_k, v) => (typeof v === 'bigint' ? String(v) : v))}`,
  );
  await assertSame(h.url, h.dir, token, 'lost', db, file);
});

test('hub killed with SIGKILL mid-stream and restarted on the same port: converges, nothing lost', async () => {
  const dir = tempDir('mycelite-hubdata-');
  let hub: SpawnedHub = await spawnHub(dir);
  closers.push(() => hub.kill());
  const port = hub.port;
  const token = await hub.token('kill', 'writer');
  const file = path.join(tempDir(), 'kill.db');
  const db = await writer(file, { hub: { url: hub.url, db: 'kill', token } });
  db.exec('create table t(i, pad)');
  const states = new Set<string>();
  db.sync!.on('status', (s) => states.add(s.state));
  for (let i = 0; i < 240; i++) {
    db.prepare('insert into t values (?, randomblob(?))').run(i, 100 + (i % 7) * 300);
    if (i === 80) await hub.kill('SIGKILL');
    if (i === 160) hub = await spawnHub(dir, port);
    await sleep(2);
  }
  assert.ok(states.has('offline'), `the writer went offline: ${[...states]}`);
  await db.sync!.flush(30_000);
  await assertSame(hub.url, dir, token, 'kill', db, file);
});

test('batches shrink to the hub limit; a single snapshot over it stops with a --max-body hint', async () => {
  const h = await testHub({ maxBody: 64 * 1024 });
  const token = await h.token('big', 'writer');
  const file = path.join(tempDir(), 'big.db');
  // Commit ~40 snapshots of ~8 KiB offline, then push them all: more than one body's worth.
  const proxy = await proxyTo(h.port);
  proxy.setDown(true);
  const db = await writer(file, { hub: { url: proxy.url, db: 'big', token } });
  db.exec('create table t(a)');
  for (let i = 0; i < 40; i++) db.exec('insert into t values (randomblob(8000))');
  proxy.setDown(false);
  await db.sync!.flush(20_000);
  await assertSame(h.url, h.dir, token, 'big', db, file);
  db.exec('insert into t values (randomblob(100000))');
  await assert.rejects(db.sync!.flush(20_000), /over the hub's limit of 65536 bytes.*--max-body/);
  assert.equal(db.sync!.status().state, 'error');
});
