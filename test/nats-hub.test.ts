/**
 * Stateless hubs on a real 3-node NATS JetStream cluster: two `mycelite serve --storage nats://...`
 * processes; the real writer pushes through hub A while real replicas follow through hub B, live and byte
 * for byte; the write lease holds across hubs; a NATS node SIGKILLed mid-stream loses nothing; a hub
 * SIGKILLed leaves its replica to go on through the other hub from its own position.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { HubClient } from '../src/client/hub-client.js';
import { type MyceliteDatabase, open, type ReplicaDatabase } from '../src/node/index.js';
import { HubError } from '../src/protocol/index.js';
import { followReplica, type SpawnedHub, spawnHub, caughtUp as waitCaughtUp } from './helpers/hub.js';
import { type NatsCluster, startNatsCluster } from './helpers/nats-cluster.js';
import { afterNatsTests, HOOK_MS, natsSkip, TEST_MS } from './helpers/nats-test.js';
import { fileHash, tempDir } from './helpers/util.js';

const skip = natsSkip;

describe('two hubs on one NATS cluster', { skip, timeout: 4 * TEST_MS + 2 * HOOK_MS }, () => {
  let cluster: NatsCluster;
  let dir: string;
  let a: SpawnedHub;
  let b: SpawnedHub;
  const cleanups: (() => Promise<void> | void)[] = [];

  before(
    async () => {
      cluster = await startNatsCluster(3);
      dir = tempDir();
      const keyDir = tempDir('mycelite-hub-'); // both hubs: the same key (hub.key), nothing else here
      a = await spawnHub(keyDir, 0, ['--storage', cluster.url]);
      b = await spawnHub(keyDir, 0, ['--storage', cluster.url]);
    },
    { timeout: HOOK_MS },
  );
  after(
    async () => {
      await afterNatsTests(cleanups);
    },
    { timeout: HOOK_MS },
  );

  async function writer(file: string, hub: SpawnedHub, db = 'app'): Promise<MyceliteDatabase> {
    const w = await open(file, { hub: { url: hub.url, db, token: await hub.token(db, 'writer') } });
    cleanups.push(async () => {
      if (w.open) w.close();
      await w.sync?.close();
    });
    return w;
  }

  const replica = (file: string, hub: SpawnedHub, db = 'app'): Promise<ReplicaDatabase> =>
    followReplica(file, hub, cleanups, { db, maxBackoffMs: 300 });

  function burst(w: MyceliteDatabase, n: number): void {
    const ins = w.prepare('INSERT INTO t(a, b) VALUES (random(), randomblob(?))');
    for (let i = 0; i < n; i++) ins.run(200 + (i % 5) * 700);
  }

  const caughtUp = (w: MyceliteDatabase, r: ReplicaDatabase, ms = 30_000): Promise<void> =>
    waitCaughtUp(w, r, ms);

  it('serve --nats-layout streams makes a new database a stream of its own (for a rolling upgrade); a hub started after serves it', {
    timeout: TEST_MS,
  }, async () => {
    const keyDir = tempDir('mycelite-hub-');
    const old = await spawnHub(keyDir, 0, ['--storage', cluster.url, '--nats-layout', 'streams']);
    cleanups.push(() => old.kill());
    const w = await writer(path.join(dir, 'layout.db'), old, 'layout');
    w.exec('CREATE TABLE t(a, b)');
    await w.sync!.flush(20_000);
    const nc = await connect({ servers: cluster.servers });
    try {
      const info = await (await jetstreamManager(nc)).streams.info('MYCELITE_DB_layout');
      assert.ok(info.state.messages >= 2, 'its own stream: the marker and the append');
    } finally {
      await nc.close();
    }
    const later = await spawnHub(keyDir, 0, ['--storage', cluster.url]); // the default layout: shards
    cleanups.push(() => later.kill());
    const state = await new HubClient({
      url: later.url,
      db: 'layout',
      token: await later.token('layout', 'reader'),
    }).state();
    assert.equal(state?.head.txid, w.position().txid, 'a hub of the shard layout serves it where it is');
  });

  it('a writer pushing through hub A reaches replicas following hub B, live and byte for byte', {
    timeout: TEST_MS,
  }, async () => {
    const w = await writer(path.join(dir, 'w.db'), a);
    w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, a, b)');
    await w.sync!.flush(20_000);
    const rb = await replica(path.join(dir, 'rb.db'), b);
    const ra = await replica(path.join(dir, 'ra.db'), a);
    await Promise.all([rb.ready(), ra.ready()]);
    const seen: bigint[] = [];
    rb.on('snapshot', (s) => seen.push(s.txid));
    for (let round = 0; round < 4; round++) {
      burst(w, 25);
      await caughtUp(w, rb);
      await caughtUp(w, ra);
      assert.equal(fileHash(path.join(dir, 'rb.db')), fileHash(path.join(dir, 'w.db')), `round ${round}`);
      assert.equal(fileHash(path.join(dir, 'ra.db')), fileHash(path.join(dir, 'w.db')));
    }
    assert.ok(seen.length >= 100, 'hub B streamed the snapshots pushed through hub A one by one');
    for (let i = 1; i < seen.length; i++) assert.equal(seen[i], seen[i - 1]! + 1n, 'in order, once each');

    // The write lease is one across hubs: hub B refuses a second writer while writer 1 holds it via A.
    const client = new HubClient({ url: b.url, db: 'app', token: await b.token('app', 'writer') });
    await assert.rejects(client.takeLease('someone-else'), (e: unknown) => {
      assert.ok(e instanceof HubError);
      assert.equal(e.code, 'lease_held');
      return true;
    });
    // ...and the writer goes on through A.
    burst(w, 5);
    await caughtUp(w, rb);
    assert.equal(fileHash(path.join(dir, 'rb.db')), fileHash(path.join(dir, 'w.db')));
  });

  it('a NATS node SIGKILLed mid-stream: nothing is lost, sync goes on', { timeout: TEST_MS }, async () => {
    const w = await writer(path.join(dir, 'w2.db'), a, 'nodes');
    w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, a, b)');
    const r = await replica(path.join(dir, 'r2.db'), b, 'nodes');
    burst(w, 20);
    await caughtUp(w, r);
    for (let round = 0; round < 2; round++) {
      const node = round; // first n1, then n2
      burst(w, 10);
      await cluster.kill(node);
      burst(w, 30); // pushed while the cluster elects new leaders
      await caughtUp(w, r, 60_000);
      assert.equal(fileHash(path.join(dir, 'r2.db')), fileHash(path.join(dir, 'w2.db')), `node ${node} down`);
      await cluster.restart(node);
    }
    burst(w, 10);
    await caughtUp(w, r);
    assert.equal(fileHash(path.join(dir, 'r2.db')), fileHash(path.join(dir, 'w2.db')));
  });

  it('a hub SIGKILLed: its replica goes on through the other hub from its own position', {
    timeout: TEST_MS,
  }, async () => {
    const w = await writer(path.join(dir, 'w3.db'), b, 'failover');
    w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, a, b)');
    burst(w, 30);
    const file = path.join(dir, 'r3.db');
    const onA = await replica(file, a, 'failover');
    await caughtUp(w, onA);
    const at = onA.position()!.txid;
    await a.kill('SIGKILL');
    burst(w, 30); // committed while the replica's hub is gone
    await onA.close();
    const onB = await replica(file, b, 'failover');
    const resets: unknown[] = [];
    const first: bigint[] = [];
    onB.on('reset', (e) => resets.push(e));
    onB.on('snapshot', (s) => first.push(s.txid));
    await caughtUp(w, onB);
    assert.equal(resets.length, 0, 'no new image: it continued its own history');
    assert.equal(first[0], at + 1n, 'the first snapshot through hub B follows its own position');
    assert.equal(fileHash(file), fileHash(path.join(dir, 'w3.db')));
  });
});
