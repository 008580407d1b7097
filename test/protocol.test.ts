/**
 * The wire layer (docs/PROTOCOL.md): names, positions, and the stream parser that guards every push body
 * and read stream. Snapshots come from the real writer's journal.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import {
  FILE_HEADER_SIZE,
  JournalFormatError,
  JournalReader,
  loadHash,
  memorySource,
  toHex,
} from '../src/format/index.js';
import { open } from '../src/node/index.js';
import {
  BEAT_BYTES,
  checkDbName,
  formatPosition,
  parseJournalId,
  parsePosition,
  type StreamItem,
  StreamParser,
} from '../src/protocol/index.js';
import { concatBytes } from './helpers/hub.js';
import { cleanupTempDirs, tempDir } from './helpers/util.js';

let journal: Uint8Array;
let snapshots: { bytes: Uint8Array; txid: bigint }[];

before(async () => {
  await loadHash();
  const dir = tempDir();
  const db = await open(path.join(dir, 'w.db'));
  db.exec('create table t(a, b)');
  const ins = db.prepare('insert into t values (?, randomblob(?))');
  for (let i = 0; i < 12; i++) ins.run(i, 100 + i * 900);
  db.exec('delete from t where a % 3 = 0');
  db.exec('vacuum');
  db.close();
  journal = new Uint8Array(fs.readFileSync(path.join(dir, 'w.db-mycelite', 'journal')));
  const reader = new JournalReader(memorySource(journal));
  snapshots = [...reader.snapshots()].map((s) => ({
    bytes: journal.slice(s.offset, s.offset + s.length),
    txid: s.txid,
  }));
});
after(cleanupTempDirs);

function parseAll(parser: StreamParser, bytes: Uint8Array, cuts: number[]): StreamItem[] {
  const items: StreamItem[] = [];
  let at = 0;
  for (const c of [...cuts.filter((x) => x > 0 && x < bytes.length)].sort((a, b) => a - b)) {
    items.push(...parser.push(bytes.subarray(at, c)));
    at = c;
  }
  items.push(...parser.push(bytes.subarray(at)));
  parser.end();
  return items;
}

test('database names: plain names pass, path tricks and absurd lengths are refused', () => {
  for (const ok of ['app', 'App-2.db', 'a_b', '0', 'x'.repeat(128)])
    assert.equal(checkDbName(ok), undefined, ok);
  for (const bad of [
    '',
    '..',
    'a/../b',
    '../x',
    'a/b',
    'a\\b',
    'a\0b',
    '.hidden',
    'x'.repeat(129),
    'a..b',
    '%2e%2e',
    ' a',
  ]) {
    assert.match(checkDbName(bad) ?? '', /not allowed/, JSON.stringify(bad));
  }
});

test('positions and journal ids round-trip; malformed ones are refused', () => {
  const p = { txid: 42n, checksum: 0x9f86d081884c7d65n };
  assert.equal(formatPosition(p), '42:9f86d081884c7d65');
  assert.deepEqual(parsePosition('42:9f86d081884c7d65'), p);
  for (const bad of [
    '',
    '42',
    '42:xyz',
    '-1:0000000000000000',
    '42:9F86D081884C7D65',
    '99999999999999999999999:0000000000000000',
  ]) {
    assert.equal(parsePosition(bad), undefined, bad);
  }
  const id = new Uint8Array(16).map((_, i) => i * 17);
  assert.deepEqual(parseJournalId(toHex(id)), id);
  assert.equal(parseJournalId('00'), undefined);
});

test('a journal parsed as a read stream, cut into random chunks, yields every snapshot intact', () => {
  fc.assert(
    fc.property(fc.array(fc.nat({ max: journal.length }), { maxLength: 20 }), (cuts) => {
      const items = parseAll(new StreamParser({ stream: true }), journal, cuts);
      const snaps = items.filter((i) => i.kind === 'snapshot');
      assert.equal(items[0]?.kind, 'header');
      assert.equal(snaps.length, snapshots.length);
      snaps.forEach((s, i) => {
        assert.deepEqual(s.bytes, snapshots[i]!.bytes);
      });
    }),
    { numRuns: 60 },
  );
});

test('beats between snapshots are skipped in a stream, refused in a push body', () => {
  const withBeats = concatBytes([
    journal.subarray(0, FILE_HEADER_SIZE),
    BEAT_BYTES,
    snapshots[0]!.bytes,
    BEAT_BYTES,
  ]);
  const items = parseAll(new StreamParser({ stream: true }), withBeats, [3, 70, 75]);
  assert.deepEqual(
    items.map((i) => i.kind),
    ['header', 'beat', 'snapshot', 'beat'],
  );
  const body = new StreamParser({ stream: false, base: { txid: 0n, checksum: 0n } });
  assert.throws(() => body.push(BEAT_BYTES), JournalFormatError);
});

test('a push body must continue its base: wrong txid or checksum is refused', () => {
  const second = snapshots[1]!.bytes;
  assert.throws(
    () => new StreamParser({ stream: false, base: { txid: 0n, checksum: 0n } }).push(second),
    /txid 2, expected 1/,
  );
  assert.throws(
    () => new StreamParser({ stream: false, base: { txid: 1n, checksum: 123n } }).push(second),
    /base checksum/,
  );
  const ok = new StreamParser({ stream: false, base: { txid: 0n, checksum: 0n } });
  assert.equal(ok.push(concatBytes([snapshots[0]!.bytes, second])).length, 2);
  assert.equal(ok.position?.txid, 2n);
});

test('any flipped byte in a snapshot is refused with an offset, never handed out', () => {
  const body = concatBytes(snapshots.slice(0, 4).map((s) => s.bytes));
  fc.assert(
    fc.property(fc.nat({ max: body.length - 1 }), fc.integer({ min: 1, max: 255 }), (at, x) => {
      const bad = body.slice();
      bad[at]! ^= x;
      const p = new StreamParser({ stream: false, base: { txid: 0n, checksum: 0n } });
      const handed: bigint[] = [];
      try {
        for (const i of p.push(bad)) if (i.kind === 'snapshot') handed.push(i.header.txid);
        p.end();
        assert.fail('a damaged body was accepted');
      } catch (e) {
        if (!(e instanceof JournalFormatError)) throw e;
        assert.ok(e.offset >= 0);
      }
      // Snapshots before the damaged one may be handed out; the damaged one and later ones never are.
      let end = 0;
      let firstBad = 0;
      for (const s of snapshots.slice(0, 4)) {
        end += s.bytes.length;
        if (at < end) break;
        firstBad++;
      }
      assert.ok(handed.length <= firstBad, `handed ${handed.length}, damaged index ${firstBad}`);
    }),
    { numRuns: 300 },
  );
});

test('a truncated body is an error at end(), and an oversized snapshot is refused early', () => {
  const p = new StreamParser({ stream: false, base: { txid: 0n, checksum: 0n } });
  assert.equal(p.push(snapshots[0]!.bytes.subarray(0, 100)).length, 0);
  assert.throws(() => p.end(), /ends inside an item/);
  const small = new StreamParser({ stream: false, base: { txid: 0n, checksum: 0n }, maxSnapshot: 100 });
  assert.throws(() => small.push(snapshots[0]!.bytes.subarray(0, 8)), /over the limit/);
});
