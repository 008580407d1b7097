// Journal format v1: codec round trips (fast-check), page diffs, snapshot bodies, and real journals that
// are truncated or corrupted.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import {
  decodeFileHeader,
  decodeSnapshotHeader,
  diffPage,
  encodeFileHeader,
  encodeSnapshotHeader,
  type FileHeader,
  JournalFormatError,
  JournalReader,
  loadHash,
  memorySource,
  SnapshotBodyWriter,
  type SnapshotHeader,
  type SnapshotInfo,
  samePage,
  walkPatches,
  xxh64,
} from '../src/format/index.js';
import { nodeRuntime, open } from '../src/node/index.js';
import { restoreDatabase, verifyDatabase } from '../src/restore/restore.js';
import { cleanupTempDirs, journalOf, replayMatches, tempDir } from './helpers/util.js';

before(loadHash);
after(cleanupTempDirs);

const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const pageSizeArb = fc.constantFrom(512, 1024, 2048, 4096, 8192, 16384, 32768, 65536);

describe('file header', () => {
  test('decode(encode(h)) == h', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 16, maxLength: 16 }),
        fc.integer({ min: Number.MIN_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER }),
        u64,
        u64,
        (journalId, createdAt, baseTxid, baseChecksum) => {
          const h: FileHeader = { version: 1, journalId, createdAt, baseTxid, baseChecksum };
          const bytes = encodeFileHeader(h);
          assert.equal(bytes.length, 64);
          assert.deepEqual(decodeFileHeader(bytes), { ...h, journalId: new Uint8Array(journalId) });
        },
      ),
    );
  });

  test('any flipped byte is rejected', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 16, maxLength: 16 }),
        fc.nat(63),
        fc.integer({ min: 1, max: 255 }),
        (id, at, x) => {
          const bytes = encodeFileHeader({
            version: 1,
            journalId: id,
            createdAt: 1,
            baseTxid: 0n,
            baseChecksum: 0n,
          });
          bytes[at]! ^= x;
          assert.throws(() => decodeFileHeader(bytes), JournalFormatError);
        },
      ),
    );
  });

  test('bad magic and unknown version are named', () => {
    const good = encodeFileHeader({
      version: 1,
      journalId: new Uint8Array(16),
      createdAt: 0,
      baseTxid: 0n,
      baseChecksum: 0n,
    });
    const magic = good.slice();
    magic[0] = 0x58;
    assert.throws(() => decodeFileHeader(magic), /not a Mycelite journal/);
    const v2 = good.slice();
    v2[8] = 2;
    assert.throws(() => decodeFileHeader(v2), /version 2.*version 1/);
    assert.throws(() => decodeFileHeader(good.subarray(0, 10)), /shorter than its 64-byte header/);
  });
});

const snapshotHeaderArb: fc.Arbitrary<SnapshotHeader> = fc
  .record({
    length: fc.integer({ min: 72, max: 0xffffffff }),
    txid: u64,
    timestamp: fc.integer({ min: Number.MIN_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER }),
    pageSize: pageSizeArb,
    dbPages: u32,
    patchFraction: fc.double({ min: 0, max: 1, noNaN: true }),
    flags: fc.constantFrom(0, 1),
    preChecksum: u64,
    postChecksum: u64,
    commitTag: u32,
  })
  .map(({ patchFraction, ...h }) => ({ ...h, patchCount: Math.floor(h.dbPages * patchFraction) }));

describe('snapshot header', () => {
  test('decode(encode(h)) == h', () => {
    fc.assert(
      fc.property(snapshotHeaderArb, (h) => {
        const bytes = encodeSnapshotHeader(h);
        assert.equal(bytes.length, 64);
        assert.deepEqual(decodeSnapshotHeader(bytes), h);
      }),
    );
  });

  test('a flipped byte makes it not a header (torn-tail rule)', () => {
    fc.assert(
      fc.property(snapshotHeaderArb, fc.nat(63), fc.integer({ min: 1, max: 255 }), (h, at, x) => {
        const bytes = encodeSnapshotHeader(h);
        bytes[at]! ^= x;
        assert.equal(decodeSnapshotHeader(bytes), undefined);
      }),
    );
  });

  test('impossible fields are named', () => {
    const h: SnapshotHeader = {
      length: 72,
      txid: 1n,
      timestamp: 0,
      pageSize: 4096,
      dbPages: 1,
      patchCount: 1,
      flags: 0,
      preChecksum: 0n,
      postChecksum: 0n,
      commitTag: 0,
    };
    assert.match(
      String(decodeSnapshotHeader(encodeSnapshotHeader({ ...h, pageSize: 3000 }))),
      /page size 3000/,
    );
    assert.match(String(decodeSnapshotHeader(encodeSnapshotHeader({ ...h, length: 71 }))), /length 71/);
    assert.match(String(decodeSnapshotHeader(encodeSnapshotHeader({ ...h, flags: 34 }))), /flags 0x22/);
    // Bit 4 (zstd) says how a compressed body is stored: never without bit 1.
    assert.match(String(decodeSnapshotHeader(encodeSnapshotHeader({ ...h, flags: 16 }))), /zstd without/);
    assert.equal(typeof decodeSnapshotHeader(encodeSnapshotHeader({ ...h, flags: 18 })), 'object');
    assert.match(String(decodeSnapshotHeader(encodeSnapshotHeader({ ...h, patchCount: 2 }))), /2 patches/);
  });
});

// ---------------------------------------------------------------------------------------------------
// Page diffs and bodies
// ---------------------------------------------------------------------------------------------------

/** A page and a changed copy: `edits` overwrite ranges of it with bytes. */
const pagePairArb = fc
  .record({
    pageSize: fc.constantFrom(512, 1024, 4096),
    seed: fc.uint8Array({ minLength: 1, maxLength: 64 }),
    edits: fc.array(
      fc.record({
        at: fc.double({ min: 0, max: 1, noNaN: true }),
        bytes: fc.uint8Array({ minLength: 1, maxLength: 40 }),
      }),
      { maxLength: 12 },
    ),
  })
  .map(({ pageSize, seed, edits }) => {
    const old = new Uint8Array(pageSize);
    for (let i = 0; i < pageSize; i++) old[i] = seed[i % seed.length]! ^ (i & 0x0f);
    const neu = old.slice();
    for (const e of edits) {
      const at = Math.min(pageSize - 1, Math.floor(e.at * pageSize));
      neu.set(e.bytes.subarray(0, pageSize - at), at);
    }
    return { old, neu };
  });

describe('diffPage', () => {
  test('applying the runs of diffPage(old, new) to old yields new', () => {
    fc.assert(
      fc.property(pagePairArb, ({ old, neu }) => {
        const out = new Int32Array(neu.length / 2);
        const n = diffPage(old, neu, out);
        const applied = old.slice();
        let lastEnd = -1;
        for (let r = 0; r < n; r++) {
          const start = out[r * 2]!;
          const end = out[r * 2 + 1]!;
          assert.ok(start >= 0 && start < end && end <= neu.length, `run ${start}..${end} inside the page`);
          assert.ok(start > lastEnd, 'runs ascend and do not overlap or touch');
          assert.notEqual(old[start], neu[start], 'a run starts at a differing byte');
          assert.notEqual(old[end - 1], neu[end - 1], 'a run ends at a differing byte');
          applied.set(neu.subarray(start, end), start);
          lastEnd = end;
        }
        assert.deepEqual(applied, neu);
        assert.equal(n === 0, samePage(old, neu));
      }),
    );
  });

  test('no runs for equal pages', () => {
    fc.assert(
      fc.property(pagePairArb, ({ old }) => {
        assert.equal(diffPage(old, old.slice(), new Int32Array(old.length / 2)), 0);
        assert.equal(samePage(old, old.slice()), true);
      }),
    );
  });

  test('a page differing in every byte is one run', () => {
    const a = new Uint8Array(4096);
    const b = new Uint8Array(4096).fill(1);
    const out = new Int32Array(2048);
    assert.equal(diffPage(a, b, out), 1);
    assert.deepEqual([out[0], out[1]], [0, 4096]);
  });
});

interface PageChange {
  pgno: number;
  old: Uint8Array | undefined;
  neu: Uint8Array;
}

const bodyArb = fc
  .record({
    pageSize: fc.constantFrom(512, 4096, 65536),
    pages: fc.uniqueArray(fc.integer({ min: 1, max: 60 }), { minLength: 1, maxLength: 12 }),
    kinds: fc.array(fc.constantFrom('new', 'same', 'small', 'big', 'full'), { minLength: 12, maxLength: 12 }),
    seed: fc.integer(),
  })
  .map(({ pageSize, pages, kinds, seed }) => {
    let x = seed >>> 0 || 1;
    const rnd = (): number => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return (x >>> 0) & 0xff;
    };
    const changes: PageChange[] = [...pages]
      .sort((a, b) => a - b)
      .map((pgno, i) => {
        const kind = kinds[i]!;
        const old = new Uint8Array(pageSize);
        for (let k = 0; k < pageSize; k += 7) old[k] = rnd();
        const neu = old.slice();
        if (kind === 'small') for (let k = 0; k < 5; k++) neu[(rnd() * 251) % pageSize] ^= 0xff;
        if (kind === 'big' || kind === 'full')
          for (let k = 0; k < pageSize; k += kind === 'big' ? 3 : 1) neu[k] = ~neu[k]! & 0xff;
        if (kind === 'new') for (let k = 0; k < pageSize; k += 5) neu[k] = rnd() | 1;
        return { pgno, old: kind === 'new' ? undefined : old, neu };
      });
    return { pageSize, changes };
  });

describe('snapshot body', () => {
  test('SnapshotBodyWriter + walkPatches round trip', () => {
    fc.assert(
      fc.property(bodyArb, ({ pageSize, changes }) => {
        const chunks: Uint8Array[] = [];
        const w = new SnapshotBodyWriter(pageSize, (c) => chunks.push(c.slice()));
        const written = new Set<number>();
        for (const c of changes) {
          const wrote = w.addDiff(c.pgno, c.old, c.neu);
          assert.equal(wrote, !samePage(c.old ?? new Uint8Array(pageSize), c.neu));
          if (wrote) written.add(c.pgno);
        }
        w.finish();
        const bodyLength = chunks.reduce((n, c) => n + c.length, 0);
        assert.equal(bodyLength, w.length);
        assert.equal(w.patchCount, written.size);
        // A journal-like buffer: 100 bytes of something, a header slot, the body, a trailer slot.
        const at = 100;
        const buf = new Uint8Array(at + 64 + bodyLength + 8);
        let p = at + 64;
        for (const c of chunks) {
          buf.set(c, p);
          p += c.length;
        }
        const h: SnapshotHeader = {
          length: 64 + bodyLength + 8,
          txid: 5n,
          timestamp: 0,
          pageSize,
          dbPages: 60,
          patchCount: w.patchCount,
          flags: 0,
          preChecksum: 0n,
          postChecksum: 0n,
          commitTag: 0,
        };
        const pages = new Map(changes.map((c) => [c.pgno, (c.old ?? new Uint8Array(pageSize)).slice()]));
        const seen: number[] = [];
        walkPatches(memorySource(buf), at, h, (pgno, offset, bytes) => {
          if (seen.at(-1) !== pgno) seen.push(pgno);
          pages.get(pgno)!.set(bytes, offset);
        });
        assert.deepEqual(seen, [...written]);
        for (const c of changes) assert.deepEqual(pages.get(c.pgno), c.neu, `page ${c.pgno}`);
        // A body one byte short does not parse.
        if (bodyLength > 0) {
          assert.throws(
            () => walkPatches(memorySource(buf), at, { ...h, length: h.length - 1 }),
            JournalFormatError,
          );
        }
      }),
      { numRuns: 60 },
    );
  });

  test('pages out of order are refused by the writer', () => {
    const w = new SnapshotBodyWriter(512, () => {});
    w.addFullPage(3, new Uint8Array(512));
    assert.throws(() => w.addFullPage(3, new Uint8Array(512)), /out of order/);
    assert.throws(() => w.addFullPage(2, new Uint8Array(512)), /out of order/);
  });
});

// ---------------------------------------------------------------------------------------------------
// Real journals: torn tails and corruption
// ---------------------------------------------------------------------------------------------------

interface Fixture {
  dbPath: string;
  journal: Uint8Array;
  db: Uint8Array;
  snapshots: SnapshotInfo[];
}

/** The messages of an error and its causes, joined. */
function _causes(e: unknown): string {
  const parts: string[] = [];
  for (let c = e as Error | undefined; c; c = c.cause as Error | undefined) parts.push(c.message);
  return parts.join(' <- ');
}

/** A closed database with a journal of a few snapshots; `lastGrows`: the last snapshot adds pages. */
async function makeFixture(lastGrows: boolean): Promise<Fixture> {
  const dir = tempDir();
  const dbPath = path.join(dir, 'f.db');
  const db = await open(dbPath);
  try {
    db.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, a)');
    db.exec('INSERT INTO t(a) VALUES (randomblob(30000))');
    db.exec("BEGIN; INSERT INTO t(a) VALUES ('two'); UPDATE t SET a = randomblob(5000) WHERE id = 1; COMMIT");
    db.exec("INSERT INTO t(a) VALUES ('three')");
    if (lastGrows) db.exec('INSERT INTO t(a) VALUES (randomblob(20000))');
    else db.exec("UPDATE t SET a = 'last' WHERE id = 2");
  } finally {
    db.close();
  }
  const journal = new Uint8Array(fs.readFileSync(journalOf(dbPath)));
  const snapshots = [...new JournalReader(memorySource(journal), { verify: true }).snapshots()];
  return { dbPath, journal, db: new Uint8Array(fs.readFileSync(dbPath)), snapshots };
}

/** Writes a copy of the fixture's database and the given journal bytes into a fresh directory. */
function writeCopy(f: Fixture, journal: Uint8Array): string {
  const dir = tempDir();
  const dbPath = path.join(dir, 'f.db');
  fs.writeFileSync(dbPath, f.db);
  fs.mkdirSync(`${dbPath}-mycelite`);
  fs.writeFileSync(journalOf(dbPath), journal);
  return dbPath;
}

describe('truncated journals', () => {
  for (const lastGrows of [false, true]) {
    const label = lastGrows ? 'the last snapshot grows the file' : 'the last snapshot keeps the size';

    test(`every cut inside the last snapshot is a torn tail (${label})`, async () => {
      const f = await makeFixture(lastGrows);
      const last = f.snapshots.at(-1)!;
      assert.equal(last.offset + last.length, f.journal.length);
      for (let cut = last.offset + 1; cut < f.journal.length; cut++) {
        for (const verify of [false, true]) {
          const r = new JournalReader(memorySource(f.journal.subarray(0, cut)), { verify });
          const got = [...r.snapshots()];
          assert.equal(got.length, f.snapshots.length - 1, `cut at ${cut}`);
          assert.equal(r.tornBytes, cut - last.offset, `cut at ${cut}`);
          assert.equal(r.end, last.offset);
        }
      }
      // Cutting at the snapshot boundary is a clean journal.
      const r = new JournalReader(memorySource(f.journal.subarray(0, last.offset)));
      assert.equal([...r.snapshots()].length, f.snapshots.length - 1);
      assert.equal(r.tornBytes, 0);
    });

    test(`open() keeps a database its torn journal does not explain, and sets the journal aside (${label})`, async () => {
      // The file holds the last snapshot's state: that snapshot was committed, its bytes in the journal are
      // what got damaged. The database is the user's data: it is kept, and recorded as a new snapshot.
      const f = await makeFixture(lastGrows);
      const last = f.snapshots.at(-1)!;
      const cuts = [1, 8, 63, 64, 65, Math.floor(last.length / 2), last.length - 8, last.length - 1];
      for (const c of cuts) {
        const dbPath = writeCopy(f, f.journal.subarray(0, last.offset + c));
        const warnings: string[] = [];
        const db = await open(dbPath, { onWarning: (w) => warnings.push(w.code) });
        try {
          assert.deepEqual(warnings, ['journal_damaged'], `cut ${c}`);
          assert.deepEqual(new Uint8Array(fs.readFileSync(dbPath)), f.db, `cut ${c}: the database is kept`);
          assert.equal(db.position().txid, last.txid, `cut ${c}: recorded as snapshot ${last.txid}`);
          assert.equal(db.position().checksum, last.postChecksum);
          const aside = fs.readdirSync(`${dbPath}-mycelite`).filter((n) => n.startsWith('journal.damaged-'));
          assert.equal(aside.length, 1);
          assert.equal(fs.statSync(path.join(`${dbPath}-mycelite`, aside[0]!)).size, last.offset + c);
          assert.ok((await replayMatches(dbPath)).ok, `cut ${c}: replay == database after open`);
          db.exec("INSERT INTO t(a) VALUES ('after the cut')");
          assert.ok((await replayMatches(dbPath)).ok, `cut ${c}: replay == database after a new write`);
        } finally {
          db.close();
        }
        // A second open agrees, and says nothing more.
        const again = await open(dbPath, { onWarning: (w) => warnings.push(w.code) });
        try {
          assert.equal(again.position().txid, last.txid + 1n);
          assert.equal(warnings.length, 1);
        } finally {
          again.close();
        }
      }
    });
  }

  test('a journal cut inside its file header: the database is kept and a new history starts from it', async () => {
    const f = await makeFixture(false);
    const dbPath = writeCopy(f, f.journal.subarray(0, 30));
    const warnings: string[] = [];
    const db = await open(dbPath, { onWarning: (w) => warnings.push(w.message) });
    try {
      assert.equal(warnings.length, 1);
      assert.match(
        warnings[0]!,
        /journal was unreadable .*shorter than its 64-byte header.*copied to .*kept as it is/,
      );
      assert.equal(db.position().txid, 1n);
    } finally {
      db.close();
    }
    assert.deepEqual(new Uint8Array(fs.readFileSync(dbPath)), f.db);
    assert.ok((await replayMatches(dbPath)).ok);
  });
});

describe('corrupt journals', () => {
  test('a flipped byte in an earlier snapshot body names the byte offset and txid', async () => {
    const f = await makeFixture(false);
    const s = f.snapshots[1]!; // txid 2, not the last
    const at = s.offset + Math.floor(s.length / 2);
    const bad = f.journal.slice();
    bad[at]! ^= 0x01;
    const check = (e: unknown): boolean => {
      assert.ok(e instanceof JournalFormatError, String(e));
      assert.equal(e.txid, s.txid);
      assert.match(e.message, new RegExp(`byte ${e.offset}\\b`));
      assert.match(e.message, new RegExp(`snapshot ${s.txid}\\b`));
      assert.ok(
        e.offset >= s.offset && e.offset < s.offset + s.length,
        `offset ${e.offset} inside snapshot 2`,
      );
      return true;
    };
    assert.throws(() => [...new JournalReader(memorySource(bad), { verify: true }).snapshots()], check);
    const dbPath = writeCopy(f, bad);
    await assert.rejects(restoreDatabase(nodeRuntime.fs, dbPath, `${dbPath}.out`), check);
    assert.equal(fs.existsSync(`${dbPath}.out`), false, 'a failed restore writes no output');
  });

  test('verifyDatabase reports a corrupt journal as ok:false', async () => {
    const f = await makeFixture(false);
    const s = f.snapshots[1]!;
    const bad = f.journal.slice();
    bad[s.offset + Math.floor(s.length / 2)]! ^= 0x01;
    const dbPath = writeCopy(f, bad);
    const r = await verifyDatabase(nodeRuntime.fs, dbPath, `${dbPath}.verify`);
    assert.equal(r.ok, false);
    assert.match(r.problem ?? '', /snapshot 2/);
  });

  test('verifyDatabase: ok on an intact journal, ok:false on a changed database', async () => {
    const f = await makeFixture(false);
    const dbPath = writeCopy(f, f.journal);
    const good = await verifyDatabase(nodeRuntime.fs, dbPath, `${dbPath}.verify`);
    assert.equal(good.ok, true, good.problem);
    assert.equal(good.snapshots, f.snapshots.length);
    assert.equal(good.lastTxid, BigInt(f.snapshots.length));
    const db = fs.readFileSync(dbPath);
    db[db.length - 10]! ^= 0xff;
    fs.writeFileSync(dbPath, db);
    const bad = await verifyDatabase(nodeRuntime.fs, dbPath, `${dbPath}.verify`);
    assert.equal(bad.ok, false);
    assert.match(bad.problem!, new RegExp(`byte ${db.length - 10}`));
  });

  test('a flipped byte in an earlier snapshot header is corruption, not a torn tail', async () => {
    const f = await makeFixture(false);
    const s = f.snapshots[1]!;
    const bad = f.journal.slice();
    bad[s.offset + 9]! ^= 0x40; // txid field: the headerCheck no longer matches
    for (const verify of [false, true]) {
      assert.throws(
        () => [...new JournalReader(memorySource(bad), { verify }).snapshots()],
        (e: unknown) => {
          assert.ok(e instanceof JournalFormatError);
          assert.equal(e.offset, s.offset);
          assert.match(e.message, new RegExp(`byte ${s.offset} \\(snapshot ${s.txid}\\)`));
          assert.match(e.message, /corrupt/);
          return true;
        },
      );
    }
    // The writer must not treat it as a torn tail and cut away the snapshots after it silently: the
    // journal as found is set aside whole, the database kept.
    const dbPath = writeCopy(f, bad);
    const warnings: string[] = [];
    const db = await open(dbPath, { onWarning: (w) => warnings.push(w.message) });
    db.close();
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /journal is damaged .*corrupt.*kept as it is/);
    const aside = fs.readdirSync(`${dbPath}-mycelite`).filter((n) => n.startsWith('journal.damaged-'));
    assert.deepEqual(new Uint8Array(fs.readFileSync(path.join(`${dbPath}-mycelite`, aside[0]!))), bad);
    assert.deepEqual(new Uint8Array(fs.readFileSync(dbPath)), f.db, 'the database is kept');
    assert.ok((await replayMatches(dbPath)).ok);
  });

  test('bad file magic and unknown version: clear errors from the reader and restore; open keeps or refuses', async () => {
    const f = await makeFixture(false);
    const magic = f.journal.slice();
    magic[0] = 0x6d;
    const v9 = f.journal.slice();
    v9[8] = 9;
    // A whole header of another version (its checksum recomputed): written by another Mycelite.
    new DataView(v9.buffer).setBigUint64(56, xxh64(v9.subarray(0, 56)), true);
    for (const [bytes, re] of [
      [magic, /not a Mycelite journal/],
      [v9, /version 9.*version 1/],
    ] as const) {
      assert.throws(() => new JournalReader(memorySource(bytes)), re);
      const dbPath = writeCopy(f, bytes);
      await assert.rejects(restoreDatabase(nodeRuntime.fs, dbPath, `${dbPath}.out`), re);
    }
    // Not a journal at all: damage. The database is kept, the file set aside.
    const damaged = writeCopy(f, magic);
    const warnings: string[] = [];
    (await open(damaged, { onWarning: (w) => warnings.push(w.message) })).close();
    assert.match(warnings.join('\n'), /not a Mycelite journal/);
    assert.deepEqual(new Uint8Array(fs.readFileSync(damaged)), f.db);
    // Another version: refused, and nothing is touched.
    const newer = writeCopy(f, v9);
    await assert.rejects(open(newer), /version 9.*version 1/);
    assert.deepEqual(new Uint8Array(fs.readFileSync(journalOf(newer))), v9, 'open leaves the journal alone');
  });

  test('open() names an unsupported version in its own message', async () => {
    const f = await makeFixture(false);
    const v9 = f.journal.slice();
    v9[8] = 9;
    new DataView(v9.buffer).setBigUint64(56, xxh64(v9.subarray(0, 56)), true);
    await assert.rejects(open(writeCopy(f, v9)), /version 9.*version 1/);
  });

  test('the fixture itself replays to its database', async () => {
    const f = await makeFixture(true);
    assert.ok((await replayMatches(f.dbPath)).ok);
  });
});
