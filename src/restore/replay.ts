/**
 * Replay and restore: apply a journal's snapshots, in order, to build the database as of any snapshot.
 */
import {
  type ByteSource,
  hex,
  JournalReader,
  PositionMismatchError,
  type SnapshotInfo,
  walkPatches,
} from '../format/index.js';
import { databaseChecksum } from '../journal/db-checksum.js';
import type { FileHandle } from '../storage/file-system.js';
import { PageFile } from './page-file.js';

/** Which snapshot to stop at: a txid, or the last one at or before a time (ms since the epoch). */
export type Target = { txid: bigint } | { at: number } | 'latest';

/** What a replay produced. */
export interface ReplayResult {
  /** The last snapshot applied (undefined: the journal holds none before the target). */
  snapshot: SnapshotInfo | undefined;
  /** Snapshots applied. */
  applied: number;
}

/** A target no snapshot matches, with the nearest points that exist. */
export class TargetNotFoundError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TargetNotFoundError';
  }
}

/**
 * Applies the snapshots of `journal` up to `target` to the empty file `out`, verifying every snapshot's
 * checksum first and the database checksum at the end. Throws (having applied nothing past the problem)
 * on corruption or a missing target.
 */
export function replay(journal: ByteSource, out: FileHandle, target: Target = 'latest'): ReplayResult {
  const reader = new JournalReader(journal, { verify: true });
  const pages = new PageFile(out);
  out.truncate(0);
  let last: SnapshotInfo | undefined;
  let applied = 0;
  let first: SnapshotInfo | undefined;
  for (const s of reader.snapshots()) {
    first ??= s;
    if (typeof target === 'object' && 'txid' in target && s.txid > target.txid) break;
    if (typeof target === 'object' && 'at' in target && s.timestamp > target.at) break;
    pages.resize(s.pageSize, s.dbPages);
    walkPatches(journal, s.offset, s, (pgno, offset, bytes) => pages.patch(pgno, offset, bytes));
    last = s;
    applied++;
  }
  pages.flush();
  if (typeof target === 'object' && 'txid' in target && last?.txid !== target.txid) {
    let final = first?.txid;
    for (const s of new JournalReader(journal).snapshots()) final = s.txid;
    const range = first ? `${first.txid}..${final}` : 'none';
    throw new TargetNotFoundError(`no snapshot with txid ${target.txid} (the journal holds txids ${range})`);
  }
  if (typeof target === 'object' && 'at' in target && !last) {
    const when = first ? new Date(first.timestamp).toISOString() : 'none';
    throw new TargetNotFoundError(
      `no snapshot at or before ${new Date(target.at).toISOString()} (the earliest is ${when})`,
    );
  }
  if (last) {
    const sum = databaseChecksum(out, last.pageSize);
    if (sum !== last.postChecksum) {
      throw new PositionMismatchError(
        `replayed database checksum ${hex(sum)} is not snapshot ${last.txid}'s ${hex(last.postChecksum)}`,
      );
    }
  }
  return { snapshot: last, applied };
}
