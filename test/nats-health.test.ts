/**
 * A hub's health tells the truth about its storage (issue 20, item 1), on a real 3-node NATS cluster
 * with real `mycelite serve --storage` processes: with every nats-server SIGKILLed, /readyz and /healthz
 * answer 503 while /livez stays 200, database requests are answered 503 storage_unavailable at once
 * (not after the storage's 20 s of retries), a live replica and a writer show `storage-unavailable`, and
 * /metrics says so; a hub started while NATS is down listens and waits for it; once the cluster is back
 * both hubs are ready, and the writer's commits reach the replicas byte for byte.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { HubClient } from '../src/client/hub-client.js';
import { type MyceliteDatabase, open, type ReplicaDatabase } from '../src/node/index.js';
import { HubError } from '../src/protocol/index.js';
import { caughtUp, followReplica, type SpawnedHub, spawnHub } from './helpers/hub.js';
import { type NatsCluster, startNatsCluster } from './helpers/nats-cluster.js';
import { afterNatsTests, HOOK_MS, natsSkip, TEST_MS } from './helpers/nats-test.js';
import { fileHash, tempDir } from './helpers/util.js';

const skip = natsSkip;

/** Resolves once `probe` is true (asked every 100 ms), rejects after `ms` with `what`. */
async function until(
  what: string | (() => string),
  ms: number,
  probe: () => Promise<boolean> | boolean,
): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > deadline)
      throw new Error(`${typeof what === 'string' ? what : what()}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const status = async (url: string, p: string): Promise<number> => (await fetch(`${url}${p}`)).status;

function metric(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

/** Resolves with the first status `state` a replica or writer reports (or has now). */
function reaches<S extends { state: string }>(
  current: () => S,
  on: (fn: (s: S) => void) => () => void,
  state: string,
): Promise<S> {
  return new Promise((resolve) => {
    const now = current();
    if (now.state === state) return resolve(now);
    const off = on((s) => {
      if (s.state !== state) return;
      off();
      resolve(s);
    });
  });
}

describe('hub health on NATS', { skip, timeout: 2 * TEST_MS + 2 * HOOK_MS }, () => {
  let cluster: NatsCluster;
  let dir: string;
  let keyDir: string;
  const hubs: SpawnedHub[] = [];
  const cleanups: (() => Promise<void> | void)[] = [];

  before(
    async () => {
      cluster = await startNatsCluster(3);
      dir = tempDir();
      keyDir = tempDir('mycelite-hub-');
    },
    { timeout: HOOK_MS },
  );
  after(
    async () => {
      await afterNatsTests(cleanups);
    },
    { timeout: HOOK_MS },
  );

  it('readiness follows the storage; clients show storage-unavailable; a hub waits for NATS at start', {
    timeout: TEST_MS,
  }, async () => {
    const a = await spawnHub(keyDir, 0, ['--storage', cluster.url]);
    hubs.push(a);
    for (const p of ['/livez', '/readyz', '/healthz']) assert.equal(await status(a.url, p), 200, p);
    const w: MyceliteDatabase = await open(path.join(dir, 'w.db'), {
      hub: { url: a.url, db: 'app', token: await a.token('app', 'writer') },
    });
    cleanups.push(async () => {
      if (w.open) w.close();
      await w.sync?.close();
    });
    w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, v)');
    const r: ReplicaDatabase = await followReplica(path.join(dir, 'r.db'), a, cleanups);
    await caughtUp(w, r);
    assert.equal(r.status().state, 'live');
    const before = await (await fetch(`${a.url}/metrics`)).text();
    assert.equal(metric(before, 'mycelite_storage_ready'), 1);
    assert.equal(metric(before, 'mycelite_nats_connected'), 1);
    assert.ok((metric(before, 'mycelite_nats_views') ?? 0) >= 1, 'the hub follows the database');

    // The whole cluster goes down.
    const replicaDown = reaches(
      () => r.status(),
      (fn) => r.on('status', fn),
      'storage-unavailable',
    );
    for (let i = 0; i < 3; i++) await cluster.kill(i);
    await until('/readyz says 503', 30_000, async () => (await status(a.url, '/readyz')) === 503);
    const ready = await fetch(`${a.url}/readyz`);
    const body = (await ready.json()) as { ok: boolean; storage: string; message: string };
    assert.equal(body.ok, false);
    assert.equal(body.storage, 'unavailable');
    assert.match(body.message, /NATS|JetStream/);
    assert.equal(await status(a.url, '/healthz'), 503, '/healthz no longer says OK with storage down');
    assert.equal(await status(a.url, '/livez'), 200, 'the process itself is alive');
    const down = await (await fetch(`${a.url}/metrics`)).text();
    assert.equal(metric(down, 'mycelite_storage_ready'), 0);
    assert.equal(metric(down, 'mycelite_nats_connected'), 0);

    // A database request is answered at once, not after the storage's retries.
    const client = new HubClient({ url: a.url, db: 'app', token: await a.token('app', 'reader') });
    const asked = Date.now();
    await assert.rejects(client.state(), (e: unknown) => {
      assert.ok(e instanceof HubError);
      assert.equal(e.code, 'storage_unavailable');
      assert.equal(e.status, 503);
      return true;
    });
    assert.ok(Date.now() - asked < 5000, `answered in ${Date.now() - asked} ms`);

    const rs = await replicaDown;
    assert.match(rs.lastError ?? '', /storage/);
    const writerDown = reaches(
      () => w.sync!.status(),
      (fn) => w.sync!.on('status', fn),
      'storage-unavailable',
    );
    w.prepare('INSERT INTO t(v) VALUES (?)').run('while NATS is down');
    const ws = await writerDown;
    assert.match(ws.lastError ?? '', /storage/);

    // A hub started now listens, says it waits, and is not ready.
    const b = await spawnHub(keyDir, 0, ['--storage', cluster.url]);
    hubs.push(b);
    assert.equal(await status(b.url, '/livez'), 200);
    assert.equal(await status(b.url, '/readyz'), 503);
    assert.match(b.stderr(), /storage not ready, waiting for it/);

    // The cluster comes back: both hubs are ready, and everything flows again.
    await cluster.startAll();
    await until('hub A ready again', 30_000, async () => (await status(a.url, '/readyz')) === 200);
    await until('hub B ready', 30_000, async () => (await status(b.url, '/readyz')) === 200);
    w.prepare('INSERT INTO t(v) VALUES (?)').run('after');
    await caughtUp(w, r, 30_000);
    const rb = await followReplica(path.join(dir, 'rb.db'), b, cleanups);
    await caughtUp(w, rb, 30_000);
    assert.equal(fileHash(path.join(dir, 'r.db')), fileHash(path.join(dir, 'w.db')));
    assert.equal(fileHash(path.join(dir, 'rb.db')), fileHash(path.join(dir, 'w.db')));
    await until('replica live', 10_000, () => r.status().state === 'live');
    assert.equal(r.status().lastError, undefined, 'no error left once live');
    await until('writer synced', 10_000, () => w.sync!.status().state === 'synced');
    assert.equal(w.sync!.status().lastError, undefined, 'no error left once synced');
    assert.match(a.stderr(), /storage unavailable/);
  });

  it('a hub started on a cluster without a quorum listens at once, says why it waits, and is ready once it has one', {
    timeout: TEST_MS,
  }, async () => {
    // One node of three: NATS is reached but JetStream has no meta leader (and the lease stream's three
    // replicas could not be placed). The hub's first connection attempt waited for JetStream for ever, so
    // it never listened (and never said why): a test spawning it waited for ever.
    await cluster.kill(1);
    await cluster.kill(2);
    // The node left may answer as the meta leader for a moment after its peers died: wait until it knows.
    await until('node 1 of 3 no longer answers JetStream', 30_000, async () => {
      const nc = await connect({ servers: cluster.servers[0]! });
      try {
        await (await jetstreamManager(nc, { timeout: 1000 })).getAccountInfo();
        return false;
      } catch {
        return true;
      } finally {
        await nc.close();
      }
    });
    const started = Date.now();
    const c = await spawnHub(tempDir('mycelite-hub-'), 0, ['--storage', cluster.url], { listenMs: 30_000 });
    hubs.push(c);
    assert.ok(Date.now() - started < 30_000);
    assert.equal(await status(c.url, '/livez'), 200);
    assert.equal(await status(c.url, '/readyz'), 503);
    // Said within seconds (START_WAIT_MS), naming the step it waits at (JetStream, or the lease stream's
    // placement), not only once the attempt's own timeouts ran out (20 s to reach JetStream, 20 s to create
    // the lease stream: past a minute on a loaded machine).
    const step =
      /storage not ready, waiting for it \(connected to NATS at [^;]+; waiting (for JetStream|to create the lease stream)/;
    await until(
      () => `the hub says why it waits (its stderr: ${JSON.stringify(c.stderr())})`,
      30_000,
      () => step.test(c.stderr()),
    );
    await until('/readyz names the step', 10_000, async () =>
      /connected to NATS at [^;]+; waiting (for JetStream|to create the lease stream)/.test(
        await (await fetch(`${c.url}/readyz`)).text(),
      ),
    );
    await cluster.startAll();
    await until('the hub ready', 60_000, async () => (await status(c.url, '/readyz')) === 200);
    const w: MyceliteDatabase = await open(path.join(dir, 'quorum.db'), {
      hub: { url: c.url, db: 'quorum', token: await c.token('quorum', 'writer') },
    });
    cleanups.push(async () => {
      if (w.open) w.close();
      await w.sync?.close();
    });
    w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY)');
    await w.sync!.flush(30_000);
  });
});
