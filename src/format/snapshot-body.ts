/**
 * Snapshot bodies (docs/FORMAT.md, "Page patch"): a streaming writer that diffs pages into patches and
 * hands out finished chunks, and a parser that walks patches in bounded memory.
 */
import type { ByteSource } from './byte-source.js';
import { ChunkReader, memorySource } from './byte-source.js';
import { BODY_COMPRESS_LIMIT, inflateBody } from './compress.js';
import {
  FLAG_COMPRESSED,
  FLAG_FULL_IMAGE,
  PATCH_HEADER_SIZE,
  RUN_HEADER_SIZE,
  SNAPSHOT_HEADER_SIZE,
  SNAPSHOT_TRAILER_SIZE,
} from './constants.js';
import { diffPage, zeroPage } from './diff.js';
import { JournalFormatError } from './errors.js';
import type { SnapshotHeader } from './snapshot-header.js';

/** Size of the chunks a SnapshotBodyWriter hands out (and of the scratch chunk it can be given). */
export const BODY_CHUNK_SIZE = 256 * 1024;

/** diffPage's run buffer per page size, shared (diffs run one at a time). */
const runBuffers = new Map<number, Int32Array>();
function runsFor(pageSize: number): Int32Array {
  let r = runBuffers.get(pageSize);
  if (!r) {
    r = new Int32Array(pageSize / 2);
    runBuffers.set(pageSize, r);
  }
  return r;
}

/**
 * Builds a snapshot body. Pages must be added in ascending pgno. Each filled chunk is passed to `sink`,
 * which may keep it: the writer reuses a chunk only when the sink returns false (done with it).
 */
export class SnapshotBodyWriter {
  private chunk: Uint8Array;
  private view: DataView;
  private used = 0;
  private lastPgno = 0;
  private readonly runs: Int32Array;
  /** Bytes of body produced so far. */
  length = 0;
  /** Patches written so far. */
  patchCount = 0;

  /**
   * `scratch`, when given, is used as the first chunk: the caller may reuse it once everything handed to
   * `sink` has been consumed (a synchronous sink, after `finish`).
   */
  constructor(
    readonly pageSize: number,
    private readonly sink: (chunk: Uint8Array) => unknown,
    scratch?: Uint8Array,
  ) {
    const size = Math.max(BODY_CHUNK_SIZE, pageSize + PATCH_HEADER_SIZE);
    this.chunk = scratch && scratch.length >= size ? scratch : new Uint8Array(size);
    this.view = new DataView(this.chunk.buffer, this.chunk.byteOffset, this.chunk.length);
    this.runs = runsFor(pageSize);
  }

  /**
   * Adds the difference between `old` (undefined: the page did not exist, compare with zeros) and `neu`.
   * Returns false, writing nothing, when the page did not change.
   */
  addDiff(pgno: number, old: Uint8Array | undefined, neu: Uint8Array): boolean {
    const n = diffPage(old ?? zeroPage(this.pageSize), neu, this.runs);
    if (n === 0) {
      // A page that is new but all zeros still has to exist: the file length covers it.
      return false;
    }
    let bytes = 0;
    for (let r = 0; r < n; r++) bytes += RUN_HEADER_SIZE + this.runs[r * 2 + 1]! - this.runs[r * 2]!;
    if (bytes >= this.pageSize || n > 0xffff) {
      this.addFullPage(pgno, neu);
      return true;
    }
    this.beginPatch(pgno, n);
    for (let r = 0; r < n; r++) {
      const start = this.runs[r * 2]!;
      const end = this.runs[r * 2 + 1]!;
      this.ensure(RUN_HEADER_SIZE);
      this.view.setUint16(this.used, start, true);
      this.view.setUint16(this.used + 2, end - start - 1, true);
      this.used += RUN_HEADER_SIZE;
      this.length += RUN_HEADER_SIZE;
      this.put(neu.subarray(start, end));
    }
    return true;
  }

  /** Adds a whole page. */
  addFullPage(pgno: number, page: Uint8Array): void {
    this.beginPatch(pgno, 0);
    this.put(page);
  }

  /** Hands the last partial chunk to the sink. Call once, after the last page (the writer is done). */
  finish(): void {
    if (this.used > 0) this.sink(this.chunk.subarray(0, this.used));
    this.used = 0;
  }

  private beginPatch(pgno: number, runCount: number): void {
    if (pgno <= this.lastPgno) throw new Error(`pages out of order: ${pgno} after ${this.lastPgno}`);
    this.lastPgno = pgno;
    this.patchCount++;
    this.ensure(PATCH_HEADER_SIZE);
    this.view.setUint32(this.used, pgno, true);
    this.view.setUint16(this.used + 4, runCount, true);
    this.used += PATCH_HEADER_SIZE;
    this.length += PATCH_HEADER_SIZE;
  }

  private put(bytes: Uint8Array): void {
    let off = 0;
    while (off < bytes.length) {
      if (this.used === this.chunk.length) this.flush();
      const n = Math.min(bytes.length - off, this.chunk.length - this.used);
      this.chunk.set(bytes.subarray(off, off + n), this.used);
      this.used += n;
      off += n;
    }
    this.length += bytes.length;
  }

  private ensure(n: number): void {
    if (this.used + n > this.chunk.length) this.flush();
  }

  private flush(): void {
    const kept = this.sink(this.chunk.subarray(0, this.used)) !== false;
    if (kept) {
      this.chunk = new Uint8Array(this.chunk.length);
      this.view = new DataView(this.chunk.buffer);
    }
    this.used = 0;
  }
}

/**
 * Called for each run (or whole page: offset 0, pageSize bytes) of a snapshot, in file order. `at` is
 * where the run's bytes start: a byte offset in the source, or, for a compressed body, in the inflated
 * body.
 */
/**
 * The bound for inflating a compressed body: the most bytes a valid body with `h`'s patchCount and
 * pageSize can hold (every patch a page of 1-byte runs at worst), and never more than
 * BODY_COMPRESS_LIMIT (writers store larger bodies uncompressed, docs/FORMAT.md).
 */
export function maxBodyLength(h: { patchCount: number; pageSize: number }): number {
  return Math.min(
    BODY_COMPRESS_LIMIT,
    h.patchCount * (PATCH_HEADER_SIZE + h.pageSize * (1 + RUN_HEADER_SIZE)),
  );
}

export type RunVisitor = (pgno: number, offset: number, bytes: Uint8Array, at: number) => void;

/**
 * Walks the patches of the snapshot at `offset` in `src`, validating the structure rules of
 * docs/FORMAT.md, and calls `visit` for each run. `bytes` passed to `visit` are valid only during the call.
 * Does not check the trailer checksum (see `checkSnapshotChecksum`).
 */
export function walkPatches(src: ByteSource, offset: number, h: SnapshotHeader, visit?: RunVisitor): void {
  const bodyStart = offset + SNAPSHOT_HEADER_SIZE;
  const bodyEnd = offset + h.length - SNAPSHOT_TRAILER_SIZE;
  const compressed = (h.flags & FLAG_COMPRESSED) !== 0;
  let r: ChunkReader;
  if (compressed) {
    let body: Uint8Array;
    try {
      body = inflateBody(src.read(bodyStart, bodyEnd - bodyStart), maxBodyLength(h), h.flags);
    } catch (e) {
      throw new JournalFormatError(`bad snapshot body: ${(e as Error).message}`, bodyStart, h.txid);
    }
    r = new ChunkReader(memorySource(body), 0, body.length);
  } else {
    r = new ChunkReader(src, bodyStart, bodyEnd);
  }
  // Positions in a compressed body are inside the inflated bytes: name the body's start instead.
  const fail = (what: string): never => {
    const where = compressed ? `${what} (in the inflated body)` : what;
    throw new JournalFormatError(`bad snapshot body: ${where}`, compressed ? bodyStart : r.pos, h.txid);
  };
  let lastPgno = 0;
  for (let p = 0; p < h.patchCount; p++) {
    if (r.remaining < PATCH_HEADER_SIZE) fail(`body ends before patch ${p + 1} of ${h.patchCount}`);
    const ph = r.take(PATCH_HEADER_SIZE);
    const pgno = ph[0]! | (ph[1]! << 8) | (ph[2]! << 16) | (ph[3]! * 0x1000000);
    const runCount = ph[4]! | (ph[5]! << 8);
    if (pgno <= lastPgno) fail(`page ${pgno} after page ${lastPgno}`);
    if (pgno > h.dbPages) fail(`page ${pgno} past the database end (${h.dbPages} pages)`);
    lastPgno = pgno;
    if (runCount === 0) {
      if (r.remaining < h.pageSize) fail(`page ${pgno} is cut short`);
      const at = r.pos;
      const page = r.take(h.pageSize);
      visit?.(pgno, 0, page, at);
      continue;
    }
    let lastEnd = 0;
    for (let k = 0; k < runCount; k++) {
      if (r.remaining < RUN_HEADER_SIZE) fail(`page ${pgno} run ${k + 1} is cut short`);
      const rh = r.take(RUN_HEADER_SIZE);
      const start = rh[0]! | (rh[1]! << 8);
      const len = (rh[2]! | (rh[3]! << 8)) + 1;
      if (start < lastEnd) fail(`page ${pgno} run at ${start} overlaps or is out of order`);
      if (start + len > h.pageSize) fail(`page ${pgno} run at ${start} of ${len} bytes passes the page end`);
      if (r.remaining < len) fail(`page ${pgno} run at ${start} is cut short`);
      lastEnd = start + len;
      const at = r.pos;
      const bytes = r.take(len);
      visit?.(pgno, start, bytes, at);
    }
  }
  if (r.remaining !== 0) fail(`${r.remaining} bytes after the last patch`);
}

/**
 * True for an uncompressed full image whose pages lie at fixed places: every patch a whole page, pages
 * 1..dbPages in order, so page p's bytes start at offset + 64 + (p - 1) × (6 + pageSize) + 6 (readers
 * still check each patch header they use).
 */
export function isPlainImage(h: SnapshotHeader): boolean {
  return (
    (h.flags & FLAG_FULL_IMAGE) !== 0 &&
    (h.flags & FLAG_COMPRESSED) === 0 &&
    h.patchCount === h.dbPages &&
    h.length === SNAPSHOT_HEADER_SIZE + SNAPSHOT_TRAILER_SIZE + h.dbPages * (PATCH_HEADER_SIZE + h.pageSize)
  );
}
