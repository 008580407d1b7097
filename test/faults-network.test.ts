// Network faults between a writer, the hub and replicas, through a fault-injecting TCP proxy on loopback
// (test/helpers/tcp-proxy.ts): every chunk delayed, all traffic stalled then released, every request
// duplicated (the hub receives each push, lease call and read twice), a stall ended by a cut, and the hub
// restarted on another port behind the proxy. After each phase: nothing lost (the hub holds every snapshot
// the writer committed), nothing twice (the hub's journal equals the writer's, snapshot for snapshot), and
// the replicas equal the writer byte for byte. Cuts mid-body and mid-stream are in push-network.test.ts and
// replica-follow.test.ts.
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { type MyceliteDatabase, open, openReplica, type ReplicaDatabase } from '../src/node/index.js';
import { readJournal, startTestHub, type TestHub } from './helpers/hub.js';
import { prng } from './helpers/replica.js';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.js';
import { cleanupTempDirs, fileHash, tempDir } from './helpers/util.js';

const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanupTempDirs();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function work(db: MyceliteDatabase, rand: () => number, commits: number): void {
  const ins = db.prepare('insert into t(k, v) values (?, randomblob(?))');
  for (let i = 0; i < commits; i++) {
    if (rand() < 0.8) ins.run(Math.floor(rand() * 1e6), Math.floor(rand() * 4000));
    else db.prepare('delete from t where k % 5 = ?').run(Math.floor(rand() * 5));
  }
}

async function converge(
  what: string,
  db: MyceliteDatabase,
  hub: TestHub,
  writerPath: string,
  replicas: { db: ReplicaDatabase; file: string }[],
): Promise<void> {
  await db.sync!.flush(30_000);
  const txid = db.position().txid;
  for (const r of replicas) await r.db.waitFor(txid, 30_000);
  const want = fileHash(writerPath);
  for (const r of replicas)
    assert.equal(fileHash(r.file), want, `${what}: ${path.basename(r.file)} equals the writer`);
  const mine = await readJournal(`${writerPath}-mycelite/journal`);
  const hubs = await readJournal(path.join(hub.dir, 'dbs', 'app', 'journal'));
  assert.equal(hubs.snapshots.length, mine.snapshots.length, `${what}: the hub holds every snapshot, once`);
  for (let i = 0; i < mine.snapshots.length; i++) {
    assert.deepEqual(hubs.snapshots[i]!.bytes, mine.snapshots[i]!.bytes, `${what}: snapshot ${i + 1}`);
  }
}

test('delays, stalls, duplicated requests and a hub restart: nothing lost, nothing twice, replicas converge', async (t) => {
  const dir = tempDir();
  let hub = await startTestHub(path.join(dir, 'hub'));
  cleanups.push(() => hub.close());
  const proxy: TcpProxy = await startTcpProxy(hub.port);
  cleanups.push(() => proxy.close());
  const writerPath = path.join(dir, 'w.db');
  const db = await open(writerPath, {
    hub: { url: proxy.url, db: 'app', token: await hub.token('app', 'writer') },
  });
  cleanups.push(async () => {
    await db.sync?.close();
    if (db.open) db.close();
  });
  const reader = await hub.token('app', 'reader');
  db.exec('create table t(id integer primary key, k, v)');
  const replicas: { db: ReplicaDatabase; file: string }[] = [];
  for (const name of ['r1.db', 'r2.db']) {
    const file = path.join(dir, name);
    const r = await openReplica(file, { hub: { url: proxy.url, db: 'app', token: reader } });
    cleanups.push(() => r.close());
    replicas.push({ db: r, file });
  }
  const rand = prng(6);

  // 1. Every chunk delayed by 0-40 ms, both ways.
  proxy.setDelay(0, 40);
  work(db, rand, 40);
  await converge('delayed', db, hub, writerPath, replicas);
  proxy.setDelay(0, 0);

  // 2. Every request duplicated: the hub sees each push twice and stores it once.
  proxy.setDuplicate(true);
  proxy.cutAll(); // the clients reconnect, through mirrored connections
  for (let i = 0; i < 10; i++) {
    work(db, rand, 4);
    await sleep(20);
  }
  await converge('duplicated', db, hub, writerPath, replicas);
  assert.ok(proxy.duplicated() >= 2, 'connections were mirrored');
  proxy.setDuplicate(false);

  // 3. Everything stalls for 2 s while the writer commits, then flows again.
  proxy.setStalled(true);
  work(db, rand, 30);
  await sleep(2000);
  assert.ok(db.sync!.status().hubTxid! < db.position().txid, 'the stall held the pushes back');
  proxy.setStalled(false);
  await converge('stalled', db, hub, writerPath, replicas);

  // 4. A stall ended by cutting every connection (what a dead middlebox does).
  proxy.setStalled(true);
  work(db, rand, 20);
  await sleep(500);
  proxy.cutAll();
  proxy.setStalled(false);
  work(db, rand, 10);
  await converge('stalled then cut', db, hub, writerPath, replicas);

  // 5. The hub restarts (graceful close, new process state, another port behind the same proxy).
  await hub.close();
  work(db, rand, 20);
  hub = await startTestHub(path.join(dir, 'hub'));
  proxy.retarget(hub.port);
  work(db, rand, 10);
  await converge('hub restarted', db, hub, writerPath, replicas);
  t.diagnostic(`final txid ${db.position().txid}, ${proxy.duplicated()} mirrored connections`);
});
