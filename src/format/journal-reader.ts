/**
 * Reads a journal: the file header, then each snapshot header in turn, checking the chain (txid, time,
 * checksums). Finds a torn tail and tells it apart from corruption (docs/FORMAT.md, "Validation").
 */
import type { ByteSource } from './byte-source.js';
import { hex64 } from './bytes.js';
import { FILE_HEADER_SIZE, FLAG_MERGED, SNAPSHOT_HEADER_SIZE, SNAPSHOT_TRAILER_SIZE } from './constants.js';
import { JournalFormatError } from './errors.js';
import { decodeFileHeader, type FileHeader } from './file-header.js';
import { createXxh64 } from './hash.js';
import { walkPatches } from './snapshot-body.js';
import { decodeSnapshotHeader, type SnapshotHeader } from './snapshot-header.js';

/** A snapshot header and where it is in the journal. */
export interface SnapshotInfo extends SnapshotHeader {
  offset: number;
}

/** Options of JournalReader. */
export interface ReadOptions {
  /** Check every snapshot's trailer checksum and body structure, not just the last one's. */
  verify?: boolean;
  /**
   * Accept merged snapshots (flags bit 2), whose txid jumps past the previous one + 1: a compacted history
   * file, or a history read together with its journal. Live journals never hold them.
   */
  merged?: boolean;
  /**
   * The file is known whole (a compacted history: written to a temporary file, fsynced, renamed): its
   * last snapshot cannot be a torn tail, so it is not read through to tell (a history ending in a large
   * full image would cost reading all of it at every open). Bodies are checked when applied.
   */
  whole?: boolean;
  /**
   * Start at the snapshot at this offset instead of the first one, taking its txid, pre-checksum and time
   * as where the chain stands (nothing before it is read): a point known from elsewhere, such as the
   * synced marker. The caller checks that the first snapshot yielded is the one it expects.
   */
  from?: number;
}

/**
 * Iterates the snapshots of a journal. After `snapshots()` is exhausted, `end` is the offset after the
 * last valid snapshot and `tornBytes` the length of a torn tail (0 when the journal ends cleanly).
 */
export class JournalReader {
  readonly header: FileHeader;
  end = FILE_HEADER_SIZE;
  tornBytes = 0;

  constructor(
    private readonly src: ByteSource,
    private readonly options: ReadOptions = {},
  ) {
    const size = src.size();
    this.header = decodeFileHeader(src.read(0, Math.min(size, FILE_HEADER_SIZE)));
  }

  /** Yields each valid snapshot in order; throws JournalFormatError on corruption. */
  *snapshots(): Generator<SnapshotInfo> {
    const size = this.src.size();
    let offset = FILE_HEADER_SIZE;
    let txid = this.header.baseTxid;
    let checksum = this.header.baseChecksum;
    let time = Number.NEGATIVE_INFINITY;
    this.peeked = undefined;
    const from = this.options.from;
    if (from !== undefined && from > FILE_HEADER_SIZE && from + SNAPSHOT_HEADER_SIZE <= size) {
      const h = this.headerAt(from);
      if (typeof h === 'object' && (h.flags & FLAG_MERGED) === 0) {
        offset = from;
        txid = h.txid - 1n;
        checksum = h.preChecksum;
        time = h.timestamp;
      }
    }
    this.end = offset;
    while (offset < size) {
      const expect = txid + 1n;
      const bad = (why: string): JournalFormatError => new JournalFormatError(why, offset, expect);
      const h = size - offset >= SNAPSHOT_HEADER_SIZE ? this.headerAt(offset) : undefined;
      if (typeof h === 'string') throw bad(h);
      if (
        h === undefined ||
        offset + h.length > size ||
        !this.intact(offset, h, this.lastAt(offset + h.length, size))
      ) {
        // Not a whole snapshot: a torn tail if nothing valid follows, corruption otherwise.
        const next = this.findHeaderAfter(offset + 1, size);
        if (next >= 0) {
          throw bad(`snapshot is damaged (a valid snapshot follows at byte ${next}); the journal is corrupt`);
        }
        this.tornBytes = size - offset;
        return;
      }
      if ((h.flags & FLAG_MERGED) !== 0) {
        if (!this.options.merged) throw bad('merged snapshot (flags bit 2) in a live journal');
        if (h.txid <= expect) throw bad(`merged snapshot has txid ${h.txid}: it must stand for 2 or more`);
      } else if (h.txid !== expect) throw bad(`snapshot has txid ${h.txid}`);
      if (h.timestamp < time) throw bad('snapshot timestamp goes backwards');
      if (h.preChecksum !== checksum) {
        throw bad(
          `snapshot's base checksum ${hex64(h.preChecksum)} is not the previous state ${hex64(checksum)}`,
        );
      }
      yield { ...h, offset };
      txid = h.txid;
      checksum = h.postChecksum;
      time = h.timestamp;
      offset += h.length;
      this.end = offset;
    }
  }

  /**
   * True when no snapshot header starts at `next`: the snapshot before it is the last one, even with zeros
   * (or a torn append) after it. After a power loss its header may be on disk without its body (pages
   * reach the disk in any order), so the last snapshot's trailer is always checked.
   */
  private lastAt(next: number, size: number): boolean {
    if (next + SNAPSHOT_HEADER_SIZE > size) return true;
    return this.headerAt(next) === undefined;
  }

  /** The header at `offset`, decoded (a valid one `lastAt` found is kept for the next step of the scan). */
  private headerAt(offset: number): ReturnType<typeof decodeSnapshotHeader> {
    const seen = this.peeked;
    this.peeked = undefined;
    if (seen?.offset === offset) return seen.h;
    const h = decodeSnapshotHeader(this.src.read(offset, SNAPSHOT_HEADER_SIZE));
    if (typeof h === 'object') this.peeked = { offset, h };
    return h;
  }

  private peeked: { offset: number; h: SnapshotHeader } | undefined;

  /** Checks the trailer checksum and body of the snapshot when verifying, or when it is the last one. */
  private intact(offset: number, h: SnapshotHeader, last: boolean): boolean {
    if (!this.options.verify && (!last || this.options.whole)) return true;
    if (!checkSnapshotChecksum(this.src, offset, h)) {
      if (last) return false;
      throw new JournalFormatError('snapshot checksum mismatch', offset, h.txid);
    }
    walkPatches(this.src, offset, h);
    return true;
  }

  /** Offset of the first valid-looking snapshot header at or after `from`, or -1. */
  private findHeaderAfter(from: number, size: number): number {
    const step = 1 << 20;
    for (let base = from; base < size; base += step) {
      const len = Math.min(step + SNAPSHOT_HEADER_SIZE, size - base);
      const bytes = this.src.read(base, len);
      for (let i = 0; i + SNAPSHOT_HEADER_SIZE <= bytes.length && i < step; i++) {
        if (bytes[i] !== 0x53 || bytes[i + 1] !== 0x4e || bytes[i + 2] !== 0x41 || bytes[i + 3] !== 0x50)
          continue;
        const h = decodeSnapshotHeader(bytes.subarray(i, i + SNAPSHOT_HEADER_SIZE));
        if (h !== undefined) return base + i;
      }
    }
    return -1;
  }
}

/** True when the snapshot's trailer checksum matches XXH64(body ‖ header). Reads the body in chunks. */
export function checkSnapshotChecksum(src: ByteSource, offset: number, h: SnapshotHeader): boolean {
  const hash = createXxh64();
  const bodyEnd = offset + h.length - SNAPSHOT_TRAILER_SIZE;
  for (let p = offset + SNAPSHOT_HEADER_SIZE; p < bodyEnd; ) {
    const n = Math.min(1 << 20, bodyEnd - p);
    hash.update(src.read(p, n));
    p += n;
  }
  hash.update(src.read(offset, SNAPSHOT_HEADER_SIZE));
  const t = src.read(bodyEnd, SNAPSHOT_TRAILER_SIZE);
  const stored = new DataView(t.buffer, t.byteOffset, 8).getBigUint64(0, true);
  return stored === hash.digest();
}
