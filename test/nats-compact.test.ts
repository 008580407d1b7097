/**
 * Compaction on NATS JetStream (docs/ARCHITECTURE.md, "Scale-out on NATS JetStream"): a hub stores a
 * checkpoint (full image) in a database's stream and purges the messages before it. Other hubs' views
 * move their base up (or, having missed the purged messages, read the stream afresh), reads from before
 * the base fail with BeforeBaseError, images start at the checkpoint; over HTTP, replicas stay
 * byte-equal, a lagging one resets and a new one bootstraps. On a real 3-node cluster.
 */

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import {
  encodeFileHeader,
  FORMAT_VERSION,
  loadHash,
  memorySource,
  type Position,
} from '../src/format/index.js';
import type { CompactOutcome } from '../src/hub/compact-worker.js';
import { ImageCache } from '../src/hub/image-cache.js';
import { NatsStorage } from '../src/hub/nats-storage.js';
import { DbTail, type TailSource } from '../src/hub/nats-tail.js';
import { natsNames } from '../src/hub/nats-wire.js';
import { BeforeBaseError } from '../src/hub/storage.js';
import type { MyceliteDatabase, ReplicaDatabase } from '../src/node/index.js';
import { NodeFileSystem } from '../src/node/node-fs.js';
import { EMPTY_POSITION, type EncodedSnapshot } from '../src/protocol/index.js';
import { replay } from '../src/restore/replay.js';
import {
  concatBytes,
  followReplica,
  type History,
  hubWriter,
  makeHistory,
  type SpawnedHub,
  spawnHub,
  caughtUp as waitCaughtUp,
} from './helpers/hub.js';
import { type NatsCluster, startNatsCluster } from './helpers/nats-cluster.js';
import { afterNatsTests, HOOK_MS, natsSkip, TEST_MS } from './helpers/nats-test.js';
import { fileHash, tempDir } from './helpers/util.js';

const skip = natsSkip;
const nodeFs = new NodeFileSystem();

async function readAll(st: NatsStorage, db: string, from: bigint, upTo: bigint): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const chunk of st.read(db, from, upTo)) parts.push(chunk);
  return concatBytes(parts);
}

describe('compaction on NATS', { skip, timeout: 3 * TEST_MS + 3 * HOOK_MS }, () => {
  let cluster: NatsCluster;
  let dir: string;
  let h: History & { dbPath: string };
  const cleanups: (() => Promise<void> | void)[] = [];

  before(
    async () => {
      await loadHash();
      cluster = await startNatsCluster(3);
      dir = tempDir();
      h = await makeHistory(
        path.join(dir, 'a.db'),
        ['create table t(id integer primary key, v blob)'].concat(
          Array.from({ length: 59 }, (_, i) =>
            i % 3 === 2
              ? `update t set v = randomblob(3000) where id % 4 = ${i % 4}`
              : 'insert into t(v) values (randomblob(3000))',
          ),
        ),
      );
    },
    { timeout: HOOK_MS },
  );
  after(
    async () => {
      await afterNatsTests(cleanups);
    },
    { timeout: HOOK_MS },
  );

  async function storage(
    options: Partial<Parameters<typeof NatsStorage.open>[0]> = {},
  ): Promise<NatsStorage> {
    const st = await NatsStorage.open({
      servers: cluster.servers,
      prefix: 'cp',
      compaction: false,
      ...options,
    });
    cleanups.push(() => st.close());
    return st;
  }

  it('a view of a shard that missed the messages a compaction purged reads afresh from what follows', {
    timeout: TEST_MS,
  }, async () => {
    const snaps = h.snapshots as EncodedSnapshot[];
    const a = await storage({ prefix: 'lag' });
    const append = async (from: number, to: number): Promise<void> => {
      for (let i = from; i < to; i += 5) {
        const at = i === 0 ? EMPTY_POSITION : (await a.state('y'))!.head;
        assert.ok((await a.append('y', at, h.journalId, snaps.slice(i, Math.min(i + 5, to)))).ok);
      }
    };
    await append(0, 10);
    // A view of y whose consumer can be held back (a slow node, a hub under load): as the storage makes it.
    const place = natsNames('lag').shardPlace('y');
    const nc = await connect({ servers: cluster.servers });
    cleanups.push(() => nc.close());
    const jsm = await jetstreamManager(nc);
    let gate: Promise<void> | undefined;
    let open!: () => void;
    const source: TailSource = {
      open: async (from) => {
        await gate;
        const consumer = await jetstream(nc).consumers.get(place.stream, {
          filter_subjects: place.subject,
          ...(from > 1 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from } : {}),
        });
        const messages = await consumer.consume({ max_messages: 256, expires: 5000, idle_heartbeat: 1000 });
        return { messages, remove: () => void consumer.delete().catch(() => undefined) };
      },
      get: (seq) => jsm.streams.getMessage(place.stream, { seq }),
      next: (seq) =>
        jsm.streams.getMessage(place.stream, { seq, next_by_subj: place.subject } as unknown as {
          seq: number;
        }),
      lastSeq: async () =>
        (await jsm.streams.getMessage(place.stream, { last_by_subj: place.subject }))?.seq ?? 0,
    };
    const view = new DbTail('y', undefined, true);
    cleanups.push(async () => view.stop());
    view.start(source);
    await view.waitSeq(await source.lastSeq(), 20_000, 'y');
    assert.equal(view.head.txid, 10n);
    gate = new Promise((r) => {
      open = r;
    });
    view.renew(); // its next consumer waits at the gate
    await append(10, 30);
    assert.equal((await a.compact('y'))?.end?.txid, 29n);
    await append(30, 33);
    open();
    await view.waitSeq(await source.lastSeq(), 20_000, 'y');
    assert.deepEqual(view.state(), await a.state('y'), 'the view holds what the hub holds');
    assert.equal(view.base.txid, 29n);
  });

  it('a checkpoint moves every hub’s base, purges the stream, and images start at it', {
    timeout: TEST_MS,
  }, async () => {
    const snaps = h.snapshots as EncodedSnapshot[];
    const a = await storage();
    const b = await storage();
    let head: Position = EMPTY_POSITION;
    for (let i = 0; i < 30; i += 5) {
      const r = await a.append('x', head, h.journalId, snaps.slice(i, i + 5));
      assert.ok(r.ok);
      head = r.state.head;
    }
    assert.equal((await b.state('x'))?.head.txid, 30n, 'hub B follows');
    const outcome = await a.compact('x');
    assert.equal(outcome?.end?.txid, 29n, 'the checkpoint is the head − 1');
    assert.equal((await a.state('x'))?.base.txid, 29n);
    assert.equal((await b.state('x'))?.base.txid, 29n, 'hub B read the checkpoint');
    await assert.rejects(readAll(b, 'x', 10n, 30n), BeforeBaseError);
    assert.deepEqual(await readAll(b, 'x', 29n, 30n), snaps[29]!.bytes, 'what follows the base is served');
    const nc = await connect({ servers: cluster.servers });
    try {
      // The database's first message on its shard is no longer its created marker but an append.
      const place = natsNames('cp').shardPlace('x');
      const first = await (await jetstreamManager(nc)).streams.getMessage(place.stream, {
        seq: 1,
        next_by_subj: place.subject,
      } as unknown as { seq: number });
      assert.ok(
        first?.header?.get('Mycelite-Append'),
        `the subject was purged (first message ${first?.seq})`,
      );
    } finally {
      await nc.close();
    }

    // A hub that starts now reads the purged stream: base 29 from its first append, then the checkpoint.
    const outcomes: (CompactOutcome | Error)[] = [];
    const c = await storage({
      compaction: { minBytes: 1024, everyMs: 0, onCompaction: (_db, o) => outcomes.push(o) },
    });
    const st = (await c.state('x'))!;
    assert.equal(st.base.txid, 29n);
    assert.equal(st.head.txid, 30n);
    assert.equal((await c.checkpoint('x', 29n))?.header.txid, 29n, 'hub C holds the checkpoint');
    // It appends the rest and compacts by itself as it goes.
    for (let i = 30; i < snaps.length; i += 3) {
      const r = await c.append('x', head, h.journalId, snaps.slice(i, i + 3));
      assert.ok(r.ok);
      head = r.state.head;
    }
    const deadline = Date.now() + 20_000;
    while (!outcomes.some((o) => !(o instanceof Error) && (o.end?.txid ?? 0n) > 30n) && Date.now() < deadline)
      await sleep(50);
    assert.deepEqual(
      outcomes.filter((o) => o instanceof Error),
      [],
      'no compaction failed',
    );
    await sleep(300); // let a compaction in flight end
    for (const s of [a, b, c]) {
      const state = (await s.state('x'))!;
      assert.equal(state.head.txid, 60n, 'every hub sees the head');
      assert.ok(state.base.txid > 30n, `every hub moved its base (${state.base.txid})`);
    }
    // The image of the head, built from the checkpoint and what follows, is the writer's database.
    for (const s of [a, c]) {
      const state = (await s.state('x'))!;
      const images = new ImageCache(s, fs.mkdtempSync(path.join(dir, 'img-')));
      const img = await images.get('x', state);
      const bytes = new Uint8Array(img.header.length);
      await img.file.read(bytes, 0, bytes.length, 0);
      await img.file.close();
      await images.close();
      const journal = concatBytes([
        encodeFileHeader({
          version: FORMAT_VERSION,
          journalId: h.journalId,
          createdAt: 0,
          baseTxid: img.header.txid - 1n,
          baseChecksum: img.header.preChecksum,
        }),
        bytes,
      ]);
      const out = path.join(dir, `image-${Date.now()}.db`);
      const f = nodeFs.open(out, { create: true });
      try {
        replay(memorySource(journal), f);
      } finally {
        f.close();
      }
      assert.equal(fileHash(out), fileHash(h.dbPath), 'the image replays to the database');
    }
  });

  describe('over HTTP, two hubs', () => {
    let a: SpawnedHub;
    let b: SpawnedHub;
    before(
      async () => {
        const keyDir = tempDir('mycelite-hub-');
        const args = [
          '--storage',
          cluster.url,
          '--compact-above',
          '1KiB',
          '--compact-every',
          '1s',
          '--log-level',
          'info',
        ];
        a = await spawnHub(keyDir, 0, args);
        b = await spawnHub(keyDir, 0, args);
        cleanups.push(
          () => a.kill(),
          () => b.kill(),
        );
      },
      { timeout: HOOK_MS },
    );

    const replica = (file: string, hub: SpawnedHub): Promise<ReplicaDatabase> =>
      followReplica(file, hub, cleanups, { maxBackoffMs: 300 });

    function burst(w: MyceliteDatabase, n: number): void {
      const ins = w.prepare('INSERT INTO t(a, b) VALUES (random(), randomblob(?))');
      const upd = w.prepare('UPDATE t SET b = randomblob(length(b)) WHERE id % 5 = ?');
      for (let i = 0; i < n; i++) {
        ins.run(200 + (i % 5) * 700);
        if (i % 3 === 0) upd.run(i % 5);
      }
    }

    const caughtUp = (w: MyceliteDatabase, r: ReplicaDatabase): Promise<void> => waitCaughtUp(w, r, 30_000);

    it('replicas stay byte-equal while the hubs compact; a lagging one resets, a new one bootstraps', {
      timeout: TEST_MS,
    }, async (t) => {
      const wPath = path.join(dir, 'w.db');
      const w = await hubWriter(wPath, a, cleanups);
      w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, a, b)');
      await w.sync!.flush(20_000);
      const live = await replica(path.join(dir, 'live.db'), b);
      const laggingPath = path.join(dir, 'lagging.db');
      let lagging = await replica(laggingPath, b);
      burst(w, 10);
      await caughtUp(w, lagging);
      await lagging.close();
      // Rounds of writes until the hubs logged two compactions (a compaction also builds the history and
      // stores it in the object store: on a loaded machine one can take a few seconds).
      const compactions = (): number => (a.stderr() + b.stderr()).match(/"msg":"compacted"/g)?.length ?? 0;
      const deadline = Date.now() + 90_000;
      for (let round = 0; round < 5 || (compactions() < 2 && Date.now() < deadline); round++) {
        burst(w, 20);
        await caughtUp(w, live);
        assert.equal(fileHash(path.join(dir, 'live.db')), fileHash(wPath), `round ${round}`);
        await sleep(300);
      }
      const compacted = compactions();
      assert.ok(compacted >= 2, `the hubs compacted (${compacted})`);
      assert.doesNotMatch(a.stderr() + b.stderr(), /compaction failed/);
      lagging = await replica(laggingPath, b);
      const resets: unknown[] = [];
      lagging.on('reset', (e) => resets.push(e));
      await caughtUp(w, lagging);
      assert.equal(fileHash(laggingPath), fileHash(wPath), 'the lagging replica converged');
      assert.ok(resets.length >= 1, 'the lagging replica was reset');
      t.diagnostic(
        `${compacted} compactions logged by the two hubs; lagging replica resets: ${resets.length}`,
      );
      const fresh = await replica(path.join(dir, 'fresh.db'), a);
      await caughtUp(w, fresh);
      assert.equal(fileHash(path.join(dir, 'fresh.db')), fileHash(wPath), 'a new replica bootstraps');
    });
  });
});
