/**
 * Compaction (docs/ARCHITECTURE.md, "History"): rewrites a database's restorable history so that it keeps
 * only the points a retention policy names, moves the live journal's older snapshots into the compacted
 * `history` file, and puts full images (checkpoints) in it so that a restore never replays more than a
 * bounded amount. Crash-safe: everything new is written to temporary files and fsynced, then renamed over
 * the old files (history first, then journal), and readers join the two files whatever state a crash
 * left (docs/FORMAT.md, "History"). Runtime-neutral.
 */

import type { FileHandle, FileSystem } from '../files/file-system.js';
import {
  FILE_HEADER_SIZE,
  FLAG_FULL_IMAGE,
  FLAG_MERGED,
  hex64,
  JournalReader,
  PositionMismatchError,
  type SnapshotBodyWriter,
  type SnapshotInfo,
  walkPatches,
} from '../format/index.js';
import { PageFile } from '../journal/page-file.js';
import { HistoryWriter } from './history-writer.js';
import { type RetentionPolicy, retainedPoints } from './policy.js';
import { type HistoryPaths, openHistory } from './source.js';

/** The files compaction works on; temporary files go beside them. */
export interface CompactPaths extends HistoryPaths {
  /** Scratch database compaction rebuilds states in (deleted afterwards). */
  scratch: string;
}

export interface CompactOptions {
  policy: RetentionPolicy;
  /** The time retention ages are measured from (ms; default now). */
  now?: number;
  /**
   * The last txid moved from the live journal into the history (default: all but the journal's last
   * snapshot, which stays so a writer's crash recovery can find it). Snapshots after it stay as they are.
   */
  upTo?: bigint;
  /** A checkpoint (full image) whenever the bytes since the last one pass this × the database size. */
  checkpointRatio?: number;
  /** Plan only: write nothing. */
  dryRun?: boolean;
  /** Called as snapshots are merged into the history: `done` of `total` (for a progress line). */
  onProgress?: (done: number, total: number) => void;
}

/** What a compaction did (or, with dryRun, would do). */
export interface CompactResult {
  /** Restorable points before and after. */
  pointsBefore: number;
  pointsAfter: number;
  /** Transactions no longer restorable on their own (merged into a later point, or dropped). */
  pointsDropped: number;
  /** The new history's range: its first and last txid (the live journal continues after the last). */
  first?: bigint;
  upTo?: bigint;
  /** Bytes of history + journal before and after (after: 0 when dryRun). */
  bytesBefore: number;
  bytesAfter: number;
  checkpoints: number;
  /** Nothing to do: the history is already what the policy asks for. */
  unchanged: boolean;
}

/** Bytes of old pages a merge keeps in memory; past it, pages are stored whole. */
const OLD_PAGE_BUDGET = 64 << 20;

/**
 * Phase 1: writes the new history to `${paths.history}.tmp` (fsynced). Reads only snapshots up to the
 * chosen txid, which no writer changes, so it may run while the writer appends. Returns the result and
 * the txid and checksum the new history ends at.
 */
export function buildHistory(
  fs: FileSystem,
  paths: CompactPaths,
  options: CompactOptions,
  missing: () => Error,
): CompactResult & { end?: { txid: bigint; checksum: bigint } } {
  const now = options.now ?? Date.now();
  const ratio = options.checkpointRatio ?? 0.5;
  const bytesBefore = fs.fileSize(paths.history) + fs.fileSize(paths.journal);
  const hs = openHistory(fs, paths, missing);
  try {
    const reader = new JournalReader(hs.source, { merged: true, verify: true });
    const all = [...reader.snapshots()];
    let upTo = options.upTo ?? (all.length > 1 ? all[all.length - 2]!.txid : hs.historyEnd);
    if (upTo < hs.historyEnd) upTo = hs.historyEnd;
    if (all.length > 0 && upTo > all[all.length - 1]!.txid) upTo = all[all.length - 1]!.txid;
    const moving = all.filter((s) => s.txid <= upTo);
    const keep = retainedPoints(moving, options.policy, now);
    const kept = keep.filter(Boolean).length;
    const result: CompactResult = {
      pointsBefore: all.length,
      pointsAfter: all.length - moving.length + kept,
      pointsDropped: moving.length - kept,
      first: moving.find((_, i) => keep[i])?.txid,
      upTo: moving.length > 0 ? upTo : undefined,
      bytesBefore,
      bytesAfter: 0,
      checkpoints: 0,
      unchanged: moving.length === 0 || (kept === moving.length && upTo === hs.historyEnd),
    };
    if (options.dryRun || result.unchanged) return result;
    if (moving[0]!.preChecksum !== 0n && (moving[0]!.flags & FLAG_FULL_IMAGE) === 0) {
      throw new Error(
        `the history starts at txid ${moving[0]!.txid} from a database it does not hold (no full image): it cannot be compacted`,
      );
    }
    const tmp = `${paths.history}.tmp`;
    fs.delete(tmp);
    fs.delete(paths.scratch);
    const out = fs.open(tmp, { create: true });
    const scratchFile = fs.open(paths.scratch, { create: true });
    try {
      const writer = new HistoryWriter(out, { ...reader.header, createdAt: now });
      const state = new Merger(hs.source, scratchFile);
      let sinceImage = Number.POSITIVE_INFINITY;
      let prev: SnapshotInfo | undefined;
      let start = 0;
      options.onProgress?.(0, moving.length);
      for (let i = 0; i < moving.length; i++) {
        if (!keep[i]) continue;
        options.onProgress?.(i + 1, moving.length);
        const range = moving.slice(start, i + 1);
        const s = moving[i]!;
        const pre = prev?.postChecksum ?? reader.header.baseChecksum;
        const merged = range.length > 1 || (s.flags & FLAG_MERGED) !== 0 ? FLAG_MERGED : 0;
        const dbBytes = s.dbPages * s.pageSize;
        const image =
          sinceImage > ratio * dbBytes || range.some((r) => r.pageSize !== (prev ?? range[0]!).pageSize);
        if (image || prev === undefined) {
          state.apply(range);
          const fields = { ...s, preChecksum: pre, commitTag: 0, flags: merged };
          writer.image(state.flushed(), fields);
          result.checkpoints++;
          sinceImage = 0;
        } else if (range.length === 1) {
          writer.copy(hs.source.read(s.offset, s.length));
          state.apply(range);
          sinceImage = (s.flags & FLAG_FULL_IMAGE) !== 0 ? 0 : sinceImage + s.length;
        } else {
          const fields = { ...s, preChecksum: pre, commitTag: 0, flags: merged };
          sinceImage += writer.patches(fields, s.pageSize, (body) => state.merge(prev!, range, body));
        }
        prev = s;
        start = i + 1;
      }
      const sum = state.checksum();
      if (sum !== prev!.postChecksum) {
        throw new PositionMismatchError(
          `compaction rebuilt txid ${prev!.txid} with checksum ${hex64(sum)}, not ${hex64(prev!.postChecksum)}: nothing was changed`,
        );
      }
      out.sync();
      return { ...result, end: { txid: prev!.txid, checksum: prev!.postChecksum } };
    } catch (e) {
      out.close();
      fs.delete(tmp);
      throw e;
    } finally {
      try {
        out.close();
      } catch {}
      scratchFile.close();
      fs.delete(paths.scratch);
    }
  } finally {
    hs.close();
  }
}

/**
 * Phase 2 for a journal no one is writing: puts the new history in place, then rewrites the journal to
 * start after the history's end. Returns the bytes of history + journal afterwards.
 */
export function installHistory(
  fs: FileSystem,
  paths: CompactPaths,
  end: { txid: bigint; checksum: bigint },
): number {
  fs.rename(`${paths.history}.tmp`, paths.history);
  fs.syncDir(paths.history);
  rebaseJournalFile(fs, paths.journal, end);
  return fs.fileSize(paths.history) + fs.fileSize(paths.journal);
}

/**
 * Rewrites the journal at `path` so that it starts after `base` (which it must hold): a new file with the
 * same journal id and the snapshots after `base`, fsynced and renamed over the old one.
 */
export function rebaseJournalFile(
  fs: FileSystem,
  path: string,
  base: { txid: bigint; checksum: bigint },
): void {
  const file = fs.open(path, { readonly: true });
  try {
    const reader = new JournalReader({ size: () => file.size(), read: (o, n) => readExact(file, o, n) });
    let cut = reader.header.baseTxid === base.txid ? FILE_HEADER_SIZE : -1;
    for (const s of reader.snapshots()) {
      if (s.txid !== base.txid) continue;
      if (s.postChecksum !== base.checksum)
        throw new Error(`${path}: txid ${base.txid} has another checksum`);
      cut = s.offset + s.length;
    }
    if (cut < 0 || (cut === FILE_HEADER_SIZE && reader.header.baseChecksum !== base.checksum)) {
      throw new Error(`${path} does not hold txid ${base.txid} with checksum ${hex64(base.checksum)}`);
    }
    const end = reader.end;
    const tmp = `${path}.tmp`;
    const out = fs.open(tmp, { create: true });
    try {
      const w = new HistoryWriter(out, {
        ...reader.header,
        baseTxid: base.txid,
        baseChecksum: base.checksum,
      });
      for (let at = cut; at < end; ) {
        const n = Math.min(4 << 20, end - at);
        w.copy(readExact(file, at, n));
        at += n;
      }
      out.sync();
    } finally {
      out.close();
    }
    fs.rename(tmp, path);
    fs.syncDir(path);
  } finally {
    file.close();
  }
}

function readExact(file: FileHandle, offset: number, length: number): Uint8Array {
  const buf = new Uint8Array(length);
  if (file.read(buf, offset) !== length) throw new RangeError(`short read of ${file.path} at ${offset}`);
  return buf;
}

/** The scratch database: the state at the last point, and merges of a range of snapshots onto it. */
class Merger {
  private readonly pages: PageFile;
  private pageSize = 0;

  constructor(
    private readonly source: JournalReaderSource,
    private readonly file: FileHandle,
  ) {
    this.pages = new PageFile(file);
    file.truncate(0);
  }

  /** Applies the snapshots of `range` to the scratch database. */
  apply(range: SnapshotInfo[]): void {
    for (const s of range) {
      this.pages.resize(s.pageSize, s.dbPages);
      walkPatches(this.source, s.offset, s, (pgno, offset, bytes) => this.pages.patch(pgno, offset, bytes));
      this.pageSize = s.pageSize;
    }
  }

  /** The database checksum of the scratch database (kept as its pages are written). */
  checksum(): bigint {
    this.pages.flush();
    return this.pages.checksum();
  }

  /** The scratch file with every page written. */
  flushed(): FileHandle {
    this.pages.flush();
    return this.file;
  }

  /**
   * Writes to `body` the pages that differ between the state at `from` (the scratch database now) and
   * after `range`, and applies the range. Same page size throughout.
   */
  merge(from: SnapshotInfo, range: SnapshotInfo[], body: SnapshotBodyWriter): void {
    const last = range[range.length - 1]!;
    const touched = new Set<number>();
    let minPages = from.dbPages;
    for (const s of range) {
      minPages = Math.min(minPages, s.dbPages);
      walkPatches(this.source, s.offset, s, (pgno) => touched.add(pgno));
    }
    // Pages cut off and grown back inside the range come back as zeros unless written: include them.
    for (let p = minPages + 1; p <= last.dbPages; p++) touched.add(p);
    const order = [...touched].filter((p) => p <= last.dbPages).sort((a, b) => a - b);
    this.flushed();
    const old = new Map<number, Uint8Array>();
    let held = 0;
    for (const p of order) {
      if (p > from.dbPages || held >= OLD_PAGE_BUDGET) continue;
      old.set(p, this.readPage(p));
      held += this.pageSize;
    }
    this.apply(range);
    this.flushed();
    for (const p of order) {
      const neu = this.readPage(p);
      const before = old.get(p);
      if (before !== undefined) body.addDiff(p, before, neu);
      else if (p > from.dbPages) body.addDiff(p, undefined, neu);
      else body.addFullPage(p, neu);
    }
  }

  private readPage(pgno: number): Uint8Array {
    const buf = new Uint8Array(this.pageSize);
    this.file.read(buf, (pgno - 1) * this.pageSize);
    return buf;
  }
}

type JournalReaderSource = ConstructorParameters<typeof JournalReader>[0];
