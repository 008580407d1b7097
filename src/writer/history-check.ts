/**
 * The writer's background check of its history: after open, every snapshot body not yet known good
 * (the synced marker carries how far the last check got) is read and checked (trailer checksum, patch
 * structure), 4 ms at a time with 16 ms of rest between, so it takes a fifth of the CPU at most. Damage is reported at once
 * (a warning), never built upon silently; the database file itself is not affected by it.
 */

import type { FileSystem } from '../files/file-system.js';
import {
  checkSnapshotChecksum,
  JournalFormatError,
  JournalReader,
  type SnapshotInfo,
  walkPatches,
} from '../format/index.js';
import { openHistory } from '../history/source.js';
import type { JournalPaths } from '../journal/paths.js';

/** What the check found. */
export interface HistoryCheck {
  /** True when every snapshot checked is whole (false also when the check was stopped by close()). */
  ok: boolean;
  /** Every snapshot up to this txid is known good. */
  checkedTxid: bigint;
  /** The first damaged snapshot, when one was found. */
  damage?: { txid: bigint; offset: number; message: string };
  /** Why the check could not read the history (an I/O error: not damage; the next open checks again). */
  error?: string;
  /** The connection was closed before the check ended. */
  stopped?: boolean;
}

/** Milliseconds of checking at a time, and of rest after each (the check takes at most a fifth of the CPU). */
const SLICE_MS = 4;
const REST_MS = 16;

/**
 * Checks the history's snapshots after `fromTxid` up to `upTo` (the head at open: this writer appended
 * what follows) in slices; resolves with the result. Nothing is read when there is nothing to check.
 * `stopped()` ends it early (the connection closed).
 */
export async function checkHistory(
  fs: FileSystem,
  paths: JournalPaths,
  fromTxid: bigint,
  upTo: bigint,
  stopped: () => boolean,
): Promise<HistoryCheck> {
  if (fromTxid >= upTo) return { ok: true, checkedTxid: fromTxid };
  let history: ReturnType<typeof openHistory>;
  try {
    history = openHistory(fs, paths, () => new Error(`${paths.journal} is missing`));
  } catch (e) {
    return failed(e, fromTxid);
  }
  let checked = fromTxid;
  try {
    const snapshots = new JournalReader(history.source, { merged: true }).snapshots();
    for (;;) {
      const until = performance.now() + SLICE_MS;
      let next: IteratorResult<SnapshotInfo>;
      do {
        next = snapshots.next();
        if (next.done || next.value.txid > upTo) return { ok: true, checkedTxid: checked };
        const s = next.value;
        if (s.txid <= fromTxid) continue;
        if (!checkSnapshotChecksum(history.source, s.offset, s)) {
          throw new JournalFormatError('snapshot checksum mismatch', s.offset, s.txid);
        }
        walkPatches(history.source, s.offset, s);
        checked = s.txid;
      } while (performance.now() < until);
      await new Promise((resolve) => setTimeout(resolve, REST_MS));
      if (stopped()) return { ok: false, checkedTxid: checked, stopped: true };
    }
  } catch (e) {
    return failed(e, checked);
  } finally {
    history.close();
  }
}

/** The result for an error: damage when the journal's format says so, else a read that failed. */
function failed(e: unknown, checked: bigint): HistoryCheck {
  if (e instanceof JournalFormatError) {
    const damage = { txid: e.txid ?? checked + 1n, offset: e.offset, message: e.message };
    return { ok: false, checkedTxid: checked, damage };
  }
  return { ok: false, checkedTxid: checked, error: (e as Error).message };
}
