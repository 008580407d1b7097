// The journal format is a promise to every reader, not only decode(encode(x)) = x: a v1 journal written
// once and checked in (test/fixtures/journal-v1/journal) keeps its sha256, decodes to the fields written
// down beside it (expected.json), field for field where docs/FORMAT.md puts them (read here with a
// DataView at the documented offsets, not with our decoder), and replays to the database it was.
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  checkSnapshotChecksum,
  FLAG_COMPRESSED,
  hex64,
  JournalReader,
  loadHash,
  memorySource,
  toHex,
  walkPatches,
  xxh64,
} from '../src/format/index.js';
import { openReadonly } from '../src/node/index.js';
import { NodeFileSystem } from '../src/node/node-fs.js';
import { replay } from '../src/restore/replay.js';
import { cleanupTempDirs, tempDir } from './helpers/util.js';

after(() => cleanupTempDirs());

// Compiled to dist/test/; fixtures stay in test/fixtures/ (not compiled).
const DIR = fileURLToPath(new URL('../../test/fixtures/journal-v1/', import.meta.url));
const bytes = new Uint8Array(fs.readFileSync(path.join(DIR, 'journal')));

interface ExpectedSnapshot {
  offset: number;
  length: number;
  txid: string;
  timestamp: number;
  pageSize: number;
  dbPages: number;
  patchCount: number;
  flags: number;
  preChecksum: string;
  postChecksum: string;
  commitTag: number;
  runs: [number, number, number][];
  runBytesSha256: string;
}

const expected = JSON.parse(fs.readFileSync(path.join(DIR, 'expected.json'), 'utf8')) as {
  sha256: string;
  size: number;
  header: { version: number; journalId: string; createdAt: number; baseTxid: string; baseChecksum: string };
  snapshots: ExpectedSnapshot[];
  database: { sha256: string; size: number; rows: { budget: unknown[][]; note: unknown[][] } };
};

const sha256 = (b: Uint8Array): string => crypto.createHash('sha256').update(b).digest('hex');

before(() => loadHash());

test('the checked-in v1 journal keeps its bytes (sha256)', () => {
  assert.equal(bytes.length, expected.size);
  assert.equal(sha256(bytes), expected.sha256);
});

test('its bytes are where docs/FORMAT.md puts each field (read with a DataView, not our decoder)', () => {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const ascii = (at: number, n: number): string => new TextDecoder().decode(bytes.subarray(at, at + n));
  // File header (64 bytes), little-endian.
  assert.equal(ascii(0, 8), 'MYCELITE');
  assert.equal(v.getUint16(8, true), 1, 'version');
  assert.equal(v.getUint16(10, true), 64, 'headerSize');
  assert.equal(v.getUint32(12, true), 0, 'flags');
  assert.equal(toHex(bytes.subarray(16, 32)), expected.header.journalId);
  assert.equal(Number(v.getBigInt64(32, true)), expected.header.createdAt);
  assert.equal(v.getBigUint64(40, true).toString(), expected.header.baseTxid);
  assert.equal(hex64(v.getBigUint64(48, true)), expected.header.baseChecksum);
  assert.equal(v.getBigUint64(56, true), xxh64(bytes.subarray(0, 56)), 'headerChecksum: XXH64 of bytes 0-55');
  // Snapshots one after the other, each: a 64-byte header, the body, an 8-byte trailer.
  let at = 64;
  for (const s of expected.snapshots) {
    assert.equal(at, s.offset);
    assert.equal(ascii(at, 4), 'SNAP');
    assert.equal(v.getUint32(at + 4, true), s.length, 'length');
    assert.equal(v.getBigUint64(at + 8, true).toString(), s.txid);
    assert.equal(Number(v.getBigInt64(at + 16, true)), s.timestamp);
    assert.equal(v.getUint32(at + 24, true), s.pageSize);
    assert.equal(v.getUint32(at + 28, true), s.dbPages);
    assert.equal(v.getUint32(at + 32, true), s.patchCount);
    assert.equal(v.getUint32(at + 36, true), s.flags);
    assert.equal(hex64(v.getBigUint64(at + 40, true)), s.preChecksum);
    assert.equal(hex64(v.getBigUint64(at + 48, true)), s.postChecksum);
    assert.equal(v.getUint32(at + 56, true), s.commitTag);
    const check = Number(xxh64(bytes.subarray(at, at + 60)) & 0xffffffffn);
    assert.equal(v.getUint32(at + 60, true), check, 'headerCheck: low 32 bits of XXH64 of bytes 0-59');
    // Trailer: XXH64 of the body followed by the header.
    const body = bytes.subarray(at + 64, at + s.length - 8);
    const header = bytes.subarray(at, at + 64);
    const trailer = v.getBigUint64(at + s.length - 8, true);
    const joined = new Uint8Array(body.length + 64);
    joined.set(body, 0);
    joined.set(header, body.length);
    assert.equal(trailer, xxh64(joined), `trailer of txid ${s.txid}`);
    at += s.length;
  }
  assert.equal(at, bytes.length, 'nothing follows the last snapshot');
  assert.ok(
    expected.snapshots.some((s) => s.flags & FLAG_COMPRESSED) &&
      expected.snapshots.some((s) => !(s.flags & FLAG_COMPRESSED)),
    'the fixture holds compressed and plain bodies',
  );
});

test('JournalReader and walkPatches decode it to the fields and runs written down beside it', () => {
  const reader = new JournalReader(memorySource(bytes));
  const h = reader.header;
  assert.deepEqual(
    {
      version: h.version,
      journalId: toHex(h.journalId),
      createdAt: h.createdAt,
      baseTxid: h.baseTxid.toString(),
      baseChecksum: hex64(h.baseChecksum),
    },
    expected.header,
  );
  const got: ExpectedSnapshot[] = [];
  for (const s of reader.snapshots()) {
    assert.ok(checkSnapshotChecksum(memorySource(bytes), s.offset, s), `checksum of txid ${s.txid}`);
    const runs: [number, number, number][] = [];
    const hash = crypto.createHash('sha256');
    walkPatches(memorySource(bytes), s.offset, s, (pgno, offset, run) => {
      runs.push([pgno, offset, run.length]);
      hash.update(run);
    });
    got.push({
      offset: s.offset,
      length: s.length,
      txid: s.txid.toString(),
      timestamp: s.timestamp,
      pageSize: s.pageSize,
      dbPages: s.dbPages,
      patchCount: s.patchCount,
      flags: s.flags,
      preChecksum: hex64(s.preChecksum),
      postChecksum: hex64(s.postChecksum),
      commitTag: s.commitTag,
      runs,
      runBytesSha256: hash.digest('hex'),
    });
  }
  assert.deepEqual(got, expected.snapshots);
  assert.equal(reader.end, bytes.length);
});

test('it replays to the database it was: its sha256, and its rows read by SQLite', async () => {
  const file = path.join(tempDir('journal-golden-'), 'replayed.db');
  const fsys = new NodeFileSystem();
  const out = fsys.open(file, { create: true });
  try {
    replay(memorySource(bytes), out);
  } finally {
    out.close();
  }
  const db = new Uint8Array(fs.readFileSync(file));
  assert.equal(db.length, expected.database.size);
  assert.equal(sha256(db), expected.database.sha256);
  const conn = await openReadonly(file);
  try {
    assert.deepEqual(
      conn.prepare('select id, label, cents from budget order by id').raw().all(),
      expected.database.rows.budget,
    );
    assert.deepEqual(
      conn.prepare('select n, body from note order by n').raw().all(),
      expected.database.rows.note,
    );
  } finally {
    conn.close();
  }
});
