/**
 * How long sync stalls when one NATS node dies (scripts/failover.ts, test/nats-failover.test.ts): a 3-node
 * cluster (R3) on loopback, one hub (`mycelite serve --storage`), a real writer committing a row every
 * 20 ms through it and a real replica following it. Each round SIGKILLs one node — `leader`: the
 * database stream's leader (a Raft election follows); `follower`: the node the hub is connected to (it
 * is given only that node's URL and learns the others from the cluster), with the leadership of the
 * database's stream and of the lease stream moved off it first (no election) — and measures, over the
 * commits made from 1 s before the kill to 6 s after, the longest commit → hub-ack time (push stall) and
 * commit → replica-apply time (replica stall). Every commit must reach the replica, and the files must
 * be equal at the end.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { natsNames } from '../../src/hub/nats-wire.js';
import { open, openReplica } from '../../src/node/index.js';
import { spawnHub } from './hub.js';
import { type NatsCluster, startNatsCluster } from './nats-cluster.js';
import { fileHash, settles } from './util.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** The stream of the database `app` (its shard) and the lease stream. */
const DB_STREAM = natsNames().shardPlace('app').stream;
const LEASE_STREAM = natsNames().leaseStream;

/** The indexes (0-2) of the nodes that lead the database's stream and the lease stream. */
async function leaders(cluster: NatsCluster): Promise<{ db: number; leases: number }> {
  const nc = await connect({ servers: cluster.servers });
  const index = (name: string | undefined): number => Number(name!.slice(1)) - 1; // nodes are n1, n2, n3
  try {
    const jsm = await jetstreamManager(nc);
    const db = (await jsm.streams.info(DB_STREAM)).cluster!.leader;
    const leases = (await jsm.streams.info(LEASE_STREAM)).cluster!.leader;
    return { db: index(db), leases: index(leases) };
  } finally {
    await nc.close();
  }
}

/** Moves the leadership of the database's stream and the lease stream off node `i` (leader step-downs). */
async function unlead(cluster: NatsCluster, i: number): Promise<void> {
  const nc = await connect({ servers: cluster.servers });
  try {
    for (let tries = 0; tries < 20; tries++) {
      const lead = await leaders(cluster);
      const led = [DB_STREAM, LEASE_STREAM].filter((_, k) => [lead.db, lead.leases][k] === i);
      if (led.length === 0) return;
      for (const stream of led)
        await nc.request(`$JS.API.STREAM.LEADER.STEPDOWN.${stream}`, '', { timeout: 5000 });
      await sleep(1000);
    }
    throw new Error(`node ${i} keeps leading`);
  } finally {
    await nc.close();
  }
}

export interface RoundResult {
  kase: 'leader' | 'follower';
  killed: number;
  /** What the killed node led: the database's stream, the lease stream. */
  led: string[];
  pushStallMs: number;
  replicaStallMs: number;
  commits: number;
  equal: boolean;
}

/** One round: a fresh cluster, hub, writer and replica; one node killed; the stalls around it. */
export async function failoverRound(
  kase: 'leader' | 'follower',
  node = 0,
  /** How long the writer goes on after the kill; the stall is measured over its first afterMs − 2 s. */
  afterMs = 8000,
): Promise<RoundResult> {
  const cluster = await startNatsCluster(3);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-failover-'));
  const storage = kase === 'follower' ? cluster.servers[node]! : cluster.url;
  const hub = await spawnHub(path.join(dir, 'hub'), 0, ['--storage', storage]);
  const w = await open(path.join(dir, 'w.db'), {
    hub: { url: hub.url, db: 'app', token: await hub.token('app', 'writer'), requestTimeoutMs: 30_000 },
  });
  const r = await openReplica(path.join(dir, 'r.db'), {
    hub: { url: hub.url, db: 'app', token: await hub.token('app', 'reader') },
    minBackoffMs: 20,
    maxBackoffMs: 200,
  });
  try {
    w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, at INTEGER)');
    await w.sync!.flush(20_000);
    await r.waitFor(w.position().txid, 20_000);
    const committed = new Map<bigint, number>();
    const acked = new Map<bigint, number>();
    const applied = new Map<bigint, number>();
    w.sync!.on('pushed', (e) => {
      const now = performance.now();
      for (const [txid] of committed) if (txid <= e.hubTxid && !acked.has(txid)) acked.set(txid, now);
    });
    r.on('snapshot', (s) => applied.set(s.txid, performance.now()));
    const ins = w.prepare('INSERT INTO t(at) VALUES (?)');
    let writing = true;
    const writer = (async () => {
      while (writing) {
        ins.run(Date.now());
        committed.set(w.position().txid, performance.now());
        await sleep(20);
      }
    })();
    if (kase === 'follower') await unlead(cluster, node);
    await sleep(2000);
    const lead = await leaders(cluster);
    const killed = kase === 'leader' ? lead.db : node;
    const led = [lead.db === killed ? 'db stream' : '', lead.leases === killed ? 'lease stream' : ''].filter(
      (x) => x !== '',
    );
    const killAt = performance.now();
    await cluster.kill(killed);
    await sleep(afterMs);
    writing = false;
    await writer;
    await w.sync!.flush(60_000);
    await r.waitFor(w.position().txid, 60_000);
    let pushStallMs = 0;
    let replicaStallMs = 0;
    let commits = 0;
    for (const [txid, t] of committed) {
      if (t < killAt - 1000 || t > killAt + afterMs - 2000) continue;
      commits++;
      pushStallMs = Math.max(pushStallMs, (acked.get(txid) ?? Number.POSITIVE_INFINITY) - t);
      replicaStallMs = Math.max(replicaStallMs, (applied.get(txid) ?? Number.POSITIVE_INFINITY) - t);
    }
    const equal = fileHash(path.join(dir, 'w.db')) === fileHash(path.join(dir, 'r.db'));
    return { kase, killed, led, pushStallMs, replicaStallMs, commits, equal };
  } finally {
    try {
      w.close();
      await settles(w.sync?.close(), 20_000, "the writer's sync close");
      await settles(r.close(), 20_000, 'the replica close');
    } finally {
      await hub.kill();
      await cluster.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
}
