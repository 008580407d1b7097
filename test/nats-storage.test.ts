/**
 * NatsStorage on a real 3-node JetStream cluster (R3): the HubStorage conformance suite, then what only a
 * shared backend has: two storages (two hubs) racing to append, an append through one heard live by the
 * other's subscriber, snapshots bigger than a NATS message, and a torn append left by a dying hub.
 */

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, headers } from '@nats-io/transport-node';
import type { Position } from '../src/format/index.js';
import { toHex } from '../src/format/index.js';
import { NatsStorage } from '../src/hub/nats-storage.js';
import { HDR_APPEND, HDR_BASE, HDR_JOURNAL, HDR_MODE, HDR_PART, natsNames } from '../src/hub/nats-wire.js';
import { EMPTY_POSITION, type EncodedSnapshot } from '../src/protocol/index.js';
import { concatBytes, type History, makeHistory, sampleStatements } from './helpers/hub.js';
import {
  haveNatsServer,
  type NatsCluster,
  startNatsCluster,
  stopNatsClusters,
} from './helpers/nats-cluster.js';
import { storageConformance } from './helpers/storage-conformance.js';
import { settles } from './helpers/util.js';

const skip = haveNatsServer() ? false : 'nats-server is not installed (apt-get install nats-server)';
let cluster: Promise<NatsCluster> | undefined;
const getCluster = (): Promise<NatsCluster> => {
  cluster ??= startNatsCluster(3);
  return cluster;
};
let fixtureCount = 0;

// Several times what they take on a loaded 2-CPU machine: a hang fails, naming what hung.
const TEST_MS = 120_000;
const HOOK_MS = 120_000;

after(
  async () => {
    // Every nats-server this process started, also when the cluster's start failed or timed out.
    await stopNatsClusters();
  },
  { timeout: HOOK_MS },
);

/** Removes everything a prefix made on the cluster. */
async function dropPrefix(servers: string[], prefix: string): Promise<void> {
  const names = natsNames(prefix);
  const nc = await connect({ servers });
  try {
    const jsm = await jetstreamManager(nc);
    const streams: string[] = [names.leaseStream];
    for await (const s of jsm.streams.names(names.allSnapshots)) streams.push(s);
    for await (const s of jsm.streams.names(names.allShards)) streams.push(s);
    for (const s of streams) await jsm.streams.delete(s).catch(() => undefined);
  } finally {
    await nc.close();
  }
}

/** Publishes the first of two parts of an append, as a hub that dies mid-append leaves it. */
/** The subject a database's appends go to: in its shard (the default layout), or its own stream's. */
function subjectOf(prefix: string, db: string, layout: Layout = 'shards'): string {
  const names = natsNames(prefix);
  return layout === 'shards' ? names.shardPlace(db).subject : names.subject(db);
}

type Layout = 'shards' | 'streams';

async function publishTorn(
  servers: string[],
  prefix: string,
  db: string,
  bytes: Uint8Array,
  layout?: Layout,
): Promise<void> {
  const nc = await connect({ servers });
  try {
    const h = headers();
    h.set(HDR_APPEND, '5-6');
    h.set(HDR_PART, '1/2');
    h.set(HDR_JOURNAL, '00'.repeat(16));
    h.set(HDR_BASE, '4:0000000000000000');
    await jetstream(nc).publish(subjectOf(prefix, db, layout), bytes, { headers: h });
  } finally {
    await nc.close();
  }
}

/**
 * Publishes each snapshot as a whole append of its own, continuing the one before (from `base`), with
 * Mycelite-Mode `mode` (none: as a hub from before modes).
 */
async function publishWhole(
  servers: string[],
  prefix: string,
  db: string,
  journalId: Uint8Array,
  base: Position,
  snapshots: EncodedSnapshot[],
  mode?: string,
  layout?: Layout,
): Promise<void> {
  const nc = await connect({ servers });
  try {
    let at = base;
    for (const s of snapshots) {
      const h = headers();
      if (mode !== undefined) h.set(HDR_MODE, mode);
      h.set(HDR_APPEND, `${s.header.txid}-${s.header.txid}`);
      h.set(HDR_PART, '1/1');
      h.set(HDR_JOURNAL, toHex(journalId));
      h.set(HDR_BASE, `${at.txid}:${at.checksum.toString(16).padStart(16, '0')}`);
      await jetstream(nc).publish(subjectOf(prefix, db, layout), s.bytes, { headers: h });
      at = { txid: s.header.txid, checksum: s.header.postChecksum };
    }
  } finally {
    await nc.close();
  }
}

for (const layout of skip ? [] : (['shards', 'streams'] as const)) {
  storageConformance(`NATS JetStream (3 nodes, R3, ${layout})`, async () => {
    const c = await getCluster();
    const prefix = `conf${++fixtureCount}`;
    const headsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-nats-heads-'));
    return {
      open: () => NatsStorage.open({ servers: c.servers, prefix, headsDir, layout }),
      tearTail: (db, bytes) => publishTorn(c.servers, prefix, db, bytes, layout),
      storeBehind: (db, journalId, base, snapshots) =>
        publishWhole(c.servers, prefix, db, journalId, base, snapshots, undefined, layout),
      headDir: (db) => path.join(headsDir, '0', db),
      cleanup: async () => {
        await dropPrefix(c.servers, prefix);
        fs.rmSync(headsDir, { recursive: true, force: true });
      },
    };
  });
}

const SERIES =
  'with recursive n(i) as (select 1 union all select i + 1 from n where i < 1000) insert into t(v) select randomblob(3000) from n';

const after0 = (s: EncodedSnapshot): Position => ({
  txid: s.header.txid,
  checksum: s.header.postChecksum,
});

async function readAll(st: NatsStorage, db: string, from: bigint, upTo: bigint): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const chunk of st.read(db, from, upTo)) parts.push(chunk);
  return concatBytes(parts);
}

describe('NatsStorage across hubs', { skip, timeout: 7 * TEST_MS + 2 * HOOK_MS }, () => {
  let c: NatsCluster;
  let dir: string;
  let h: History;
  let big: History;
  const open: NatsStorage[] = [];
  const storage = async (prefix: string, partBytes?: number): Promise<NatsStorage> => {
    const st = await NatsStorage.open({ servers: c.servers, prefix, partBytes });
    open.push(st);
    return st;
  };

  before(
    async () => {
      c = await getCluster();
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-nats-st-'));
      h = await makeHistory(path.join(dir, 'a.db'), sampleStatements(12, 3000));
      // Two transactions of ~3 MB each: snapshots bigger than NATS's 1 MB message limit.
      big = await makeHistory(path.join(dir, 'big.db'), [
        'create table t(id integer primary key, v blob)',
        SERIES,
        SERIES,
      ]);
    },
    { timeout: HOOK_MS },
  );
  after(
    async () => {
      for (const st of open) await settles(st.close(), 20_000, 'a storage close').catch(() => undefined);
      fs.rmSync(dir, { recursive: true, force: true });
    },
    { timeout: HOOK_MS },
  );

  it('two hubs appending from the same head: exactly one wins, the other learns the head', {
    timeout: TEST_MS,
  }, async () => {
    const a = await storage('race');
    const b = await storage('race');
    await a.append('app', EMPTY_POSITION, h.journalId, h.snapshots.slice(0, 2));
    const head = after0(h.snapshots[1]!);
    assert.deepEqual((await b.state('app'))?.head, head, 'hub B sees hub A’s append');
    for (let round = 0; round < 5; round++) {
      const from = 2 + round * 2;
      const at = round === 0 ? head : after0(h.snapshots[from - 1]!);
      const results = await Promise.all([
        a.append('app', at, h.journalId, h.snapshots.slice(from, from + 1)),
        b.append('app', at, h.journalId, h.snapshots.slice(from, from + 2)),
      ]);
      assert.equal(results.filter((r) => r.ok).length, 1, `round ${round}: one winner`);
      const loser = results.find((r) => !r.ok)!;
      assert.equal(!loser.ok && loser.reason, 'head_mismatch');
      const winnerHead = results.find((r) => r.ok)!.state.head;
      assert.deepEqual(loser.state?.head, winnerHead, 'the loser answers with the winner’s head');
      // bring both to the next even txid
      if (winnerHead.txid === BigInt(from + 1)) {
        const r = await a.append('app', winnerHead, h.journalId, h.snapshots.slice(from + 1, from + 2));
        assert.ok(r.ok);
      }
    }
    const whole = concatBytes(h.snapshots.map((s) => s.bytes));
    assert.deepEqual(await readAll(a, 'app', 0n, 12n), whole);
    assert.deepEqual(await readAll(b, 'app', 0n, 12n), whole);
  });

  it('a subscriber on hub B hears of appends made through hub A, in order', {
    timeout: TEST_MS,
  }, async () => {
    const a = await storage('live');
    const b = await storage('live');
    const seen: bigint[] = [];
    b.subscribe('app', (snaps) => {
      for (const s of snaps) seen.push(s.header.txid);
    });
    await b.state('app'); // B's view is running
    await a.append('app', EMPTY_POSITION, h.journalId, h.snapshots.slice(0, 3));
    await a.append('app', after0(h.snapshots[2]!), h.journalId, h.snapshots.slice(3, 7));
    const deadline = Date.now() + 10_000;
    while (seen.length < 7 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(seen, [1n, 2n, 3n, 4n, 5n, 6n, 7n]);
  });

  it('stores snapshots bigger than a NATS message in parts, and reads them back exactly', {
    timeout: TEST_MS,
  }, async () => {
    assert.ok(big.snapshots[1]!.bytes.length > 2 << 20, 'a multi-MB snapshot');
    const a = await storage('big');
    const r = await a.append('big', EMPTY_POSITION, big.journalId, big.snapshots);
    assert.ok(r.ok);
    const b = await storage('big');
    const whole = concatBytes(big.snapshots.map((s) => s.bytes));
    assert.deepEqual(await readAll(b, 'big', 0n, 3n), whole);
    assert.deepEqual(await readAll(b, 'big', 1n, 2n), big.snapshots[1]!.bytes);
    assert.deepEqual(await b.snapshotAt('big', 3n), big.snapshots[2]!.header);
    // Small parts too: several snapshots of one append split across many messages.
    const s = await storage('small-parts', 1500);
    await s.append('app', EMPTY_POSITION, h.journalId, h.snapshots.slice(0, 6));
    await s.append('app', after0(h.snapshots[5]!), h.journalId, h.snapshots.slice(6));
    const t = await storage('small-parts');
    for (const [from, upTo] of [
      [0, 12],
      [2, 9],
      [5, 6],
      [6, 12],
      [11, 12],
    ] as const) {
      assert.deepEqual(
        await readAll(t, 'app', BigInt(from), BigInt(upTo)),
        concatBytes(h.snapshots.slice(from, upTo).map((x) => x.bytes)),
        `read ${from}..${upTo}`,
      );
    }
  });

  it('skips an append torn by a dying hub, and the next append continues after it', {
    timeout: TEST_MS,
  }, async () => {
    const a = await storage('torn');
    await a.append('app', EMPTY_POSITION, h.journalId, h.snapshots.slice(0, 3));
    // A hub stored the first of two parts of 4..5 and died.
    const two = concatBytes(h.snapshots.slice(3, 5).map((s) => s.bytes));
    const nc = await connect({ servers: c.servers });
    const hd = headers();
    hd.set(HDR_APPEND, '4-5');
    hd.set(HDR_PART, '1/2');
    hd.set(HDR_JOURNAL, toHex(h.journalId));
    hd.set(HDR_BASE, `3:${h.snapshots[2]!.header.postChecksum.toString(16).padStart(16, '0')}`);
    await jetstream(nc).publish(subjectOf('torn', 'app'), two.subarray(0, 100), { headers: hd });
    await nc.close();
    const b = await storage('torn');
    assert.equal((await b.state('app'))!.head.txid, 3n, 'the torn append does not count');
    // Hub A's view is behind the torn message; its append still lands (after it), once.
    const r = await a.append('app', after0(h.snapshots[2]!), h.journalId, h.snapshots.slice(3, 5));
    assert.ok(r.ok);
    assert.equal((await b.state('app'))!.head.txid, 5n);
    assert.deepEqual(
      await readAll(b, 'app', 0n, 5n),
      concatBytes(h.snapshots.slice(0, 5).map((s) => s.bytes)),
    );
  });

  it('a stream from before modes is single-writer; an append of the other mode stored behind its back is skipped', {
    timeout: TEST_MS,
  }, async () => {
    const prefix = 'oldmode';
    const names = natsNames(prefix);
    const nc = await connect({ servers: c.servers });
    try {
      // The stream as a hub from before modes made it: the created marker, then appends without Mycelite-Mode.
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: names.stream('app'), subjects: [names.subject('app')], num_replicas: 3 });
      await jetstream(nc).publish(names.subject('app'), new Uint8Array(0), { msgID: 'created' });
    } finally {
      await nc.close();
    }
    await publishWhole(
      c.servers,
      prefix,
      'app',
      h.journalId,
      EMPTY_POSITION,
      h.snapshots.slice(0, 3),
      undefined,
      'streams',
    );
    const a = await storage(prefix);
    const state = (await a.state('app'))!;
    assert.deepEqual([state.head.txid, state.mode], [3n, 'single']);
    const at3 = after0(h.snapshots[2]!);
    const shared = await a.append('app', at3, h.journalId, h.snapshots.slice(3, 4), undefined, 'shared');
    assert.equal(!shared.ok && shared.reason, 'other_mode');
    assert.equal((await a.state('app'))!.head.txid, 3n, 'nothing was stored');
    // The same, published behind the storage's back (as a hub that skipped the check would): not counted.
    await publishWhole(
      c.servers,
      prefix,
      'app',
      h.journalId,
      at3,
      h.snapshots.slice(3, 4),
      'shared',
      'streams',
    );
    const b = await storage(prefix);
    assert.deepEqual([(await b.state('app'))!.head.txid, (await b.state('app'))!.mode], [3n, 'single']);
    assert.equal((await a.state('app'))!.head.txid, 3n);
    const r = await a.append('app', at3, h.journalId, h.snapshots.slice(3, 5));
    assert.ok(r.ok, 'a single-writer append goes in after it');
    assert.equal((await b.state('app'))!.head.txid, 5n);
    assert.deepEqual(
      await readAll(b, 'app', 0n, 5n),
      concatBytes(h.snapshots.slice(0, 5).map((x) => x.bytes)),
    );
  });

  it('a shared database stays shared for a hub that starts after a compaction purged its first appends', {
    timeout: TEST_MS,
  }, async () => {
    const a = await storage('cpmode');
    let head = EMPTY_POSITION;
    for (let i = 0; i < 9; i += 3) {
      const r = await a.append('app', head, h.journalId, h.snapshots.slice(i, i + 3), undefined, 'shared');
      assert.ok(r.ok);
      head = r.state.head;
    }
    assert.equal((await a.compact('app'))?.end?.txid, 8n, 'compacted');
    const b = await storage('cpmode'); // its view reads the purged stream
    const state = (await b.state('app'))!;
    assert.equal(state.mode, 'shared');
    assert.ok(state.base.txid > 0n, `its first appends are gone (base ${state.base.txid})`);
    const single = await b.append('app', head, h.journalId, h.snapshots.slice(9), undefined, 'single');
    assert.equal(!single.ok && single.reason, 'other_mode');
    assert.ok((await b.append('app', head, h.journalId, h.snapshots.slice(9), undefined, 'shared')).ok);
  });

  it('databases share shard streams, hubs appending to two of one shard at once both land; a database with a stream of its own keeps it', {
    timeout: TEST_MS,
  }, async () => {
    const prefix = 'shards';
    const names = natsNames(prefix);
    // The layout before shards: a hub made `old` with a stream of its own.
    const before = await NatsStorage.open({ servers: c.servers, prefix, layout: 'streams' });
    open.push(before);
    assert.ok((await before.append('old', EMPTY_POSITION, h.journalId, h.snapshots.slice(0, 3))).ok);
    const a = await storage(prefix);
    const b = await storage(prefix);
    // Databases in one shard, written through both hubs at once: each publish that another hub's message
    // on the shard overtook is sent again after it.
    const same = Array.from({ length: 400 }, (_, i) => `db${i}`).filter(
      (d) => names.shardOf(d) === names.shardOf('db0'),
    );
    const dbs = same.slice(0, 6);
    assert.equal(dbs.length, 6);
    for (let i = 0; i < 4; i++) {
      const results = await Promise.all(
        dbs.map((db, k) =>
          (k % 2 ? b : a).append(
            db,
            i === 0 ? EMPTY_POSITION : after0(h.snapshots[i * 2 - 1]!),
            h.journalId,
            h.snapshots.slice(i * 2, i * 2 + 2),
          ),
        ),
      );
      for (const r of results) assert.ok(r.ok, `round ${i}: ${JSON.stringify(!r.ok && r.reason)}`);
    }
    const whole = concatBytes(h.snapshots.slice(0, 8).map((x) => x.bytes));
    for (const db of dbs) assert.deepEqual(await readAll(b, db, 0n, 8n), whole, db);
    // `old` is read and appended where it was; the new ones are subjects of shard streams.
    assert.ok((await a.append('old', after0(h.snapshots[2]!), h.journalId, h.snapshots.slice(3, 5))).ok);
    assert.equal((await before.state('old'))!.head.txid, 5n, 'the hub of the old layout sees it');
    assert.deepEqual(await b.list(), [...dbs, 'old'].sort());
    const nc = await connect({ servers: c.servers });
    try {
      const jsm = await jetstreamManager(nc);
      const streams: string[] = [];
      for (const subject of [names.allSnapshots, names.allShards])
        for await (const s of jsm.streams.names(subject)) streams.push(s);
      assert.deepEqual(streams.sort(), [names.shardStream(names.shardOf('db0')), names.stream('old')].sort());
    } finally {
      await nc.close();
    }
  });

  // Last: it kills a node (and starts it again) under the shared cluster.
  it('a subscriber whose consumer’s node is SIGKILLed goes on hearing appends, without any wait', {
    timeout: TEST_MS,
  }, async () => {
    const a = await storage('nodeloss');
    const b = await storage('nodeloss');
    const seen: bigint[] = [];
    await a.append('app', EMPTY_POSITION, h.journalId, h.snapshots.slice(0, 2));
    const nc = await connect({ servers: c.servers });
    const stream = natsNames('nodeloss').shardPlace('app').stream;
    /** Consumer name → the node it lives on (an ordered consumer is R1: one node). */
    const consumers = async (): Promise<Map<string, string>> => {
      const jsm = await jetstreamManager(nc);
      const out = new Map<string, string>();
      for await (const ci of jsm.consumers.list(stream)) out.set(ci.name, ci.cluster?.leader ?? '');
      return out;
    };
    let host: string;
    try {
      const ofA = await consumers();
      b.subscribe('app', (snaps) => {
        for (const s of snaps) seen.push(s.header.txid);
      });
      assert.equal((await b.state('app'))!.head.txid, 2n); // B's view runs; from here on only subscribed
      const ofB = [...(await consumers())].filter(([name]) => !ofA.has(name));
      assert.equal(ofB.length, 1, 'B’s view has one consumer');
      host = ofB[0]![1];
      assert.match(host, /^n\d$/);
    } finally {
      await nc.close();
    }
    const node = Number(host!.slice(1)) - 1;
    await c.kill(node);
    try {
      await a.append('app', after0(h.snapshots[1]!), h.journalId, h.snapshots.slice(2, 5));
      await a.append('app', after0(h.snapshots[4]!), h.journalId, h.snapshots.slice(5, 8));
      const deadline = Date.now() + 40_000;
      while (seen.length < 6 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(seen, [3n, 4n, 5n, 6n, 7n, 8n], `B heard every append once, in order (${host} down)`);
    } finally {
      await c.restart(node);
    }
  });

  it('a view nobody uses is released after viewIdleMs, not one a follower listens to; a released database reads and appends as before', {
    timeout: TEST_MS,
  }, async () => {
    const st = await NatsStorage.open({ servers: c.servers, prefix: 'idle', viewIdleMs: 300 });
    open.push(st);
    const figure = async (name: string): Promise<number> => (await st.health()).figures?.[name]?.value ?? -1;
    const until = async (what: string, probe: () => Promise<boolean>): Promise<void> => {
      const deadline = Date.now() + 30_000;
      while (!(await probe())) {
        if (Date.now() > deadline) throw new Error(`${what}: not within 30 s`);
        await new Promise((r) => setTimeout(r, 25));
      }
    };
    assert.ok((await st.append('quiet', EMPTY_POSITION, h.journalId, h.snapshots.slice(0, 2))).ok);
    assert.ok((await st.append('heard', EMPTY_POSITION, h.journalId, h.snapshots.slice(0, 2))).ok);
    /** This process's open files that are head files of `db` (two each: its pages and its record). */
    const headFiles = (db: string): number =>
      fs.readdirSync('/proc/self/fd').filter((fd) => {
        try {
          return new RegExp(`/${db}/head\\.(db|pos)$`).test(fs.readlinkSync(`/proc/self/fd/${fd}`));
        } catch {
          return false; // closed meanwhile
        }
      }).length;
    const heard: bigint[] = [];
    const off = st.subscribe('heard', (snapshots) => heard.push(...snapshots.map((x) => x.header.txid)));
    await until('the idle view released', async () => (await figure('mycelite_nats_views_released')) >= 1);
    assert.equal(
      headFiles('quiet'),
      0,
      'a released view’s head file is closed (10,000 databases ran out of files)',
    );
    assert.equal(headFiles('heard'), 2, 'a held view’s head file stays open');
    assert.equal(await figure('mycelite_nats_views'), 1, 'the followed view is kept');
    assert.equal(await figure('mycelite_nats_views_released'), 1);

    // The released database is read again from its stream: the same head and bytes, and appends go on.
    assert.deepEqual((await st.state('quiet'))?.head, after0(h.snapshots[1]!));
    assert.deepEqual(
      await readAll(st, 'quiet', 0n, 2n),
      concatBytes(h.snapshots.slice(0, 2).map((x) => x.bytes)),
    );
    const r = await st.append('quiet', after0(h.snapshots[1]!), h.journalId, h.snapshots.slice(2, 4));
    assert.ok(r.ok, 'an append after the release');
    assert.deepEqual(r.state.head, after0(h.snapshots[3]!));

    // The follower still hears appends, after the other view's release.
    assert.ok((await st.append('heard', after0(h.snapshots[1]!), h.journalId, h.snapshots.slice(2, 3))).ok);
    await until('the follower hears txid 3', async () => heard.includes(3n));
    off();
    await until(
      'the view released once its follower left',
      async () => (await figure('mycelite_nats_views_released')) >= 3,
    );
    assert.equal(await figure('mycelite_nats_views'), 0);
  });
});
