/** JournalWriter details that the capture and replica rely on. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import type { FileHandle, OpenOptions } from '../src/files/file-system.js';
import { JournalReader, loadHash, memorySource, SnapshotBodyWriter } from '../src/format/index.js';
import { JournalWriter } from '../src/journal/journal-writer.js';
import { nodeRuntime, open } from '../src/node/index.js';
import { NodeFileSystem } from '../src/node/node-fs.js';
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

test('a small snapshot goes to the file in one write, a large one streams, a cancelled one writes nothing; all read back', async () => {
  await loadHash();
  const writes: number[] = [];
  class Counting extends NodeFileSystem {
    override open(p: string, options?: OpenOptions): FileHandle {
      const h = super.open(p, options);
      const write = h.write.bind(h);
      h.write = (b, offset) => {
        writes.push(b.length);
        write(b, offset);
      };
      return h;
    }
  }
  const file = path.join(tempDir(), 'journal');
  const j = JournalWriter.open(new Counting(), file);
  const append = (pages: number): number => {
    writes.length = 0;
    const a = j.begin();
    const body = new SnapshotBodyWriter(4096, a.sink);
    for (let p = 1; p <= pages; p++) body.addFullPage(p, new Uint8Array(4096).fill(p));
    body.finish();
    const s = a.finish(
      { pageSize: 4096, dbPages: pages, flags: 0, postChecksum: 0n, commitTag: 0 },
      pages,
      true,
    );
    j.confirm();
    assert.equal(s.length, 64 + body.length + 8);
    return s.length;
  };
  try {
    const small = append(2);
    assert.deepEqual(writes, [small], 'header, body and trailer in one write');
    append(40); // 160 KiB of body: streamed as it comes, then trailer and header
    assert.ok(writes.length >= 3, `the large body streamed (${writes.length} writes)`);
    const size = fs.statSync(file).size;
    writes.length = 0;
    const a = j.begin();
    a.sink(new Uint8Array(100));
    a.cancel();
    assert.deepEqual(writes, [], 'a cancelled small snapshot never reached the file');
    assert.equal(fs.statSync(file).size, size);
  } finally {
    j.close();
  }
  const r = new JournalReader(memorySource(fs.readFileSync(file)), { verify: true });
  assert.deepEqual(
    [...r.snapshots()].map((s) => [s.txid, s.dbPages]),
    [
      [1n, 2],
      [2n, 40],
    ],
  );
  assert.equal(r.tornBytes, 0);
});
