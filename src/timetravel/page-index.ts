/**
 * The page index of a time-travel view: for each page of the database as of a target snapshot, where in
 * the journal its bytes are. Built in one pass over the snapshots up to the target (patch structure only:
 * nothing is written); a page is then materialized on demand by applying its runs, oldest first, from the
 * newest whole-page write (or the page's creation) on.
 */

import {
  BODY_CODEC_FLAGS,
  type ByteSource,
  FLAG_COMPRESSED,
  FLAG_FULL_IMAGE,
  inflateBody,
  isPlainImage,
  JournalFormatError,
  JournalReader,
  maxBodyLength,
  memorySource,
  PATCH_HEADER_SIZE,
  SNAPSHOT_HEADER_SIZE,
  SNAPSHOT_TRAILER_SIZE,
  type SnapshotInfo,
  walkPatches,
} from '../format/index.js';
import {
  checkpointBefore,
  checkTarget,
  describePoint,
  findPoint,
  type PointTarget,
  TargetNotFoundError,
} from '../history/points.js';

/** Bytes of inflated bodies a view keeps (a page's runs may come from many snapshots). */
const INFLATED_BUDGET = 256 << 20;

const FRAME = SNAPSHOT_HEADER_SIZE + SNAPSHOT_TRAILER_SIZE;

/**
 * When to look: `{ txid }` or `{ at }` (a Date or ms: the last snapshot at or before it), as restoreDatabase's
 * `target`; a bare bigint or Date says the same.
 */
export type ViewTarget = PointTarget | bigint | Date;

/** A target outside what the journal holds; the message names the restorable range. */
export class ViewRangeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ViewRangeError';
  }
}

/** Runs of one page: [snapshot index, position, page offset, length] per run, oldest first. */
type Runs = number[];

/** Where each page of the database as of one snapshot comes from. */
export class PageIndex {
  private readonly pages = new Map<number, Runs>();
  private readonly snapshots: SnapshotInfo[] = [];
  private readonly inflated = new Map<number, Uint8Array>();
  private inflatedBytes = 0;
  /**
   * An uncompressed full image the index starts from (a checkpoint): its pages are found by arithmetic,
   * not by reading it, so opening a view costs the snapshots after it only. Pages past `limit` (the
   * smallest size since) no longer come from it.
   */
  private image: { at: number; limit: number } | undefined;
  /** The snapshot the view shows. */
  readonly target: SnapshotInfo;

  constructor(
    private readonly journal: ByteSource,
    at: ViewTarget,
  ) {
    const all = [...new JournalReader(journal, { merged: true }).snapshots()];
    const index = findTarget(all, at);
    this.target = all[index]!;
    // A full image holds every page: nothing before the last one at or before the target matters.
    const start = checkpointBefore(all, index);
    const first = all[start]!;
    if (first.preChecksum !== 0n && (first.flags & FLAG_FULL_IMAGE) === 0) {
      throw new ViewRangeError(
        `the journal starts at txid ${first.txid} from a database it does not hold (no full image): restore a file instead`,
      );
    }
    let pageSize = 0;
    let dbPages = 0;
    for (let i = 0; i <= index; i++) this.snapshots.push(all[i]!);
    for (let i = start; i <= index; i++) {
      const s = all[i]!;
      if (s.pageSize !== pageSize) this.pages.clear();
      else if (s.dbPages < dbPages)
        for (const p of this.pages.keys()) if (p > s.dbPages) this.pages.delete(p);
      pageSize = s.pageSize;
      dbPages = s.dbPages;
      if (this.image && s.dbPages < this.image.limit) this.image.limit = s.dbPages;
      const visit = (pgno: number, offset: number, bytes: Uint8Array, pos: number): void => {
        const whole = offset === 0 && bytes.length === pageSize;
        let runs = this.pages.get(pgno);
        if (!runs || whole) {
          runs = [];
          this.pages.set(pgno, runs);
          // A page of the starting image that this snapshot patches: the image's page comes first.
          if (!whole && this.image && pgno <= this.image.limit) runs.push(-1, 0, 0, pageSize);
        }
        runs.push(i, pos, offset, bytes.length);
      };
      if (i === start && isPlainImage(s)) {
        this.image = { at: s.offset + SNAPSHOT_HEADER_SIZE, limit: s.dbPages };
      } else if ((s.flags & FLAG_COMPRESSED) === 0) {
        walkPatches(journal, s.offset, s, visit);
      } else {
        // Walk the inflated body in memory (positions are then offsets in it) and keep it for reads.
        const body = this.body(i, s);
        const plain = { ...s, flags: s.flags & ~BODY_CODEC_FLAGS, length: body.length + FRAME };
        walkPatches(memorySource(body), -SNAPSHOT_HEADER_SIZE, plain, visit);
      }
    }
  }

  get pageSize(): number {
    return this.target.pageSize;
  }

  get dbPages(): number {
    return this.target.dbPages;
  }

  /** Builds page `pgno` (1-based) as of the target into `out` (pageSize bytes). */
  readPage(pgno: number, out: Uint8Array): void {
    out.fill(0);
    const runs = this.pages.get(pgno);
    if (!runs) {
      if (this.image && pgno <= this.image.limit) this.imagePage(pgno, out);
      return;
    }
    for (let k = 0; k < runs.length; k += 4) {
      if (runs[k] === -1) {
        this.imagePage(pgno, out);
        continue;
      }
      const s = this.snapshots[runs[k]!]!;
      const pos = runs[k + 1]!;
      const len = runs[k + 3]!;
      const bytes =
        (s.flags & FLAG_COMPRESSED) !== 0
          ? this.body(runs[k]!, s).subarray(pos, pos + len)
          : this.journal.read(pos, len);
      out.set(bytes, runs[k + 2]!);
    }
  }

  /** Page `pgno` of the starting image (its patch header checked) into `out`. */
  private imagePage(pgno: number, out: Uint8Array): void {
    const size = this.pageSize;
    const at = this.image!.at + (pgno - 1) * (PATCH_HEADER_SIZE + size);
    const bytes = this.journal.read(at, PATCH_HEADER_SIZE + size);
    const v = new DataView(bytes.buffer, bytes.byteOffset, PATCH_HEADER_SIZE);
    if (v.getUint32(0, true) !== pgno || v.getUint16(4, true) !== 0) {
      throw new JournalFormatError(`bad full image: page ${pgno} is not where it belongs`, at);
    }
    out.set(bytes.subarray(PATCH_HEADER_SIZE), 0);
  }

  /** The inflated body of snapshot `i`, from a small cache. */
  private body(i: number, s: SnapshotInfo): Uint8Array {
    let b = this.inflated.get(i);
    if (b) {
      this.inflated.delete(i);
      this.inflated.set(i, b);
      return b;
    }
    const start = s.offset + SNAPSHOT_HEADER_SIZE;
    try {
      b = inflateBody(this.journal.read(start, s.length - FRAME), maxBodyLength(s), s.flags);
    } catch (e) {
      throw new JournalFormatError(`bad snapshot body: ${(e as Error).message}`, start, s.txid);
    }
    while (this.inflatedBytes + b.length > INFLATED_BUDGET && this.inflated.size > 0) {
      const [oldest, old] = this.inflated.entries().next().value!;
      this.inflated.delete(oldest);
      this.inflatedBytes -= old.length;
    }
    this.inflated.set(i, b);
    this.inflatedBytes += b.length;
    return b;
  }
}

/** Index in `all` of the snapshot `at` names; throws ViewRangeError naming the nearest points otherwise. */

function findTarget(all: SnapshotInfo[], at: ViewTarget): number {
  if (all.length === 0) throw new ViewRangeError('the journal holds no snapshots: nothing to view');
  const last = all[all.length - 1]!;
  const target = checkTarget(at);
  if (target !== 'latest' && 'at' in target && target.at > last.timestamp) {
    throw new ViewRangeError(
      `${new Date(target.at).toISOString()} is after the last snapshot: the restorable range is ${describePoint(all[0]!)} .. ${describePoint(last)}`,
    );
  }
  try {
    return findPoint(all, target);
  } catch (e) {
    if (e instanceof TargetNotFoundError) throw new ViewRangeError(e.message);
    throw e;
  }
}
