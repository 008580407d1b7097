/**
 * An in-memory index of a local journal: where each snapshot starts and the database checksum after it,
 * so a writer finds the bytes after any position (the hub's head) without rescanning the journal.
 * Runtime-neutral.
 */
import {
  type ByteSource,
  checkSnapshotChecksum,
  decodeSnapshotHeader,
  FILE_HEADER_SIZE,
  JournalReader,
  type Position,
  SNAPSHOT_HEADER_SIZE,
  type SnapshotInfo,
} from '../format/index.js';

/** The fields of a snapshot the index keeps. */
export type IndexedSnapshot = Pick<SnapshotInfo, 'txid' | 'offset' | 'length' | 'postChecksum'>;

/** A run of consecutive snapshots: bytes [start, end) of the journal. */
export interface SnapshotRange {
  start: number;
  end: number;
  count: number;
  /** Position after the last snapshot of the range. */
  last: Position;
}

export class JournalIndex {
  /** Start offset of snapshot `base.txid + 1 + i`. */
  private offsets = new Float64Array(1024);
  /** Database checksum after snapshot `base.txid + 1 + i`. */
  private checksums = new BigUint64Array(1024);
  private count = 0;
  /** Offset after the last indexed snapshot. */
  end = FILE_HEADER_SIZE;

  constructor(
    readonly journalId: Uint8Array,
    /** The position before the first snapshot indexed (the journal's base, from its file header, or `from`). */
    readonly base: Position,
    /**
     * Set when the index starts after a snapshot of the journal (`scan`'s `from`), not at its base: the
     * snapshots before are not indexed (`JournalIndex.scan` without `from` indexes them all).
     */
    readonly partial = false,
  ) {}

  /**
   * Indexes the journal in `src` up to `limit` bytes (default: all of it; a torn tail is left out). With
   * `from`, a snapshot of the journal (where it starts, its txid and checksum after it; typically the head),
   * only the snapshots after it are indexed — constant time at open, however long the history — when it is
   * there as described; else all of them.
   */
  static scan(src: ByteSource, limit?: number, from?: { offset: number } & Position): JournalIndex {
    const bounded: ByteSource =
      limit === undefined ? src : { size: () => Math.min(limit, src.size()), read: (o, n) => src.read(o, n) };
    if (from) {
      const reader = new JournalReader(bounded, { from: from.offset });
      const snapshots = reader.snapshots();
      const first = snapshots.next();
      if (!first.done && first.value.txid === from.txid && first.value.postChecksum === from.checksum) {
        const index = new JournalIndex(
          reader.header.journalId,
          { txid: from.txid, checksum: from.checksum },
          true,
        );
        index.end = first.value.offset + first.value.length;
        for (const s of snapshots) index.add(s);
        return index;
      }
    }
    const reader = new JournalReader(bounded);
    const index = new JournalIndex(reader.header.journalId, {
      txid: reader.header.baseTxid,
      checksum: reader.header.baseChecksum,
    });
    for (const s of reader.snapshots()) index.add(s);
    return index;
  }

  /** The position after the last indexed snapshot. */
  get last(): Position {
    if (this.count === 0) return this.base;
    return { txid: this.base.txid + BigInt(this.count), checksum: this.checksums[this.count - 1]! };
  }

  get lastTxid(): bigint {
    return this.base.txid + BigInt(this.count);
  }

  /** Adds the next snapshot; a snapshot already indexed is ignored. Throws when it leaves a gap. */
  add(s: IndexedSnapshot): void {
    const next = this.lastTxid + 1n;
    if (s.txid < next) return;
    if (s.txid !== next || s.offset !== this.end) {
      throw new Error(
        `journal index: snapshot ${s.txid} at byte ${s.offset} does not follow snapshot ${next - 1n} ending at byte ${this.end}`,
      );
    }
    if (this.count === this.offsets.length) {
      const offsets = new Float64Array(this.count * 2);
      offsets.set(this.offsets);
      this.offsets = offsets;
      const checksums = new BigUint64Array(this.count * 2);
      checksums.set(this.checksums);
      this.checksums = checksums;
    }
    this.offsets[this.count] = s.offset;
    this.checksums[this.count] = s.postChecksum;
    this.count++;
    this.end = s.offset + s.length;
  }

  /** The database checksum after `txid` in this history, or undefined when the index does not reach it. */
  checksumAt(txid: bigint): bigint | undefined {
    if (txid === this.base.txid) return this.base.checksum;
    if (txid < this.base.txid || txid > this.lastTxid) return undefined;
    return this.checksums[Number(txid - this.base.txid) - 1];
  }

  /** True when `p` is a state of this history that the index reaches. */
  contains(p: Position): boolean {
    return this.checksumAt(p.txid) === p.checksum;
  }

  /**
   * The snapshots after `after` (a txid this index reaches, below its last) whose bytes total at most
   * `maxBytes`, but always at least one.
   */
  rangeAfter(after: bigint, maxBytes: number): SnapshotRange {
    if (after < this.base.txid || after >= this.lastTxid) {
      throw new Error(
        `journal index: nothing after txid ${after} (index holds ${this.base.txid}..${this.lastTxid})`,
      );
    }
    const first = Number(after - this.base.txid);
    const start = this.offsets[first]!;
    const endOf = (k: number): number => (k + 1 < this.count ? this.offsets[k + 1]! : this.end);
    // Snapshots first..i-1 go; the first always does.
    let i = first + 1;
    while (i < this.count && endOf(i) - start <= maxBytes) i++;
    const end = endOf(i - 1);
    return {
      start,
      end,
      count: i - first,
      last: { txid: this.base.txid + BigInt(i), checksum: this.checksums[i - 1]! },
    };
  }

  /** Start offset and length of snapshot `txid` (which the index must reach). */
  snapshotAt(txid: bigint): { offset: number; length: number } {
    const i = Number(txid - this.base.txid) - 1;
    if (i < 0 || i >= this.count) throw new Error(`journal index: no snapshot ${txid}`);
    const offset = this.offsets[i]!;
    const end = i + 1 < this.count ? this.offsets[i + 1]! : this.end;
    return { offset, length: end - offset };
  }
}

/**
 * Reads the whole, valid snapshots that follow the index's end in `src` (a journal someone else appends
 * to), at most `max` of them, without adding them. Stops at the first incomplete or invalid one: it may
 * still be being written.
 */
export function readNewSnapshots(src: ByteSource, index: JournalIndex, max = 4096): SnapshotInfo[] {
  const size = src.size();
  const out: SnapshotInfo[] = [];
  let offset = index.end;
  let prev = index.last;
  while (size - offset >= SNAPSHOT_HEADER_SIZE && out.length < max) {
    const h = decodeSnapshotHeader(src.read(offset, SNAPSHOT_HEADER_SIZE));
    if (h === undefined || typeof h === 'string' || offset + h.length > size) break;
    if (h.txid !== prev.txid + 1n || h.preChecksum !== prev.checksum) break;
    if (!checkSnapshotChecksum(src, offset, h)) break;
    out.push({ ...h, offset });
    prev = { txid: h.txid, checksum: h.postChecksum };
    offset += h.length;
  }
  return out;
}
