/**
 * A shared device's recovery at open, around the writer's (src/writer/recovery.ts):
 *
 * 1. before it, a suffix rewrite a crash interrupted (its intent is on disk) is finished: the database
 *    file already holds the final state, the journal and device state are brought to it; or a rebase's
 *    re-apply a crash interrupted (its pin is on disk) is undone: its commits were not fsynced, so the
 *    journal may have lost some (or hold a torn one) while the file holds their write-backs. The journal
 *    is cut back to the pin (the reset's snapshot, fsynced) or to the last re-applied snapshot after it
 *    that checks whole, and the inflight marker set, so that the writer's recovery rebuilds the file from
 *    the journal when it is not (after a redo) the journal's state;
 * 2. after it (the file equals the journal's head), the journal's snapshots after the base are paired
 *    with the pending records. A commit whose record never became durable was not acknowledged: its
 *    snapshots are taken back out (the file goes back to the last paired state, then the journal is cut);
 *    a record whose snapshots are gone is dropped. The journal's tail is then exactly the pending changes.
 */

import type { FileSystem } from '../files/file-system.js';
import { ShadowFile } from '../files/shadow-file.js';
import {
  decodeSnapshotHeader,
  FLAG_OUTSIDE,
  JournalReader,
  type Position,
  SNAPSHOT_HEADER_SIZE,
  type SnapshotInfo,
  walkPatches,
} from '../format/index.js';
import { fileSource } from '../journal/file-source.js';
import type { JournalWriter } from '../journal/journal-writer.js';
import { readSyncedMarker, setSyncedMarker } from '../journal/synced-marker.js';
import { historyPages } from '../timetravel/history-pages.js';
import type { DevicePaths } from './device.js';
import type { PendingQueue } from './pending.js';
import { finishRewrite, readIntent, readReapplyPin } from './suffix.js';

/** Finishes a rebase's rewrite a crash interrupted; true when there was one. */
export function finishInterruptedRewrite(fs: FileSystem, paths: DevicePaths): boolean {
  const intent = readIntent(fs, paths.rebase);
  if (!intent) {
    fs.delete(paths.rebase);
    return false;
  }
  finishRewrite(fs, paths, intent);
  return true;
}

/**
 * Undoes a rebase's re-apply a crash interrupted (see the module comment); true when its pin was there.
 * Every step is idempotent; the pin goes last. A journal that does not hold the pin's snapshot where it
 * says (it was replaced since) is left alone.
 */
export function undoInterruptedReapply(fs: FileSystem, paths: DevicePaths): boolean {
  if (!fs.exists(paths.rebase)) return false;
  const pin = readReapplyPin(fs, paths.rebase);
  if (!pin) return false;
  if (fs.exists(paths.journal) && fs.fileSize(paths.journal) >= pin.end) {
    const j = fs.open(paths.journal);
    try {
      const src = fileSource(j);
      let last: SnapshotInfo | undefined;
      let whole = false;
      try {
        const reader = new JournalReader({ size: () => Math.min(pin.end, src.size()), read: src.read });
        for (const s of reader.snapshots()) last = s;
        whole = reader.end === pin.end && last?.txid === pin.txid && last.postChecksum === pin.checksum;
      } catch {
        whole = false;
      }
      if (whole) {
        // What follows the pin was appended without fsyncs: the snapshots that check whole (every trailer
        // checksum, the chain from the pin's) are kept, the rest is cut (a torn append, or nothing).
        let cut = pin.end;
        let head = pin.txid;
        const next =
          src.size() >= pin.end + SNAPSHOT_HEADER_SIZE
            ? decodeSnapshotHeader(src.read(pin.end, SNAPSHOT_HEADER_SIZE))
            : undefined;
        // (Without a whole header there, the reader would start from the journal's first snapshot.)
        try {
          if (typeof next !== 'object') throw new Error('nothing whole after the pin');
          const reader = new JournalReader(src, { from: pin.end, verify: true });
          let checksum = pin.checksum;
          for (const s of reader.snapshots()) {
            if (s.offset < pin.end) continue;
            if (s.offset !== cut || s.txid !== head + 1n || s.preChecksum !== checksum) break;
            cut = s.offset + s.length;
            head = s.txid;
            checksum = s.postChecksum;
          }
        } catch {
          // damage: the cut stays after the last snapshot that checked
        }
        if (j.size() > cut) {
          j.truncate(cut);
          j.sync();
        }
        // A checkpoint during the re-apply may have moved the marker past the cut: it names a state the
        // journal no longer holds.
        const marker = readSyncedMarker(fs, paths.synced);
        if (marker === 'bad' || (marker !== undefined && marker.txid > head))
          fs.delete(paths.synced, { syncDir: true });
        const existed = fs.exists(paths.inflight);
        const f = fs.open(paths.inflight, { create: true });
        try {
          f.write(new Uint8Array([1]), 0);
          f.sync();
        } finally {
          f.close();
        }
        if (!existed) fs.syncDir(paths.inflight);
      }
    } finally {
      j.close();
    }
  }
  fs.delete(paths.rebase, { syncDir: true });
  return true;
}

/** Pairs the journal's tail with the pending records (see the module comment). */
export function pairPending(
  fs: FileSystem,
  paths: DevicePaths,
  dbPath: string,
  journal: JournalWriter,
  queue: PendingQueue,
  marker: { checkedTxid: bigint; holdsWrites: boolean },
): { droppedRecords: number; droppedSnapshots: number; lostBase?: boolean } {
  const base = queue.base;
  const tail = snapshotsAfter(journal, base);
  if (!tail) {
    // The journal was replaced (lost and started again from the database): the pending changes are in the
    // database but can no longer be told apart from what was synced. Keep the database, start afresh.
    const lost = queue.records.length;
    queue.rewrite(journal.position, []);
    return { droppedRecords: lost, droppedSnapshots: 0, lostBase: true };
  }
  let i = 0;
  const kept = [];
  for (const r of queue.records) {
    const n = Number(r.lastTxid - r.firstTxid) + 1;
    const last = tail[i + n - 1];
    if (tail[i]?.txid !== r.firstTxid || last?.txid !== r.lastTxid || last.postChecksum !== r.postChecksum)
      break;
    kept.push(r);
    i += n;
  }
  const droppedRecords = queue.records.length - kept.length;
  if (droppedRecords > 0) queue.rewrite(base, kept);
  const dropped = tail.slice(i);
  if (dropped.length === 0) return { droppedRecords, droppedSnapshots: 0 };
  if (dropped.some((d) => (d.flags & FLAG_OUTSIDE) !== 0)) {
    // A change another program made, recorded at open: the user's data, never taken back. It stays
    // pending with the snapshots around it; it cannot be merged into a newer state of the hub.
    const last = dropped[dropped.length - 1]!;
    queue.append({
      firstTxid: dropped[0]!.txid,
      lastTxid: last.txid,
      postChecksum: last.postChecksum,
      change: {
        changeset: new Uint8Array(0),
        ddl: { create: [], drop: [] },
        unmergeable:
          "the database was changed by another program (an outside change): it cannot be merged with other devices' changes",
      },
    });
    return { droppedRecords, droppedSnapshots: 0 };
  }
  const to: Position = i === 0 ? base : { txid: tail[i - 1]!.txid, checksum: tail[i - 1]!.postChecksum };
  takeBack(fs, paths, dbPath, journal, dropped, to, tail[i - 1], marker);
  return { droppedRecords, droppedSnapshots: dropped.length };
}

/** The journal's snapshots after `base`, or undefined when it does not hold the base. */
function snapshotsAfter(journal: JournalWriter, base: Position): SnapshotInfo[] | undefined {
  const src = fileSource(journal.handle);
  const end = journal.end;
  const reader = new JournalReader({ size: () => Math.min(end, src.size()), read: src.read });
  let found = reader.header.baseTxid === base.txid && reader.header.baseChecksum === base.checksum;
  const out: SnapshotInfo[] = [];
  for (const s of reader.snapshots()) {
    if (found) out.push(s);
    else if (s.txid === base.txid && s.postChecksum === base.checksum) found = true;
  }
  return found ? out : undefined;
}

/**
 * Takes the snapshots `dropped` (the journal's last ones) back out: the marker goes to `to` first (a crash
 * from here redoes them and this runs again), the pages they changed get `to`'s content, then the journal
 * is cut and the marker set again.
 */
function takeBack(
  fs: FileSystem,
  paths: DevicePaths,
  dbPath: string,
  journal: JournalWriter,
  dropped: SnapshotInfo[],
  to: Position,
  before: SnapshotInfo | undefined,
  marker: { checkedTxid: bigint; holdsWrites: boolean },
): void {
  const extra = { checkedTxid: 0n, holdsWrites: marker.holdsWrites };
  setSyncedMarker(fs, dbPath, paths.synced, to, extra).close();
  const touched = new Set<number>();
  const src = fileSource(journal.handle);
  for (const s of dropped) walkPatches(src, s.offset, s, (pgno) => touched.add(pgno));
  const file = fs.open(dbPath);
  const shadow = new ShadowFile(file, fs, `${paths.spill}-rebase`);
  try {
    if (to.checksum === 0n) {
      shadow.truncate(0);
    } else {
      const { pages, snapshot } = historyPages(fs, paths, to.txid);
      try {
        if (snapshot.postChecksum !== to.checksum)
          throw new Error(`txid ${to.txid} is not the point to go back to`);
        const size = pages.dbPages * pages.pageSize;
        const had = Math.floor(file.size() / pages.pageSize);
        shadow.truncate(Math.min(file.size(), size));
        const page = new Uint8Array(pages.pageSize);
        for (let pgno = 1; pgno <= pages.dbPages; pgno++) {
          if (!touched.has(pgno) && pgno <= had) continue;
          pages.readPage(pgno, page);
          shadow.write(page, (pgno - 1) * pages.pageSize);
        }
      } finally {
        pages.close?.();
      }
    }
    shadow.commit();
    file.sync();
  } finally {
    shadow.discard();
    file.close();
  }
  journal.dropFrom(dropped[0]!, before);
  setSyncedMarker(fs, dbPath, paths.synced, to, extra).close();
}
