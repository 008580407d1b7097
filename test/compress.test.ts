import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import {
  BODY_CODEC_FLAGS,
  BodyCompressor,
  compressBody,
  encodeSnapshotHeader,
  FLAG_COMPRESSED,
  FLAG_ZSTD,
  inflateBody,
  JournalFormatError,
  JournalReader,
  loadHash,
  memorySource,
  SNAPSHOT_HEADER_SIZE,
  SnapshotBodyWriter,
  useKeptDeflate,
  useZstd,
  walkPatches,
  xxh64,
  zstdCodec,
  zstdFrameContentSize,
} from '../src/format/index.js';
import { open, openAt } from '../src/node/index.js';
import { prng } from './helpers/prng.js';
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
  assert.equal(packer.finish(), 0);
  const joined = Buffer.concat(out);
  assert.equal(joined.length, body.length);
  assert.equal(joined[6], 1);

  const small: Uint8Array[] = [];
  const p2 = new BodyCompressor((c) => small.push(c), 1 << 20);
  const b2 = new SnapshotBodyWriter(512, p2.sink);
  b2.addFullPage(1, new Uint8Array(512).fill(7));
  b2.finish();
  assert.equal(p2.finish() & FLAG_COMPRESSED, FLAG_COMPRESSED);
  assert.ok(Buffer.concat(small).length < b2.length);
});

test('a body past the compress limit streams through one reused chunk when the sink copies, and the bytes are the same', () => {
  // 600 pages of 8 KiB (about 4.7 MiB, over 18 body chunks) with a 1 MiB limit: held, released, passed.
  const pages = Array.from({ length: 600 }, (_, i) => {
    const p = new Uint8Array(8192);
    for (let j = 0; j < p.length; j += 61) p[j] = (i * 7 + j) & 0xff;
    return p;
  });
  const build = (outCopies: boolean): { bytes: Buffer; chunks: Set<ArrayBufferLike> } => {
    const out: Uint8Array[] = [];
    const chunks = new Set<ArrayBufferLike>();
    const packer = new BodyCompressor(
      (c) => {
        chunks.add(c.buffer);
        out.push(outCopies ? c.slice() : c);
      },
      1 << 20,
      outCopies,
    );
    const body = new SnapshotBodyWriter(8192, packer.sink);
    for (const [i, p] of pages.entries()) body.addFullPage(i + 1, p);
    body.finish();
    assert.equal(packer.finish(), 0, 'stored as it is: past the limit');
    return { bytes: Buffer.concat(out), chunks };
  };
  const kept = build(false);
  const copied = build(true);
  assert.ok(kept.bytes.equals(copied.bytes), 'the same body either way');
  assert.ok(kept.chunks.size > 18, `a new chunk each time when the sink keeps them (${kept.chunks.size})`);
  // The chunks held up to the limit (1 MiB: 5 of 256 KiB) are new; every later one reuses the last.
  assert.ok(copied.chunks.size <= 6, `chunks reused when the sink copies (${copied.chunks.size} made)`);
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

test('a tiny compressed body that inflates past what its header allows is refused before inflating it all', async () => {
  await loadHash();
  // 64 MiB of zeros deflates to ~64 KiB; the header claims one 512-byte page (at most ~2.5 KiB of body).
  const bomb = compressBody(new Uint8Array(64 * 1024 * 1024))!;
  assert.ok(bomb.length < 1024 * 1024);
  const header = encodeSnapshotHeader({
    length: SNAPSHOT_HEADER_SIZE + bomb.length + 8,
    txid: 1n,
    timestamp: 0,
    pageSize: 512,
    dbPages: 1,
    patchCount: 1,
    flags: FLAG_COMPRESSED,
    preChecksum: 0n,
    postChecksum: 0n,
    commitTag: 0,
  });
  const snap = Buffer.concat([header, bomb, new Uint8Array(8)]);
  assert.throws(
    () => walkPatches(memorySource(snap), 0, decodeOk(snap)),
    (e) => e instanceof JournalFormatError && /inflates past \d+ bytes/.test(e.message),
  );
  // A header claiming many pages still bounds inflation by what writers compress (16 MiB).
  const many = Buffer.from(snap);
  many.set(encodeSnapshotHeader({ ...decodeOk(snap), dbPages: 100_000, patchCount: 100_000 }), 0);
  assert.throws(
    () => walkPatches(memorySource(many), 0, decodeOk(many)),
    (e) => e instanceof JournalFormatError && /inflates past 16777216 bytes/.test(e.message),
  );
  assert.throws(() => inflateBody(bomb, 4096), /inflates past 4096 bytes/);
  assert.equal(inflateBody(bomb, 64 * 1024 * 1024).length, 64 * 1024 * 1024);
});

import { decodeSnapshotHeader, type SnapshotHeader } from '../src/format/index.js';

function decodeOk(bytes: Uint8Array): SnapshotHeader {
  const h = decodeSnapshotHeader(bytes.subarray(0, SNAPSHOT_HEADER_SIZE));
  assert.ok(h && typeof h !== 'string', `header does not decode: ${String(h)}`);
  return h;
}

test('journals without compressed bodies (older writers), or mixing both, replay and view the same', async () => {
  await loadHash();
  const file = path.join(tempDir(), 'mix.db');
  const db = await open(file);
  db.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)');
  for (let i = 0; i < 8; i++) db.prepare('INSERT INTO t(v) VALUES (?)').run(`value ${i} `.repeat(200));
  db.close();
  const journal = journalOf(file);
  const bytes = new Uint8Array(fs.readFileSync(journal));
  const rewrite = (keep: (txid: bigint) => boolean): Buffer => {
    const parts: Uint8Array[] = [bytes.subarray(0, 64)];
    let plain = 0;
    for (const s of new JournalReader(memorySource(bytes)).snapshots()) {
      const stored = bytes.subarray(s.offset + SNAPSHOT_HEADER_SIZE, s.offset + s.length - 8);
      if (!(s.flags & FLAG_COMPRESSED) || keep(s.txid)) {
        parts.push(bytes.subarray(s.offset, s.offset + s.length));
        continue;
      }
      plain++;
      const body = inflateBody(stored, 1 << 30, s.flags);
      const header = encodeSnapshotHeader({
        ...s,
        flags: s.flags & ~BODY_CODEC_FLAGS,
        length: body.length + 72,
      });
      const trailer = new Uint8Array(8);
      new DataView(trailer.buffer).setBigUint64(0, xxh64(Buffer.concat([body, header])), true);
      parts.push(header, body, trailer);
    }
    assert.ok(plain >= 4, `only ${plain} snapshots rewritten uncompressed`);
    return Buffer.concat(parts);
  };
  const ref = await openAt(file, 5n);
  const want = ref.prepare('SELECT * FROM t ORDER BY id').raw(true).all();
  ref.close();
  for (const keep of [() => false, (t: bigint) => t % 2n === 0n]) {
    fs.writeFileSync(journal, rewrite(keep));
    await assertReplay(file, 'rewritten journal');
    const view = await openAt(file, 5n);
    assert.deepEqual(view.prepare('SELECT * FROM t ORDER BY id').raw(true).all(), want);
    view.close();
  }
});

test("the addon's kept-stream deflateRaw makes node:zlib's bytes, null when not smaller, and the writer uses it", async () => {
  const require = createRequire(import.meta.url);
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
  const addon = (require('node-gyp-build') as (dir: string) => { deflateRaw?: KeptDeflate })(
    path.join(root, 'native'),
  );
  assert.ok(addon.deflateRaw, 'the addon has deflateRaw (rebuild native/ if this fails)');
  const deflateRaw = addon.deflateRaw;
  const want = (b: Uint8Array): Buffer | null => {
    const p = zlib.deflateRawSync(b, { level: 1, windowBits: 12, memLevel: 9 });
    return p.length < b.length ? p : null;
  };
  const rand = prng(18);
  const text = (n: number): Uint8Array =>
    Buffer.from(Array.from({ length: n }, () => Math.floor(rand() * 16).toString(16)).join(''));
  const noise = (n: number): Uint8Array => Uint8Array.from({ length: n }, () => Math.floor(rand() * 256));
  // Small and large, compressible and not, past the 1 MiB output the addon keeps, in an order where a
  // body that did not fit comes before ones that do (the stream is reset either way).
  const bodies = [
    text(540),
    noise(540),
    text(64),
    new Uint8Array(2),
    noise(3),
    text(56 * 1024),
    noise(70_000),
    text(3 * 1024 * 1024),
    new Uint8Array(2 * 1024 * 1024),
    text(540),
  ];
  for (const b of bodies) {
    const got = deflateRaw(b);
    const expected = want(b);
    if (expected === null) assert.equal(got, null, `${b.length} bytes: not smaller, so null`);
    else {
      assert.ok(got, `${b.length} bytes: compressed`);
      assert.ok(Buffer.from(got).equals(expected), `${b.length} bytes: node:zlib's bytes`);
      assert.ok(zlib.inflateRawSync(got).equals(Buffer.from(b)));
    }
  }
  assert.throws(() => deflateRaw('text' as unknown as Uint8Array), TypeError);

  // A writer compresses through it once the addon is loaded (its locks load it), where it writes DEFLATE.
  let calls = 0;
  const file = path.join(tempDir(), 'kept.db');
  const db = await open(file);
  const zstd = zstdCodec();
  useZstd(undefined);
  useKeptDeflate((b) => {
    calls++;
    return deflateRaw(b);
  });
  try {
    db.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)');
    for (let i = 0; i < 5; i++) db.prepare('INSERT INTO t(v) VALUES (?)').run(`value ${i} `.repeat(100));
  } finally {
    useKeptDeflate(deflateRaw);
    useZstd(zstd);
    db.close();
  }
  assert.ok(calls >= 5, `the writer compressed ${calls} bodies through it`);
  await assertReplay(file, 'kept-stream bodies');
});

type KeptDeflate = (body: Uint8Array) => Uint8Array | null;

test('zstd bodies (flags bit 4): a writer with zstd-napi writes them; they replay and view the same natively and with fzstd, and mixed with DEFLATE bodies of an older writer', async () => {
  await loadHash();
  const zstd = zstdCodec();
  assert.ok(zstd?.compress, 'zstd-napi is installed here (npm install): the writer compresses with zstd');
  const file = path.join(tempDir(), 'zstd.db');
  const rows = (db: Awaited<ReturnType<typeof open>>, from: number): void => {
    for (let i = from; i < from + 6; i++)
      db.prepare('INSERT INTO t(v) VALUES (?)').run(`row ${i} `.repeat(150));
  };
  // An older writer: DEFLATE bodies (txids 1-7).
  useZstd(undefined);
  try {
    const db = await open(file);
    db.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)');
    rows(db, 0);
    db.close();
  } finally {
    useZstd(zstd);
  }
  // This one: zstd bodies after them.
  const db = await open(file);
  rows(db, 6);
  db.exec('UPDATE t SET v = upper(v) WHERE id % 2 = 0');
  const want = db.prepare('SELECT * FROM t ORDER BY id').raw(true).all();
  db.close();
  const bytes = new Uint8Array(fs.readFileSync(journalOf(file)));
  const codecs = new Map<string, number>();
  for (const s of new JournalReader(memorySource(bytes), { verify: true }).snapshots()) {
    const codec = !(s.flags & FLAG_COMPRESSED) ? 'plain' : s.flags & FLAG_ZSTD ? 'zstd' : 'deflate';
    codecs.set(codec, (codecs.get(codec) ?? 0) + 1);
    if (s.txid <= 7n) assert.notEqual(codec, 'zstd', `txid ${s.txid}: written before zstd`);
  }
  assert.ok((codecs.get('zstd') ?? 0) >= 6 && (codecs.get('deflate') ?? 0) >= 5, JSON.stringify([...codecs]));
  // Natively (zstd-napi), then with fzstd (a browser, or Node without zstd-napi): the same states.
  const seen: unknown[][] = [];
  for (const codec of [zstd, undefined]) {
    useZstd(codec);
    try {
      await assertReplay(file, codec ? 'zstd-napi' : 'fzstd');
      const states: unknown[] = [];
      for (const at of [4n, 7n, 9n, 13n, 14n]) {
        const view = await openAt(file, at);
        states.push(view.prepare('SELECT * FROM t ORDER BY id').raw(true).all());
        view.close();
      }
      assert.deepEqual(states[states.length - 1], want);
      seen.push(states);
    } finally {
      useZstd(zstd);
    }
  }
  assert.deepEqual(seen[0], seen[1]);
});

test('a zstd body is one frame that declares its size, at most what its header allows: checked before decompressing', async () => {
  const zstd = zstdCodec()!;
  const body = Buffer.from('patch bytes '.repeat(500));
  const frame = zstd.compress!(body);
  assert.equal(zstdFrameContentSize(frame), body.length);
  for (const codec of [zstd, undefined]) {
    useZstd(codec);
    try {
      assert.ok(Buffer.from(inflateBody(frame, body.length, FLAG_COMPRESSED | FLAG_ZSTD)).equals(body));
      // More than the snapshot's header allows: refused from the frame header alone.
      assert.throws(() => inflateBody(frame, body.length - 1, FLAG_COMPRESSED | FLAG_ZSTD), /inflates past/);
      // Not one whole frame: trailing bytes, a second frame, a cut one, not zstd at all.
      const bad: [Uint8Array, RegExp][] = [
        [Buffer.concat([frame, Buffer.from([0])]), /bytes after the Zstandard frame/],
        [Buffer.concat([frame, frame]), /bytes after the Zstandard frame/],
        [frame.subarray(0, frame.length - 3), /truncated/],
        [compressBody(body)!, /not a Zstandard frame/],
      ];
      for (const [b, why] of bad) {
        assert.throws(() => inflateBody(b, 1 << 20, FLAG_COMPRESSED | FLAG_ZSTD), why);
      }
      // A frame that declares fewer bytes than it holds, or more: an error, never the declared size's
      // worth of cut or padded bytes (fzstd alone returns those for a single-segment frame).
      assert.equal(frame[4]! >> 6, 1, 'a 2-byte content size field (value - 256) at offset 5 or 6');
      const at = (frame[4]! & 0x20) !== 0 ? 5 : 6;
      for (const delta of [-100, 100]) {
        const lying = Buffer.from(frame);
        lying.writeUInt16LE(body.length - 256 + delta, at);
        assert.throws(() => inflateBody(lying, 1 << 20, FLAG_COMPRESSED | FLAG_ZSTD), /does not inflate/);
      }
    } finally {
      useZstd(zstd);
    }
  }
  // Without a content size or a content checksum (zstd-napi can write those; our writer never does).
  const z = createRequire(import.meta.url)('zstd-napi') as {
    compress(b: Uint8Array, p: { contentSizeFlag?: boolean; checksumFlag?: boolean }): Uint8Array;
  };
  assert.throws(
    () =>
      inflateBody(
        z.compress(body, { contentSizeFlag: false, checksumFlag: true }),
        1 << 20,
        FLAG_COMPRESSED | FLAG_ZSTD,
      ),
    /does not declare its content size/,
  );
  assert.throws(
    () => inflateBody(z.compress(body, { checksumFlag: false }), 1 << 20, FLAG_COMPRESSED | FLAG_ZSTD),
    /without its content checksum/,
  );
});

test('MYCELITE_BODY_CODEC=deflate: a writer with zstd-napi still writes DEFLATE bodies (for older readers)', async () => {
  const index = new URL('../src/node/index.js', import.meta.url).href;
  const format = new URL('../src/format/index.js', import.meta.url).href;
  const dir = tempDir();
  const script = `
    const { open } = await import(${JSON.stringify(index)});
    const F = await import(${JSON.stringify(format)});
    const fs = await import('node:fs');
    await F.loadHash();
    const file = ${JSON.stringify(path.join(dir, 'd.db'))};
    const db = await open(file);
    db.exec('CREATE TABLE t(v)');
    for (let i = 0; i < 4; i++) db.prepare('INSERT INTO t VALUES (?)').run('abc '.repeat(300));
    db.close();
    const bytes = new Uint8Array(fs.readFileSync(file + '-mycelite/journal'));
    const flags = [...new F.JournalReader(F.memorySource(bytes)).snapshots()].map((s) => s.flags);
    console.log(JSON.stringify({ flags, zstd: F.zstdCodec() !== undefined }));
  `;
  const run = (codec: string | undefined): { flags: number[]; zstd: boolean } => {
    const env = { ...process.env };
    if (codec === undefined) delete env['MYCELITE_BODY_CODEC'];
    else env['MYCELITE_BODY_CODEC'] = codec;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    fs.rmSync(path.join(dir, 'd.db'), { force: true });
    fs.rmSync(path.join(dir, 'd.db-mycelite'), { recursive: true, force: true });
    return JSON.parse(r.stdout.trim().split('\n').pop()!);
  };
  const deflate = run('deflate');
  assert.ok(deflate.zstd, 'zstd bodies are still read natively');
  assert.ok(deflate.flags.some((f) => f & FLAG_COMPRESSED));
  assert.ok(
    deflate.flags.every((f) => (f & FLAG_ZSTD) === 0),
    JSON.stringify(deflate.flags),
  );
  const zstd = run(undefined);
  assert.ok(
    zstd.flags.some((f) => f & FLAG_ZSTD),
    JSON.stringify(zstd.flags),
  );
});
