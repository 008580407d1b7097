/**
 * A hub on NATS keeps its compacted history in the cluster (docs/ARCHITECTURE.md, "Scale-out on NATS
 * JetStream", guarantee 53): a `mycelite serve --storage` hub compacts twice under `--retain forever:all`
 * (each compaction stores the history in the object store and a checkpoint naming it); then the writer's
 * files and that hub are gone, and `mycelite restore --hub` against a new hub (empty --data, no
 * compaction) restores points before each checkpoint byte for byte as the writer's own journal did.
 * A reader of the history racing compactions always gets a whole one, and each compaction removes the
 * history it replaced. On a real 3-node cluster.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { jetstream } from '@nats-io/jetstream';
import { Objm } from '@nats-io/obj';
import { connect, headers } from '@nats-io/transport-node';
import { JournalReader, loadHash, memorySource, type Position } from '../src/format/index.js';
import { NatsStorage } from '../src/hub/nats-storage.js';
import { HDR_UPLOAD, historyName, natsNames } from '../src/hub/nats-wire.js';
import type { MyceliteDatabase } from '../src/node/index.js';
import { EMPTY_POSITION } from '../src/protocol/index.js';
import { runCli } from './helpers/cli.js';
import { concatBytes, hubWriter, makeHistory, type SpawnedHub, spawnHub } from './helpers/hub.js';
import { haveNatsServer, type NatsCluster, startNatsCluster } from './helpers/nats-cluster.js';
import { cleanupTempDirs, fileHash, tempDir } from './helpers/util.js';

const skip = haveNatsServer() ? false : 'nats-server is not installed (apt-get install nats-server)';

/** Inserts, then rewrites rows: the snapshots outgrow the database. */
function burst(w: MyceliteDatabase, n: number): void {
  const ins = w.prepare('INSERT INTO t(a, b) VALUES (random(), randomblob(?))');
  const upd = w.prepare('UPDATE t SET b = randomblob(length(b)) WHERE id % 5 = ?');
  for (let i = 0; i < n; i++) {
    ins.run(200 + (i % 7) * 300);
    if (i % 3 === 0) upd.run(i % 5);
  }
}

/** The `upTo` of every compaction the hub logged, in order. */
function compactions(hub: SpawnedHub): bigint[] {
  const out: bigint[] = [];
  for (const line of hub.stderr().split('\n')) {
    if (!line.includes('"msg":"compacted"')) continue;
    const upTo = (JSON.parse(line) as { upTo?: string }).upTo;
    if (upTo) out.push(BigInt(upTo));
  }
  return out;
}

describe('compacted history on NATS', { skip }, () => {
  let cluster: NatsCluster;
  const cleanups: (() => Promise<void> | void)[] = [];
  before(async () => {
    cluster = await startNatsCluster(3);
  });
  after(async () => {
    for (const c of cleanups.reverse()) await c();
    await cluster?.stop();
    cleanupTempDirs();
  });

  it("restore --hub reaches points before the checkpoints with the writer's files and the compacting hub gone", async (t) => {
    const dir = tempDir();
    const keyDir = tempDir('mycelite-hub-');
    const a = await spawnHub(keyDir, 0, [
      '--storage',
      cluster.url,
      '--compact-above',
      '1KiB',
      '--compact-every',
      '1s',
      '--retain',
      'forever:all',
      '--log-level',
      'info',
    ]);
    cleanups.push(() => a.kill());
    const wPath = path.join(dir, 'w.db');
    const w = await hubWriter(wPath, a, cleanups);
    w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, a, b)');
    burst(w, 40);
    await w.sync!.flush(20_000); // creates the database on the hub
    // Pushes until the hub compacted twice (the second one starts from the history of the first).
    const deadline = Date.now() + 60_000;
    while (compactions(a).length < 2) {
      assert.ok(Date.now() < deadline, `the hub compacted twice in time (${a.stderr()})`);
      burst(w, 20);
      await w.sync!.flush(20_000);
      await sleep(300);
    }
    assert.doesNotMatch(a.stderr(), /compaction failed/);
    const [first, second] = compactions(a) as [bigint, bigint];
    assert.ok(first > 5n && second > first + 1n, `checkpoints at ${first} and ${second}`);
    // The points to restore: before the first checkpoint, between the two, and the latest.
    const points = [5n, first + 1n];
    const expected = new Map<bigint, string>();
    for (const txid of points) {
      const out = path.join(dir, `local-${txid}.db`);
      const r = await runCli(['restore', wPath, '--txid', String(txid), '--output', out]);
      assert.equal(r.status, 0, r.stderr);
      expected.set(txid, fileHash(out));
    }
    w.close();
    await w.sync!.close();
    const latest = fileHash(wPath);
    // The writer's machine is lost, and so is the hub that compacted.
    for (const f of fs.readdirSync(dir))
      if (f.startsWith('w.db')) fs.rmSync(path.join(dir, f), { recursive: true, force: true });
    await a.kill();
    const bDir = tempDir('mycelite-hub-');
    fs.copyFileSync(path.join(keyDir, 'hub.key'), path.join(bDir, 'hub.key'));
    const b = await spawnHub(bDir, 0, ['--storage', cluster.url, '--no-compact']);
    cleanups.push(() => b.kill());
    const reader = { MYCELITE_TOKEN: await b.token('app', 'reader') };
    for (const txid of points) {
      const out = path.join(dir, `hub-${txid}.db`);
      const r = await runCli(
        ['restore', '--hub', b.url, '--db', 'app', '--txid', String(txid), '--output', out],
        reader,
      );
      assert.equal(r.status, 0, r.stderr);
      assert.equal(fileHash(out), expected.get(txid), `txid ${txid}`);
    }
    const out = path.join(dir, 'hub-latest.db');
    const r = await runCli(['restore', '--hub', b.url, '--db', 'app', '--output', out], reader);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(fileHash(out), latest, 'the latest point');
    assert.deepEqual(
      fs.readdirSync(dir).filter((f) => f.startsWith('.mycelite-restore-')),
      [],
    );
    t.diagnostic(
      `checkpoints at txid ${first} and ${second}; restored txids ${points.join(', ')} and the latest`,
    );
  });

  it('a history read while compactions replace it is whole, and a compaction removes the history it replaced', async (t) => {
    await loadHash();
    const dir = tempDir();
    const h = await makeHistory(
      path.join(dir, 'a.db'),
      ['create table t(id integer primary key, v blob)'].concat(
        Array.from({ length: 79 }, (_, i) =>
          i % 3 === 2
            ? `update t set v = randomblob(2000) where id % 4 = ${i % 4}`
            : 'insert into t(v) values (randomblob(2000))',
        ),
      ),
    );
    const a = await NatsStorage.open({
      servers: cluster.servers,
      prefix: 'hr',
      compaction: { retain: 'forever:all', minBytes: 1 << 30, everyMs: 0 },
    });
    const b = await NatsStorage.open({ servers: cluster.servers, prefix: 'hr', compaction: false });
    cleanups.push(
      () => a.close(),
      () => b.close(),
    );
    /** The history b serves, whole: where it ends. */
    const historyEnd = async (): Promise<bigint | undefined> => {
      const it = await b.history('x');
      if (!it) return undefined;
      const parts: Uint8Array[] = [];
      for await (const chunk of it) parts.push(chunk);
      const reader = new JournalReader(memorySource(concatBytes(parts)), {
        merged: true,
        whole: true,
        verify: true,
      });
      let end = reader.header.baseTxid;
      for (const s of reader.snapshots()) end = s.txid;
      return end;
    };
    let head: Position = EMPTY_POSITION;
    const push = async (upTo: number): Promise<void> => {
      const r = await a.append('x', head, h.journalId, h.snapshots.slice(Number(head.txid), upTo));
      assert.ok(r.ok);
      head = r.state.head;
    };
    await push(20);
    assert.equal(await historyEnd(), undefined, 'nothing compacted yet: no history');
    assert.equal((await a.compact('x'))?.end?.txid, 19n);
    assert.equal(await historyEnd(), 19n, 'the history ends at the checkpoint');
    let checkpoint = 19n;
    let reads = 0;
    for (let to = 30; to <= 80; to += 10) {
      await push(to);
      // Two readers read the history again and again while the compaction runs.
      let done = false;
      const compaction = a.compact('x').finally(() => {
        done = true;
      });
      const ends: (bigint | undefined)[] = [];
      const reading = async (): Promise<void> => {
        do ends.push(await historyEnd());
        while (!done);
      };
      await Promise.all([reading(), reading()]);
      const outcome = await compaction;
      reads += ends.length;
      const next = outcome?.end?.txid;
      assert.equal(next, BigInt(to - 1));
      for (const end of ends)
        assert.ok(
          end === checkpoint || end === next,
          `a whole history, ending at ${end} (${checkpoint} or ${next})`,
        );
      checkpoint = next!;
      assert.equal(await historyEnd(), checkpoint);
    }
    t.diagnostic(`${reads} reads of the history during 6 compactions`);
    // Each compaction removed the history it replaced: one object is left, the last one.
    const nc = await connect({ servers: cluster.servers });
    try {
      const store = await new Objm(nc).open('HR_HISTORY');
      const names = (await store.list()).filter((o) => !o.deleted).map((o) => o.name);
      assert.equal(names.length, 1, names.join(', '));
      assert.match(names[0]!, new RegExp(`^x/${checkpoint}-`));
    } finally {
      await nc.close();
    }
  });

  it('a history object whose hub died before its checkpoint named it is removed by the next compaction', async () => {
    await loadHash();
    const dir = tempDir();
    const h = await makeHistory(
      path.join(dir, 'o.db'),
      ['create table t(id integer primary key, v blob)'].concat(
        Array.from({ length: 29 }, () => 'insert into t(v) values (randomblob(500))'),
      ),
    );
    const a = await NatsStorage.open({
      servers: cluster.servers,
      prefix: 'orph',
      compaction: { retain: 'forever:all', minBytes: 1 << 30, everyMs: 0 },
    });
    cleanups.push(() => a.close());
    const append = async (from: number, to: number): Promise<void> => {
      const at = from === 0 ? EMPTY_POSITION : (await a.state('x'))!.head;
      assert.ok((await a.append('x', at, h.journalId, h.snapshots.slice(from, to))).ok);
    };
    await append(0, 20);
    assert.equal((await a.compact('x'))?.end?.txid, 19n);
    await append(20, 26);
    // What a hub that died between storing its history object and storing its checkpoint leaves: its
    // announcement on the database's subject, and the object.
    const names = natsNames('orph');
    const orphan = historyName('x', 25n);
    const nc = await connect({ servers: cluster.servers });
    cleanups.push(() => nc.close());
    const hd = headers();
    hd.set(HDR_UPLOAD, orphan);
    await jetstream(nc).publish(names.shardPlace('x').subject, new Uint8Array(0), { headers: hd });
    const store = await new Objm(nc).open(names.historyBucket);
    await store.putBlob({ name: orphan }, new Uint8Array(1000));
    await append(26, 30);
    assert.equal((await a.compact('x'))?.end?.txid, 29n);
    const left = (await store.list()).filter((o) => !o.deleted).map((o) => o.name);
    assert.equal(left.length, 1, `one object, the checkpoint's: ${left.join(', ')}`);
    assert.match(left[0]!, /^x\/29-/);
  });
});
