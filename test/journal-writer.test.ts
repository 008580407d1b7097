/** JournalWriter details that the capture and replica rely on. */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { JournalWriter } from '../src/journal/journal-writer.js';
import { nodeRuntime, open } from '../src/node/index.js';
import { snapshotsAfter } from './helpers/replica.js';
import { cleanupTempDirs, tempDir } from './helpers/util.js';

after(cleanupTempDirs);

test('dropLast after an append gives back the snapshot before as the last one (it was forgotten)', async () => {
  const dir = tempDir();
  const w = await open(path.join(dir, 'w.db'));
  w.exec('create table t(a); insert into t values (1)');
  w.exec('insert into t values (2)');
  w.close();
  const { file, snaps } = snapshotsAfter(path.join(dir, 'w.db-mycelite', 'journal'), 0n);
  const copy = path.join(dir, 'copy');
  JournalWriter.create(nodeRuntime.fs, copy, { journalId: file.journalId, baseTxid: 0n, baseChecksum: 0n });
  const j = JournalWriter.open(nodeRuntime.fs, copy);
  try {
    for (const s of snaps) j.appendEncoded(s.bytes, s.header, true);
    const lastTwo = snaps.slice(-2);
    const dropped = j.last!;
    assert.equal(dropped.txid, lastTwo[1]!.header.txid);
    j.dropLast(dropped);
    assert.equal(j.last?.txid, lastTwo[0]!.header.txid, 'the snapshot before is the last one again');
    assert.equal(j.position.txid, lastTwo[0]!.header.txid);
    assert.equal(j.position.checksum, lastTwo[0]!.header.postChecksum);
  } finally {
    j.close();
  }
});
