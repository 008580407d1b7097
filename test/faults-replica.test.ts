// Crash windows of a replica that a SIGKILL hits only rarely, reproduced exactly: the files are left as a
// crash at that point leaves them, then the replica is reopened (recovery) and must be at a committed state
// of the writer that equals its own position. Found by the replication torture (npm run torture).
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { JournalWriter } from '../src/journal/journal-writer.js';
import { nodeRuntime, open } from '../src/node/index.js';
import { ReplicaStore } from '../src/replica/replica.js';
import { snapshotsAfter } from './helpers/replica.js';
import { cleanupTempDirs, fileHash, replayBytes, sha256, tempDir } from './helpers/util.js';

after(() => cleanupTempDirs());

test('a crash between the journal append and the inflight marker: reopening applies the snapshot (was: position claimed, database one behind)', async () => {
  const dir = tempDir();
  const wPath = path.join(dir, 'w.db');
  const rPath = path.join(dir, 'r.db');
  const w = await open(wPath);
  w.exec('create table t(a, b); insert into t values (1, randomblob(3000))');
  w.exec('insert into t values (2, randomblob(100))');
  // The replica takes every snapshot but the last.
  const journal = `${wPath}-mycelite/journal`;
  const store = await ReplicaStore.open(nodeRuntime, rPath);
  const { file, snaps } = snapshotsAfter(journal, 0n);
  for (const [i, s] of snaps.entries()) {
    if (i === 0) await store.reset(file, s.bytes, s.header);
    else await store.append(s.bytes, s.header);
  }
  w.exec('update t set b = randomblob(200) where a = 1');
  const last = snapshotsAfter(journal, w.position().txid - 1n).snaps[0]!;
  store.close();
  // The crash: the snapshot reached the replica's journal (fsynced), the marker and the database did not.
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
