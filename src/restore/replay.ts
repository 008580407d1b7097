/**
 * Replay and restore: apply a journal's snapshots, in order, to build the database as of any snapshot.
 */

import type { FileHandle } from '../files/file-system.js';
import {
  type ByteSource,
  checkSnapshotChecksum,
  createXxh64,
  hex64,
  isPlainImage,
  JournalFormatError,
  JournalReader,
  PATCH_HEADER_SIZE,
  PositionMismatchError,
  SNAPSHOT_HEADER_SIZE,
  SNAPSHOT_TRAILER_SIZE,
  type SnapshotInfo,
  walkPatches,
} from '../format/index.js';
import { checkpointBefore, findPoint, type Target } from '../history/points.js';
import { PageFile } from '../journal/page-file.js';

export { type Target, TargetNotFoundError } from '../history/points.js';

/** What a replay produced. */
export interface ReplayResult {
  /** The last snapshot applied (undefined: the journal holds none before the target). */
  snapshot: SnapshotInfo | undefined;
  /** Snapshots applied. */
  applied: number;
}

/**
 * Applies the snapshots of `journal` up to `target` to the empty file `out`, verifying every snapshot's
 * checksum first and the database checksum at the end. Throws (having applied nothing past the problem)
 * on corruption or a missing target.
 */
/** Called as snapshots are applied: `done` of `total` (for a progress line; must not throw). */
export type Progress = (done: number, total: number) => void;

export function replay(
  journal: ByteSource,
  out: FileHandle,
  target: Target = 'latest',
  onProgress?: Progress,
): ReplayResult {
  const all = [...new JournalReader(journal, { merged: true }).snapshots()];
  const index = findPoint(all, target);
  const pages = new PageFile(out);
  out.truncate(0);
  // Start at the last full image (checkpoint) at or before the target: nothing before it matters.
  const first = index < 0 ? 0 : checkpointBefore(all, index);
  // The checkpoint replay starts from (nothing cached yet): its pages go to the file as they lie.
  applySnapshots(journal, all.slice(first, index + 1), pages, true, onProgress);
  const last = index < 0 ? undefined : all[index];
  if (last) {
    const sum = pages.checksum();
    if (sum !== last.postChecksum) {
      throw new PositionMismatchError(
        `replayed database checksum ${hex64(sum)} is not snapshot ${last.txid}'s ${hex64(last.postChecksum)}`,
      );
    }
  }
  return { snapshot: last, applied: index < 0 ? 0 : index - first + 1 };
}

/**
 * Redo: applies the snapshots after `from` (a txid and its database checksum) to `out`, a database file
 * that holds that state or a later one of the same history, possibly torn between later ones. Each page
 * a snapshot changes is patched again; bytes no snapshot after `from` changed are the same in every
 * state since. The caller checks the result's checksum. Throws when `from` is not a point of `journal`.
 * `fromOffset`: where `from`'s snapshot starts in `journal`, when known (nothing before it is read).
 */
export function redo(
  journal: ByteSource,
  out: FileHandle,
  from: { txid: bigint; checksum: bigint },
  fromOffset?: number,
): ReplayResult {
  const all = [...new JournalReader(journal, { merged: true, from: fromOffset }).snapshots()];
  const at = from.txid === 0n ? -1 : all.findIndex((s) => s.txid === from.txid);
  if (at < 0 && from.txid !== 0n) {
    throw new PositionMismatchError(`txid ${from.txid} is not a point of the journal`);
  }
  if (at >= 0 && all[at]!.postChecksum !== from.checksum) {
    throw new PositionMismatchError(`txid ${from.txid}'s checksum is not ${hex64(from.checksum)}`);
  }
  applySnapshots(journal, all.slice(at + 1), new PageFile(out), false);
  return { snapshot: all[all.length - 1], applied: all.length - at - 1 };
}

/**
 * Where a redo for `marker` (the point a database file was durable at) starts: the marker itself, or the
 * latest point before it when compaction merged it away (redoing more is safe); undefined when the
 * history has the marker's txid with another checksum (another history).
 */
export function redoPoint(
  journal: ByteSource,
  marker: { txid: bigint; checksum: bigint },
): { txid: bigint; checksum: bigint } | undefined {
  let from = { txid: 0n, checksum: 0n };
  for (const s of new JournalReader(journal, { merged: true }).snapshots()) {
    if (s.txid > marker.txid) break;
    if (s.txid === marker.txid && s.postChecksum !== marker.checksum) return undefined;
    from = { txid: s.txid, checksum: s.postChecksum };
  }
  return from;
}

/**
 * Applies `snaps` in order to `pages` and flushes it. Each body is read once: hashed as it is applied,
 * and its checksum compared at the end; a bad snapshot stops it (the caller throws the file away or
 * rebuilds). With `imageFirst`, a plain image first in line is copied in runs (see writeImage).
 */
function applySnapshots(
  journal: ByteSource,
  snaps: SnapshotInfo[],
  pages: PageFile,
  imageFirst: boolean,
  onProgress?: Progress,
): void {
  onProgress?.(0, snaps.length);
  for (const [i, s] of snaps.entries()) {
    pages.resize(s.pageSize, s.dbPages);
    const src = hashingSource(journal, s);
    if (i === 0 && imageFirst && isPlainImage(s)) writeImage(src, s, pages);
    else walkPatches(src, s.offset, s, (pgno, offset, bytes) => pages.patch(pgno, offset, bytes));
    if (!src.matches()) throw new JournalFormatError('snapshot checksum mismatch', s.offset, s.txid);
    onProgress?.(i + 1, snaps.length);
  }
  pages.flush();
}

/**
 * The journal, hashing the body of snapshot `s` as it is read front to back (re-reads of bytes already
 * hashed are allowed, skipping ahead is not); `matches()` then says whether body ‖ header hash to the
 * snapshot's trailer.
 */
export function hashingSource(journal: ByteSource, s: SnapshotInfo): ByteSource & { matches(): boolean } {
  const hash = createXxh64();
  const bodyEnd = s.offset + s.length - SNAPSHOT_TRAILER_SIZE;
  let hashed = s.offset + SNAPSHOT_HEADER_SIZE;
  return {
    size: () => journal.size(),
    read(offset, length) {
      const bytes = journal.read(offset, length);
      const end = Math.min(offset + length, bodyEnd);
      if (end > hashed && offset <= hashed) {
        hash.update(bytes.subarray(hashed - offset, end - offset));
        hashed = end;
      }
      return bytes;
    },
    matches() {
      if (hashed !== bodyEnd) return checkSnapshotChecksum(journal, s.offset, s);
      hash.update(journal.read(s.offset, SNAPSHOT_HEADER_SIZE));
      const t = journal.read(bodyEnd, SNAPSHOT_TRAILER_SIZE);
      return new DataView(t.buffer, t.byteOffset, 8).getBigUint64(0, true) === hash.digest();
    },
  };
}

/** Copies the pages of a plain image to the file in runs of up to 1 MiB, checking each patch header. */
function writeImage(journal: ByteSource, s: SnapshotInfo, out: PageFile): void {
  const size = s.pageSize;
  const per = Math.max(1, Math.floor((1 << 20) / size));
  const buf = new Uint8Array(per * size);
  const body = s.offset + SNAPSHOT_HEADER_SIZE;
  for (let first = 1; first <= s.dbPages; first += per) {
    const n = Math.min(per, s.dbPages - first + 1);
    const at = body + (first - 1) * (PATCH_HEADER_SIZE + size);
    const bytes = journal.read(at, n * (PATCH_HEADER_SIZE + size));
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    for (let k = 0; k < n; k++) {
      const h = k * (PATCH_HEADER_SIZE + size);
      if (view.getUint32(h, true) !== first + k || view.getUint16(h + 4, true) !== 0) {
        throw new JournalFormatError(
          `bad full image: page ${first + k} is not where it belongs`,
          at + h,
          s.txid,
        );
      }
      buf.set(bytes.subarray(h + PATCH_HEADER_SIZE, h + PATCH_HEADER_SIZE + size), k * size);
    }
    out.writePages(first, buf.subarray(0, n * size));
  }
}
