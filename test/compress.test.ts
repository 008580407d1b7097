import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import {
  BodyCompressor,
  compressBody,
  encodeSnapshotHeader,
  FLAG_COMPRESSED,
  JournalFormatError,
  JournalReader,
  loadHash,
  memorySource,
  SNAPSHOT_HEADER_SIZE,
  SnapshotBodyWriter,
  walkPatches,
} from '../src/format/index.js';
import { open } from '../src/node/index.js';
import { assertReplay, cleanupTempDirs, journalOf, tempDir } from './helpers/util.js';

after(cleanupTempDirs);

test('a writer stores compressible bodies compressed, and replay still equals the database', async () => {
  await loadHash();
  const file = path.join(tempDir(), 'c.db');
  const db = await open(file);
  db.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)');
  for (let i = 0; i < 20; i++) {
    db.exec('BEGIN');
    const ins = db.prepare('INSERT INTO t(v) VALUES (?)');
    for (let j = 0; j < 50; j++) ins.run(`row ${i} ${j} `.repeat(20));
    db.exec('COMMIT');
  }
  db.exec('UPDATE t SET v = upper(v) WHERE id % 3 = 0');
  db.close();
  const bytes = new Uint8Array(fs.readFileSync(journalOf(file)));
  const reader = new JournalReader(memorySource(bytes), { verify: true });
  let compressed = 0;
  let all = 0;
  for (const s of reader.snapshots()) {
    all++;
    if (s.flags & FLAG_COMPRESSED) compressed++;
  }
  assert.ok(all >= 22, `expected at least 22 snapshots, found ${all}`);
  assert.ok(compressed >= all - 2, `only ${compressed} of ${all} snapshots are compressed`);
  assert.ok(
    bytes.length < fs.statSync(file).size,
    'repetitive rows: the journal should be smaller than the db',
  );
  await assertReplay(file, 'compressed journal');
});

test('BodyCompressor passes bodies past its limit through uncompressed, byte for byte', () => {
  const out: Uint8Array[] = [];
  const packer = new BodyCompressor((c) => out.push(c), 1000);
  const body = new SnapshotBodyWriter(512, packer.sink);
  for (let p = 1; p <= 8; p++) body.addFullPage(p, new Uint8Array(512).fill(p));
  body.finish();
  assert.equal(packer.finish(), false);
  const joined = Buffer.concat(out);
  assert.equal(joined.length, body.length);
  assert.equal(joined[6], 1);

  const small: Uint8Array[] = [];
  const p2 = new BodyCompressor((c) => small.push(c), 1 << 20);
  const b2 = new SnapshotBodyWriter(512, p2.sink);
  b2.addFullPage(1, new Uint8Array(512).fill(7));
  b2.finish();
  assert.equal(p2.finish(), true);
  assert.ok(Buffer.concat(small).length < b2.length);
});

test('a compressed body that does not inflate, or inflates to bad patches, is a JournalFormatError', async () => {
  await loadHash();
  const raw: Uint8Array[] = [];
  const w = new SnapshotBodyWriter(512, (c) => raw.push(c));
  w.addFullPage(1, new Uint8Array(512).fill(3));
  w.finish();
  const packed = compressBody(Buffer.concat(raw))!;
  const snapshot = (body: Uint8Array, patchCount: number): Uint8Array => {
    const header = encodeSnapshotHeader({
      length: SNAPSHOT_HEADER_SIZE + body.length + 8,
      txid: 1n,
      timestamp: 0,
      pageSize: 512,
      dbPages: 2,
      patchCount,
      flags: FLAG_COMPRESSED,
      preChecksum: 0n,
      postChecksum: 0n,
      commitTag: 0,
    });
    return Buffer.concat([header, body, new Uint8Array(8)]);
  };
  const good = snapshot(packed, 1);
  const seen: number[] = [];
  const h = { ...decodeOk(good) };
  walkPatches(memorySource(good), 0, h, (pgno, offset, bytes) =>
    seen.push(pgno, offset, bytes.length, bytes[0]!),
  );
  assert.deepEqual(seen, [1, 0, 512, 3]);

  const twoPatches = snapshot(packed, 2);
  assert.throws(
    () => walkPatches(memorySource(twoPatches), 0, decodeOk(twoPatches)),
    (e) => {
      return e instanceof JournalFormatError && /inflated body/.test(e.message);
    },
  );
  const garbage = snapshot(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x00, 0x13]), 1);
  assert.throws(() => walkPatches(memorySource(garbage), 0, decodeOk(garbage)), JournalFormatError);
});

import { decodeSnapshotHeader, type SnapshotHeader } from '../src/format/index.js';

function decodeOk(bytes: Uint8Array): SnapshotHeader {
  const h = decodeSnapshotHeader(bytes.subarray(0, SNAPSHOT_HEADER_SIZE));
  assert.ok(h && typeof h !== 'string', `header does not decode: ${String(h)}`);
  return h;
}
