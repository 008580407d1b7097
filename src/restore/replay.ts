/**
 * Replay and restore: apply a journal's snapshots, in order, to build the database as of any snapshot.
 */

import {
  type ByteSource,
  checkSnapshotChecksum,
  hex,
  JournalFormatError,
  JournalReader,
  PositionMismatchError,
  type SnapshotInfo,
  walkPatches,
} from '../format/index.js';
import { checkpointBefore, findPoint, type Target } from '../history/points.js';
import { databaseChecksum } from '../journal/db-checksum.js';
import type { FileHandle } from '../storage/file-system.js';
import { PageFile } from './page-file.js';

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
export function replay(journal: ByteSource, out: FileHandle, target: Target = 'latest'): ReplayResult {
  const all = [...new JournalReader(journal, { merged: true }).snapshots()];
  const index = findPoint(all, target);
  const pages = new PageFile(out);
  out.truncate(0);
  // Start at the last full image (checkpoint) at or before the target: nothing before it matters.
  const first = index < 0 ? 0 : checkpointBefore(all, index);
  for (let i = first; i <= index; i++) {
    const s = all[i]!;
    if (!checkSnapshotChecksum(journal, s.offset, s)) {
      throw new JournalFormatError('snapshot checksum mismatch', s.offset, s.txid);
    }
    pages.resize(s.pageSize, s.dbPages);
    walkPatches(journal, s.offset, s, (pgno, offset, bytes) => pages.patch(pgno, offset, bytes));
  }
  pages.flush();
  const last = index < 0 ? undefined : all[index];
  if (last) {
    const sum = databaseChecksum(out, last.pageSize);
    if (sum !== last.postChecksum) {
      throw new PositionMismatchError(
        `replayed database checksum ${hex(sum)} is not snapshot ${last.txid}'s ${hex(last.postChecksum)}`,
      );
    }
  }
  return { snapshot: last, applied: index < 0 ? 0 : index - first + 1 };
}
