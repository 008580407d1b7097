// Crash windows of a replica that a SIGKILL hits only rarely, reproduced exactly: the files are left as a
// crash at that point leaves them, then the replica is reopened (recovery) and must be at a committed state
// of the writer that equals its own position. Found by the replication torture (npm run torture).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { type FaultPlan, FaultyFileSystem } from '../src/files/faulty-fs.js';
import type { Runtime } from '../src/files/file-system.js';
import { nodeRuntime, open } from '../src/node/index.js';
import { NodeFileSystem } from '../src/node/node-fs.js';
import { ReplicaStore } from '../src/replica/replica.js';
import { type Encoded, snapshotsAfter } from './helpers/replica.js';
import { cleanupTempDirs, fileHash, replayBytes, sha256, tempDir } from './helpers/util.js';

after(() => cleanupTempDirs());

/**
 * The reset's crash window below needs a marker of another history with our txid and change counter,
 * which no single failed operation of a real reset leaves: it is still set through the private method.
 */
interface Internals {
  setMarker(step: unknown): void;
}

// The append's crash windows are reached through the labelled fault file system: the replica's own file
// operations fail at one label (src/files/faulty-fs.ts), leaving its files as a crash there would.
const faulty = new FaultyFileSystem(new NodeFileSystem());
const faultyRuntime: Runtime = { ...nodeRuntime, fs: faulty };

/** Appends `last` to the replica with `plan` armed: the append fails there, after its inflight marker. */
async function failAppendAt(store: ReplicaStore, last: Encoded, plan: FaultPlan): Promise<void> {
  const fired = faulty.fired.length;
  faulty.arm(plan);
  try {
    await assert.rejects(store.append(last.bytes, last.header));
  } finally {
    faulty.disarm();
  }
  assert.deepEqual(faulty.fired.slice(fired), [plan], `the fault at ${plan.label} fired`);
}

/** A writer with three snapshots and a replica holding the first two; returns the third. */
async function setup(dir: string, rt: Runtime = nodeRuntime) {
  const wPath = path.join(dir, 'w.db');
  const rPath = path.join(dir, 'r.db');
  const w = await open(wPath);
  w.exec('create table t(a, b); insert into t values (1, randomblob(3000))');
  w.exec('insert into t values (2, randomblob(100))');
  const journal = `${wPath}-mycelite/journal`;
  const store = await ReplicaStore.open(rt, rPath);
  const { file, snaps } = snapshotsAfter(journal, 0n);
  for (const [i, s] of snaps.entries()) {
    if (i === 0) await store.reset(file, s.bytes, s.header);
    else await store.append(s.bytes, s.header);
  }
  w.exec('update t set b = randomblob(200) where a = 1');
  const last = snapshotsAfter(journal, w.position().txid - 1n).snaps[0]!;
  return { w, wPath, rPath, store, last };
}

test('a crash after the inflight marker, inside the journal append: the replica reopens at the snapshot before, and takes it again', async () => {
  const { w, wPath, rPath, store, last } = await setup(tempDir(), faultyRuntime);
  // Half the snapshot reached the journal (a short write): a torn tail.
  await failAppendAt(store, last, { label: 'journal.write', nth: 1, kind: 'short' });
  store.close();
  const again = await ReplicaStore.open(nodeRuntime, rPath);
  try {
    assert.equal(again.position!.txid, last.header.txid - 1n);
    assert.ok(again.checkDatabase().ok, 'the database is at the position the replica claims');
    assert.equal(fileHash(rPath), sha256(await replayBytes(wPath, { txid: last.header.txid - 1n })));
    await again.append(last.bytes, last.header);
    assert.equal(fileHash(rPath), fileHash(wPath));
  } finally {
    again.close();
    w.close();
  }
});

test('a crash after the journal append, before the apply: reopening applies the snapshot', async () => {
  const { w, wPath, rPath, store, last } = await setup(tempDir(), faultyRuntime);
  // The whole snapshot is in the journal; its fsync fails, before the apply.
  await failAppendAt(store, last, { label: 'journal.sync', nth: 1, kind: 'EIO' });
  store.close();
  const again = await ReplicaStore.open(nodeRuntime, rPath);
  try {
    const at = again.position!;
    assert.equal(at.txid, w.position().txid);
    assert.ok(again.checkDatabase().ok, 'the database is at the position the replica claims');
    assert.equal(fileHash(rPath), sha256(await replayBytes(wPath, { txid: at.txid })));
    assert.equal(fileHash(rPath), fileHash(wPath));
  } finally {
    again.close();
    w.close();
  }
});

test('a crash inside reset() before the new journal is renamed in: a marker of the other history with our txid does not cut the database', async () => {
  const { w, rPath, store } = await setup(tempDir());
  const at = store.position!;
  const before = fileHash(rPath);
  const size = fs.statSync(rPath).size;
  const page1 = fs.readFileSync(rPath).subarray(0, 100);
  const counter = new Uint8Array(12);
  counter.set(page1.subarray(24, 28), 0);
  counter.set(page1.subarray(92, 100), 4);
  // The new history's image has our txid and change counter, but a smaller database: its marker is set,
  // the old journal is still in place (the crash came before the rename).
  const internals = store as unknown as Internals;
  internals.setMarker({ txid: at.txid, pageSize: 4096, dbPages: 1, counter });
  store.close();
  const again = await ReplicaStore.open(nodeRuntime, rPath);
  try {
    assert.equal(again.position!.txid, at.txid);
    assert.equal(fs.statSync(rPath).size, size, 'the database keeps its size');
    assert.equal(fileHash(rPath), before);
    assert.ok(again.checkDatabase().ok, 'the database is at the position the replica claims');
  } finally {
    again.close();
    w.close();
  }
});
