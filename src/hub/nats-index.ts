/**
 * The index of a database's view in NatsStorage (src/hub/nats-tail.ts): per snapshot since the base, its
 * header's fields and where its bytes are, per append the stream sequences and lengths of its parts. All
 * in rows of typed arrays (about 52 bytes a snapshot and 16 an append part), not objects: a hub holding a
 * long history since its last checkpoint keeps no header object per snapshot (issue 22). Headers and
 * append refs are made again when asked for.
 *
 * A snapshot's txid and preChecksum are not stored: snapshot `i` is base.txid + 1 + `i`, and its
 * preChecksum is the postChecksum of the one before it (of the base for the first), which the view checked.
 */
import type { Position, SnapshotHeader } from '../format/index.js';

/** Where an append's bytes are: its parts' stream sequences and lengths. */
export interface AppendRef {
  seqs: number[];
  lens: number[];
}

export interface IndexedSnapshot {
  header: SnapshotHeader;
  ref: AppendRef;
  /** Offset of the snapshot in the concatenation of the append's parts. */
  offset: number;
}

type Numbers = Uint32Array | Float64Array | BigUint64Array;

/** Rows of `stride` values in one typed array that doubles as it fills. */
class Rows<A extends Numbers> {
  count = 0;
  a: A;
  constructor(
    private readonly stride: number,
    private readonly make: (n: number) => A,
  ) {
    this.a = make(0);
  }

  /** The index of a new row at the end (its values are set in `a`). */
  add(): number {
    if ((this.count + 1) * this.stride > this.a.length) this.keep(0, Math.max(16, this.count * 2));
    return this.count++;
  }

  /** Drops the first `n` rows (the memory of a long history goes back with them). */
  drop(n: number): void {
    this.keep(n, Math.max(16, (this.count - n) * 2));
    this.count -= n;
  }

  clear(): void {
    this.count = 0;
    this.a = this.make(0);
  }

  /** A new array of `capacity` rows holding the rows from `from` on. */
  private keep(from: number, capacity: number): void {
    const a = this.make(capacity * this.stride);
    a.set(this.a.subarray(from * this.stride, this.count * this.stride) as never);
    this.a = a;
  }
}

// Columns of a snapshot's u32 row.
const LENGTH = 0;
const PAGE_SIZE = 1;
const DB_PAGES = 2;
const PATCH_COUNT = 3;
const FLAGS = 4;
const COMMIT_TAG = 5;
/** The snapshot's append (a row of `appends`). */
const APPEND = 6;
const U32S = 7;
// Columns of a snapshot's f64 row.
const TIMESTAMP = 0;
/** Where the snapshot starts in the concatenation of its append's parts. */
const OFFSET = 1;
const F64S = 2;
// Columns of an append's row (f64): its first part's stream sequence (the parts are messages in a row:
// the view reads an append only from consecutive ones) and the row of its first part in `parts`.
const FIRST_SEQ = 0;
const FIRST_PART = 1;

export class SnapshotIndex {
  private readonly u32 = new Rows(U32S, (n) => new Uint32Array(n));
  private readonly f64 = new Rows(F64S, (n) => new Float64Array(n));
  private readonly post = new Rows(1, (n) => new BigUint64Array(n));
  private readonly appends = new Rows(2, (n) => new Float64Array(n));
  /** The length of each append part. */
  private readonly parts = new Rows(1, (n) => new Uint32Array(n));

  /** Snapshots held: base.txid + 1 … base.txid + count. */
  get count(): number {
    return this.u32.count;
  }

  /** Adds an append's snapshots (at their offsets in it) after those held. */
  add(
    seqs: readonly number[],
    lens: readonly number[],
    headers: readonly SnapshotHeader[],
    offsets: readonly number[],
  ): void {
    const j = this.appends.add();
    this.appends.a[j * 2 + FIRST_SEQ] = seqs[0]!;
    this.appends.a[j * 2 + FIRST_PART] = this.parts.count;
    for (const len of lens) {
      const p = this.parts.add(); // before `.a`: adding may replace the array
      this.parts.a[p] = len;
    }
    for (const [k, h] of headers.entries()) {
      const i = this.u32.add();
      const u = this.u32.a;
      const o = i * U32S;
      u[o + LENGTH] = h.length;
      u[o + PAGE_SIZE] = h.pageSize;
      u[o + DB_PAGES] = h.dbPages;
      u[o + PATCH_COUNT] = h.patchCount;
      u[o + FLAGS] = h.flags;
      u[o + COMMIT_TAG] = h.commitTag;
      u[o + APPEND] = j;
      this.f64.add();
      this.f64.a[i * F64S + TIMESTAMP] = h.timestamp;
      this.f64.a[i * F64S + OFFSET] = offsets[k]!;
      this.post.add();
      this.post.a[i] = h.postChecksum;
    }
  }

  /** The header of snapshot `i` (txid base.txid + 1 + `i`). */
  header(i: number, base: Position): SnapshotHeader {
    const u = this.u32.a;
    const o = i * U32S;
    return {
      length: u[o + LENGTH]!,
      txid: base.txid + 1n + BigInt(i),
      timestamp: this.f64.a[i * F64S + TIMESTAMP]!,
      pageSize: u[o + PAGE_SIZE]!,
      dbPages: u[o + DB_PAGES]!,
      patchCount: u[o + PATCH_COUNT]!,
      flags: u[o + FLAGS]!,
      preChecksum: i === 0 ? base.checksum : this.post.a[i - 1]!,
      postChecksum: this.post.a[i]!,
      commitTag: u[o + COMMIT_TAG]!,
    };
  }

  length(i: number): number {
    return this.u32.a[i * U32S + LENGTH]!;
  }

  postChecksum(i: number): bigint {
    return this.post.a[i]!;
  }

  offset(i: number): number {
    return this.f64.a[i * F64S + OFFSET]!;
  }

  /** The append snapshot `i` came in (a number shared by the snapshots of one append). */
  append(i: number): number {
    return this.u32.a[i * U32S + APPEND]!;
  }

  /** Where the bytes of append `j` are. */
  ref(j: number): AppendRef {
    const a = this.appends.a;
    const first = a[j * 2 + FIRST_PART]!;
    const end = j + 1 < this.appends.count ? a[(j + 1) * 2 + FIRST_PART]! : this.parts.count;
    const seqs: number[] = [];
    const lens: number[] = [];
    for (let p = first; p < end; p++) {
      seqs.push(a[j * 2 + FIRST_SEQ]! + p - first);
      lens.push(this.parts.a[p]!);
    }
    return { seqs, lens };
  }

  /** Drops the first `n` snapshots (fewer than held) and the appends left with none; their bytes. */
  drop(n: number): number {
    let bytes = 0;
    for (let i = 0; i < n; i++) bytes += this.length(i);
    const j = this.append(n);
    const p = this.appends.a[j * 2 + FIRST_PART]!;
    this.u32.drop(n);
    this.f64.drop(n);
    this.post.drop(n);
    this.appends.drop(j);
    this.parts.drop(p);
    for (let i = 0; i < this.u32.count; i++) this.u32.a[i * U32S + APPEND]! -= j;
    for (let k = 0; k < this.appends.count; k++) this.appends.a[k * 2 + FIRST_PART]! -= p;
    return bytes;
  }

  clear(): void {
    for (const r of [this.u32, this.f64, this.post, this.appends, this.parts]) r.clear();
  }
}
