/**
 * The NATS view's index in typed arrays (src/hub/nats-index.ts): headers and append refs come back as
 * they were added, across the arrays' growth, after dropping a prefix (a checkpoint) and after clear().
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Position, SnapshotHeader } from '../src/format/index.js';
import { SnapshotIndex } from '../src/hub/nats-index.js';

function header(txid: bigint, pre: bigint): SnapshotHeader {
  const n = Number(txid);
  return {
    length: 100 + (n % 7),
    txid,
    timestamp: 1_700_000_000_000 + n,
    pageSize: 4096,
    dbPages: n + 2,
    patchCount: 1 + (n % 2),
    flags: n % 3 === 0 ? 1 : 0,
    preChecksum: pre,
    postChecksum: (0xfedcba9876543210n * txid) & 0xffffffffffffffffn,
    commitTag: (n * 2654435761) >>> 0,
  };
}

describe('NATS view index', () => {
  it('gives back headers and refs, after growth, a drop and a clear', () => {
    const x = new SnapshotIndex();
    const base: Position = { txid: 10n, checksum: 77n };
    const all: { h: SnapshotHeader; seqs: number[]; lens: number[]; offset: number; append: number }[] = [];
    let pre = base.checksum;
    let txid = base.txid;
    let seq = 1;
    for (let a = 0; a < 500; a++) {
      const count = 1 + (a % 4);
      const parts = 1 + (a % 3);
      const headers: SnapshotHeader[] = [];
      const offsets: number[] = [];
      let off = 0;
      for (let k = 0; k < count; k++) {
        const h = header(++txid, pre);
        pre = h.postChecksum;
        headers.push(h);
        offsets.push(off);
        off += h.length;
      }
      const seqs = Array.from({ length: parts }, (_, i) => seq + i);
      const lens = Array.from({ length: parts }, (_, i) => (i < parts - 1 ? 32 : off - 32 * (parts - 1)));
      seq += parts + 1; // a message that is not an append between two appends
      x.add(seqs, lens, headers, offsets);
      for (const [k, h] of headers.entries()) all.push({ h, seqs, lens, offset: offsets[k]!, append: a });
    }
    const check = (from: number, b: Position): void => {
      assert.equal(x.count, all.length - from);
      for (let i = 0; i < x.count; i++) {
        const e = all[from + i]!;
        assert.deepEqual(x.header(i, b), e.h);
        assert.equal(x.offset(i), e.offset);
        assert.equal(x.length(i), e.h.length);
        assert.deepEqual(x.ref(x.append(i)), { seqs: e.seqs, lens: e.lens });
        if (i > 0) assert.equal(x.append(i) === x.append(i - 1), e.append === all[from + i - 1]!.append);
      }
    };
    check(0, base);
    // A checkpoint in the middle of an append, then one at an append's end.
    for (const n of [601, 300]) {
      const from = all.length - x.count;
      const bytes = x.drop(n);
      assert.equal(
        bytes,
        all.slice(from, from + n).reduce((s, e) => s + e.h.length, 0),
      );
      const last = all[from + n - 1]!.h;
      check(from + n, { txid: last.txid, checksum: last.postChecksum });
    }
    x.clear();
    assert.equal(x.count, 0);
    const h = header(1n, 0n);
    x.add([5], [h.length], [h], [0]);
    assert.deepEqual(x.header(0, { txid: 0n, checksum: 0n }), h);
    assert.deepEqual(x.ref(0), { seqs: [5], lens: [h.length] });
  });
});
