// What `mycelite push --watch` pushes: only snapshots that are certainly committed. The last snapshot of
// a journal is held back while a writer holds SQLite's EXCLUSIVE lock (it may be tentative) and while a
// hot rollback journal carries its commitTag (a crash inside its transaction). And the journal index
// finds batches without rescanning.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { JournalIndex } from '../src/client/journal-index.js';
import { CommittedTail } from '../src/client/journal-tail.js';
import { JournalReader, loadHash, memorySource, type SnapshotInfo } from '../src/format/index.js';
import { nodeRuntime, open } from '../src/node/index.js';
import { cleanupTempDirs, journalOf, tempDir } from './helpers/util.js';

after(() => cleanupTempDirs());

async function makeDb(rows: number): Promise<{ file: string; snapshots: SnapshotInfo[] }> {
  const file = path.join(tempDir(), 'tail.db');
  const db = await open(file);
  db.exec('create table t(a)');
  for (let i = 0; i < rows; i++) db.exec(`insert into t values (randomblob(${100 + i * 10}))`);
  db.close();
  const bytes = fs.readFileSync(journalOf(file));
  return { file, snapshots: [...new JournalReader(memorySource(bytes)).snapshots()] };
}

test('the journal index: positions, containment, batches of at most maxBytes (always one)', async () => {
  await loadHash();
  const { file, snapshots } = await makeDb(30);
  const bytes = fs.readFileSync(journalOf(file));
  const index = JournalIndex.scan(memorySource(bytes));
  assert.equal(index.lastTxid, 31n);
  assert.equal(index.end, bytes.length);
  const s10 = snapshots[9]!;
  assert.ok(index.contains({ txid: 10n, checksum: s10.postChecksum }));
  assert.ok(!index.contains({ txid: 10n, checksum: s10.postChecksum ^ 1n }));
  assert.ok(index.contains({ txid: 0n, checksum: 0n }));
  assert.ok(!index.contains({ txid: 32n, checksum: 0n }));
  // All of it at once.
  const all = index.rangeAfter(0n, 1 << 30);
  assert.deepEqual([all.start, all.end, all.count, all.last.txid], [64, bytes.length, 31, 31n]);
  // Small batches: each within the limit unless it is a single snapshot, and they tile the journal.
  const limit = 1500;
  let after = 0n;
  let at = 64;
  while (after < 31n) {
    const r = index.rangeAfter(after, limit);
    assert.equal(r.start, at);
    assert.ok(r.count >= 1);
    assert.ok(r.count === 1 || r.end - r.start <= limit, `batch of ${r.count} is ${r.end - r.start} bytes`);
    assert.equal(r.last.checksum, snapshots[Number(r.last.txid) - 1]!.postChecksum);
    at = r.end;
    after = r.last.txid;
  }
  assert.equal(at, bytes.length);
  assert.throws(() => index.rangeAfter(31n, limit), /nothing after txid 31/);
  assert.throws(() => index.add({ txid: 33n, offset: at, length: 100, postChecksum: 0n }), /does not follow/);
});

test('the last snapshot waits while a writer holds EXCLUSIVE, and is never pushed under a hot journal', async () => {
  await loadHash();
  const { file, snapshots } = await makeDb(5);
  const last = snapshots.at(-1)!;
  assert.notEqual(last.commitTag, 0, 'a DELETE-mode commit carries its rollback journal nonce');
  const tail = new CommittedTail(nodeRuntime.fs, file, journalOf(file));
  try {
    // A writer mid-commit: EXCLUSIVE on the database file (another file description: OFD locks conflict).
    const writer = nodeRuntime.fs.open(file, { sqliteLocks: true });
    assert.ok(writer.lock!(1) && writer.lock!(2) && writer.lock!(4));
    let r = tail.poll();
    assert.equal(r.busy, true);
    assert.deepEqual(
      r.snapshots.map((s) => s.txid),
      snapshots.slice(0, -1).map((s) => s.txid),
      'all but the last are certainly committed',
    );
    for (const s of r.snapshots) tail.index.add(s);
    writer.unlock!(0);
    writer.close();

    // A crash inside the last transaction: its hot rollback journal carries the snapshot's commitTag.
    const hot = new Uint8Array(512);
    hot.set([0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7]);
    new DataView(hot.buffer).setUint32(12, last.commitTag, false);
    fs.writeFileSync(`${file}-journal`, hot);
    r = tail.poll();
    assert.deepEqual(r.snapshots, [], 'the rolled-back snapshot is not pushed');
    assert.equal(r.busy, false);
    // A hot journal of another transaction (another nonce) does not hold it back.
    new DataView(hot.buffer).setUint32(12, (last.commitTag ^ 0x5a5a5a5a) >>> 0, false);
    fs.writeFileSync(`${file}-journal`, hot);
    r = tail.poll();
    assert.deepEqual(
      r.snapshots.map((s) => s.txid),
      [last.txid],
    );
    fs.rmSync(`${file}-journal`);
  } finally {
    tail.close();
  }
});
