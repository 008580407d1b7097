// Crash windows of a replica that a SIGKILL hits only rarely, reproduced exactly: the files are left as a
// crash at that point leaves them, then the replica is reopened (recovery) and must be at a committed state
// of the writer that equals its own position. Found by the replication torture (npm run torture).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { JournalWriter } from '../src/journal/journal-writer.js';
import { nodeRuntime, open } from '../src/node/index.js';
import { ReplicaStore } from '../src/replica/replica.js';
import { snapshotsAfter } from './helpers/replica.js';
import { cleanupTempDirs, fileHash, replayBytes, sha256, tempDir } from './helpers/util.js';

after(() => cleanupTempDirs());

/** The replica's private crash-window steps, reached for exactly (as a crash would leave them). */
interface Internals {
  setMarker(step: unknown): void;
  file: { plan(bytes: Uint8Array, h: unknown): unknown };
}

/** A writer with three snapshots and a replica holding the first two; returns the third. */
async function setup(dir: string) {
  const wPath = path.join(dir, 'w.db');
  const rPath = path.join(dir, 'r.db');
  const w = await open(wPath);
  w.exec('create table t(a, b); insert into t values (1, randomblob(3000))');
  w.exec('insert into t values (2, randomblob(100))');
  const journal = `${wPath}-mycelite/journal`;
  const store = await ReplicaStore.open(nodeRuntime, rPath);
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
  const { w, wPath, rPath, store, last } = await setup(tempDir());
  const internals = store as unknown as Internals;
  internals.setMarker(internals.file.plan(last.bytes, last.header));
  store.close();
  // Half the snapshot reached the journal: a torn tail.
  fs.appendFileSync(`${rPath}-mycelite/journal`, last.bytes.subarray(0, last.bytes.length >> 1));
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
  const { w, wPath, rPath, store, last } = await setup(tempDir());
  const internals = store as unknown as Internals;
  internals.setMarker(internals.file.plan(last.bytes, last.header));
  store.close();
  const j = JournalWriter.open(nodeRuntime.fs, `${rPath}-mycelite/journal`);
  j.appendEncoded(last.bytes, last.header, true);
  j.close();
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
