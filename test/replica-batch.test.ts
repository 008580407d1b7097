// Snapshots applied to a replica in batches (one SQLite transaction for several, as a catching-up
// follower does): the replica is the writer's bytes after any batch — across shrinks and regrowth inside
// a batch — a lying batch is refused whole, and a batch cut by a crash at any point (exact windows, and
// SIGKILL at random moments) is finished or redone at the next open.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type FaultPlan, FaultyFileSystem } from '../src/files/faulty-fs.js';
import type { Runtime } from '../src/files/file-system.js';
import { FLAG_COMPRESSED, memorySource, type SnapshotHeader, walkPatches } from '../src/format/index.js';
import { nodeRuntime, open } from '../src/node/index.js';
import { NodeFileSystem } from '../src/node/node-fs.js';
import { StreamParser } from '../src/protocol/index.js';
import { ChecksumMismatchError } from '../src/replica/apply.js';
import { ReplicaStore } from '../src/replica/replica.js';
import { type Encoded, prng, reencode, snapshotsAfter } from './helpers/replica.js';
import {
  cleanupTempDirs,
  fileHash,
  journalEnd,
  nativeIntegrity,
  replayBytes,
  sha256,
  tempDir,
} from './helpers/util.js';

after(() => cleanupTempDirs());

const CHILD = fileURLToPath(new URL('./helpers/batch-child.js', import.meta.url));
const items = (snaps: Encoded[]) => snaps.map((s) => ({ bytes: s.bytes, header: s.header }));

/** A writer with a first table and a replica holding it (from the writer's first snapshot on). */
async function setup(dir: string, rt: Runtime = nodeRuntime) {
  const wPath = path.join(dir, 'w.db');
  const rPath = path.join(dir, 'r.db');
  const w = await open(wPath);
  w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, a INTEGER, b BLOB); CREATE INDEX ta ON t(a)');
  const journal = `${wPath}-mycelite/journal`;
  const store = await ReplicaStore.open(rt, rPath);
  const { file, snaps } = snapshotsAfter(journal, 0n);
  await store.reset(file, snaps[0]!.bytes, snaps[0]!.header);
  await store.appendBatch(items(snaps.slice(1)));
  return { w, wPath, rPath, journal, store };
}

/** Random transactions, with shrinks (DELETE + VACUUM) and regrowth. */
function work(w: Awaited<ReturnType<typeof open>>, rnd: () => number, n: number): void {
  const ins = w.prepare('INSERT INTO t(a, b) VALUES (?, randomblob(?))');
  for (let step = 0; step < n; step++) {
    const op = rnd();
    if (op < 0.5) {
      w.transaction(() => {
        for (let i = 0; i < 1 + Math.floor(rnd() * 30); i++)
          ins.run(Math.floor(rnd() * 1e6), rnd() < 0.1 ? 9000 : Math.floor(rnd() * 400));
      })();
    } else if (op < 0.7) {
      w.exec(
        `UPDATE t SET b = randomblob(${Math.floor(rnd() * 1500)}) WHERE a % 5 = ${Math.floor(rnd() * 5)}`,
      );
    } else if (op < 0.85) {
      w.exec(`DELETE FROM t WHERE a % 3 = ${Math.floor(rnd() * 3)}`);
    } else {
      w.exec('VACUUM');
    }
  }
}

test('batches of every size give the writer byte for byte, across shrinks and regrowth', async () => {
  for (const [seed, per] of [
    [1, 2],
    [2, 7],
    [3, 1000],
  ] as const) {
    const { w, wPath, rPath, journal, store } = await setup(tempDir());
    try {
      const rnd = prng(seed);
      for (let round = 0; round < 4; round++) {
        work(w, rnd, 25);
        const snaps = snapshotsAfter(journal, store.position!.txid).snaps;
        for (let i = 0; i < snaps.length; i += per) {
          const infos = await store.appendBatch(items(snaps.slice(i, i + per)));
          assert.equal(infos.length, Math.min(per, snaps.length - i));
        }
        assert.equal(store.position!.txid, w.position().txid);
        assert.equal(fileHash(rPath), fileHash(wPath), `seed ${seed} round ${round}: replica equals writer`);
      }
      // Everything deleted and vacuumed, then grown again, in one batch.
      w.exec('DELETE FROM t');
      w.exec('VACUUM');
      work(w, rnd, 5);
      await store.appendBatch(items(snapshotsAfter(journal, store.position!.txid).snaps));
      assert.equal(fileHash(rPath), fileHash(wPath));
      assert.ok(store.checkDatabase().ok);
      assert.equal(nativeIntegrity(rPath), 'ok');
    } finally {
      w.close();
      store.close();
    }
  }
});

test('a batch whose last postChecksum lies is refused whole; the journal is cut back to before it', async () => {
  const { w, rPath, journal, store } = await setup(tempDir());
  try {
    work(w, prng(5), 6);
    const at = store.position!;
    const before = fileHash(rPath);
    const snaps = snapshotsAfter(journal, at.txid).snaps;
    const last = snaps.length - 1;
    snaps[last] = reencode(snaps[last]!, { postChecksum: snaps[last]!.header.postChecksum ^ 1n });
    await assert.rejects(store.appendBatch(items(snaps)), ChecksumMismatchError);
    assert.equal(fileHash(rPath), before, 'nothing of the batch was applied');
    assert.deepEqual(store.position, at);
    assert.equal(store.journalId !== undefined, true);
  } finally {
    w.close();
    store.close();
  }
  const again = await ReplicaStore.open(nodeRuntime, rPath);
  try {
    assert.ok(again.checkDatabase().ok, 'the replica agrees with its journal');
  } finally {
    again.close();
  }
});

// The crash windows of a batch are reached through the labelled fault file system: the replica's own file
// operations fail at one label (src/files/faulty-fs.ts), leaving its files as a crash there would.
const faulty = new FaultyFileSystem(new NodeFileSystem());
const faultyRuntime: Runtime = { ...nodeRuntime, fs: faulty };

/**
 * A writer, a replica over the fault file system, and a batch the replica has not taken; the batch's
 * append then fails at `plan` (after its inflight marker was set, as appendBatch does first).
 */
async function failBatchAt(dir: string, plan: FaultPlan) {
  const s = await setup(dir, faultyRuntime);
  work(s.w, prng(9), 8);
  const snaps = snapshotsAfter(s.journal, s.store.position!.txid).snaps;
  const at = s.store.position!;
  const fired = faulty.fired.length;
  faulty.arm(plan);
  try {
    await assert.rejects(s.store.appendBatch(items(snaps)));
  } finally {
    faulty.disarm();
  }
  assert.deepEqual(faulty.fired.slice(fired), [plan], `the fault at ${plan.label} fired`);
  return { ...s, snaps, at };
}

async function reopenConverges(rPath: string, wPath: string, journal: string, txid: bigint): Promise<void> {
  const again = await ReplicaStore.open(nodeRuntime, rPath);
  try {
    assert.equal(again.position!.txid, txid);
    assert.ok(again.checkDatabase().ok, 'the database is at the position the replica claims');
    assert.equal(fileHash(rPath), sha256(await replayBytes(wPath, { txid })));
    await again.appendBatch(items(snapshotsAfter(journal, txid).snaps));
    assert.equal(fileHash(rPath), fileHash(wPath));
  } finally {
    again.close();
  }
}

test('a crash inside the batch append (a torn tail): the replica reopens before the batch and takes it again', async () => {
  // The second snapshot's write is short: the first is whole, half of the second follows it.
  const plan: FaultPlan = { label: 'journal.write', nth: 2, kind: 'short' };
  const { w, wPath, rPath, journal, store, at } = await failBatchAt(tempDir(), plan);
  store.close();
  try {
    // The journal is cut back to the start of the batch (its fsync never finished).
    await reopenConverges(rPath, wPath, journal, at.txid);
  } finally {
    w.close();
  }
});

test('a power loss inside the batch append (damage followed by a whole snapshot): the journal is cut back to the batch', async () => {
  // The marker is set and nothing of the batch reached the journal; then the bytes a power loss leaves.
  const plan: FaultPlan = { label: 'journal.write', nth: 1, kind: 'EIO' };
  const { w, wPath, rPath, journal, store, snaps, at } = await failBatchAt(tempDir(), plan);
  store.close();
  const j = `${rPath}-mycelite/journal`;
  const damaged = snaps[0]!.bytes.slice();
  damaged.fill(0, 80, damaged.length - 8);
  fs.appendFileSync(j, damaged);
  for (const s of snaps.slice(1)) fs.appendFileSync(j, s.bytes);
  try {
    await reopenConverges(rPath, wPath, journal, at.txid);
  } finally {
    w.close();
  }
});

test('a crash after the batch append, before or inside the apply: reopening applies the batch', async () => {
  // Every snapshot of the batch is written; its one fsync fails, before the apply starts.
  const plan: FaultPlan = { label: 'journal.sync', nth: 1, kind: 'EIO' };
  const { w, wPath, rPath, journal, store } = await failBatchAt(tempDir(), plan);
  store.close();
  try {
    await reopenConverges(rPath, wPath, journal, w.position().txid);
  } finally {
    w.close();
  }
});

test('a crash after the batch committed, before its post step: reopening finishes it', async () => {
  // SQLite committed the batch; the post step's first write to the file (page 1's counter) fails.
  const plan: FaultPlan = { label: 'db.write', nth: 1, kind: 'EIO' };
  const { w, wPath, rPath, journal, store } = await failBatchAt(tempDir(), plan);
  store.close();
  try {
    await reopenConverges(rPath, wPath, journal, w.position().txid);
  } finally {
    w.close();
  }
});

test('a replica applying batches, killed with SIGKILL at random moments, converges to the writer', async (t) => {
  const { w, wPath, rPath, journal, store } = await setup(tempDir());
  store.close();
  const rnd = prng(77);
  let kills = 0;
  try {
    for (let round = 0; round < 8; round++) {
      work(w, rnd, 60);
      const child = spawn(process.execPath, [CHILD, rPath, journal, String(2 + Math.floor(rnd() * 12))], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let err = '';
      let out = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => {
        err += d;
      });
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        out += d;
      });
      const done = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
      // Once it applied its first batch, a random moment later (usually inside a later batch).
      const until = Date.now() + 10_000;
      while (!out.includes('txid') && child.exitCode === null && Date.now() < until)
        await new Promise((r) => setTimeout(r, 2));
      await new Promise((r) => setTimeout(r, Math.floor(rnd() * 40)));
      const killed = child.kill('SIGKILL');
      const code = await done;
      // Killed after it applied a batch and before it finished: somewhere inside the run of batches.
      if (killed && code === null && out.includes('txid')) kills++;
      assert.ok(code === 0 || code === null, `child failed: ${err}`);
      const again = await ReplicaStore.open(nodeRuntime, rPath);
      try {
        assert.ok(again.checkDatabase().ok, `round ${round}: the replica agrees with its journal`);
        const at = again.position!.txid;
        assert.equal(fileHash(rPath), sha256(await replayBytes(wPath, { txid: at })), `round ${round}`);
      } finally {
        again.close();
      }
    }
    await reopenConverges(rPath, wPath, journal, (await positionOf(rPath)).txid);
    assert.equal(nativeIntegrity(rPath), 'ok');
    t.diagnostic(`${kills} kills between batches or inside one`);
    assert.ok(kills > 0, 'some kills came while batches were being applied');
  } finally {
    w.close();
  }
});

async function positionOf(rPath: string) {
  const s = await ReplicaStore.open(nodeRuntime, rPath);
  const p = s.position!;
  s.close();
  return p;
}

test('the stream parser hands out each compressed body inflated (keepInflated), walking to the same runs', async () => {
  const { w, journal, store } = await setup(tempDir());
  store.close();
  try {
    const ins = w.prepare('INSERT INTO t(a, b) VALUES (?, ?)');
    w.transaction(() => {
      for (let i = 0; i < 200; i++) ins.run(i, 'abcdef'.repeat(1 + (i % 40)));
    })();
    // Up to the last snapshot: the live writer keeps zeros written ahead past it.
    const bytes = new Uint8Array(fs.readFileSync(journal)).subarray(0, journalEnd(journal));
    const plain = new StreamParser({ stream: true }).push(bytes);
    const kept = new StreamParser({ stream: true, keepInflated: true }).push(bytes);
    assert.equal(kept.length, plain.length);
    let compressed = 0;
    const runs = (b: Uint8Array, h: SnapshotHeader): string[] => {
      const out: string[] = [];
      walkPatches(memorySource(b), 0, h, (p, o, r) => out.push(`${p}:${o}:${sha256(r)}`));
      return out;
    };
    for (const [i, item] of kept.entries()) {
      const other = plain[i]!;
      if (item.kind !== 'snapshot' || other.kind !== 'snapshot') continue;
      assert.deepEqual(item.bytes, other.bytes);
      if ((item.header.flags & FLAG_COMPRESSED) === 0) {
        assert.equal(item.raw, undefined);
        continue;
      }
      compressed++;
      assert.ok(item.raw);
      assert.equal(item.raw.header.flags & FLAG_COMPRESSED, 0);
      assert.deepEqual(runs(item.raw.bytes, item.raw.header), runs(item.bytes, item.header));
    }
    assert.ok(compressed > 0, 'the journal has compressed snapshots');
  } finally {
    w.close();
  }
});
