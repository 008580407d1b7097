/**
 * Restore, verify and log: the operations a user runs on a database's journal without opening the
 * database for writing.
 */

import { type FileHandle, type FileSystem, writeFileAtomic } from '../files/file-system.js';
import { ShadowFile } from '../files/shadow-file.js';
import {
  FLAG_FULL_IMAGE,
  FLAG_MERGED,
  FLAG_OUTSIDE,
  hex64,
  JournalFormatError,
  JournalReader,
  loadHash,
  type SnapshotInfo,
} from '../format/index.js';
import { type HistorySource, openHistory } from '../history/source.js';
import { journalPaths } from '../journal/paths.js';
import { readSyncedMarker } from '../journal/synced-marker.js';
import { type Progress, redo, redoPoint, replay, type Target } from './replay.js';

/** Options of restoreDatabase. */
export interface RestoreOptions {
  target?: Target;
  /** Called as the snapshots are replayed: `done` of `total` (from the last checkpoint before the target). */
  onProgress?: Progress;
  /** Replace `output` if it exists. */
  force?: boolean;
}

/**
 * Writes the database at `dbPath` as of `target` (default: the latest snapshot) to `output`: replayed
 * into a temporary file beside it, checked against the snapshot's checksum, fsynced, then renamed.
 */
export async function restoreDatabase(
  fs: FileSystem,
  dbPath: string,
  output: string,
  options: RestoreOptions = {},
): Promise<SnapshotInfo | undefined> {
  await loadHash();
  if (fs.exists(output) && !options.force) {
    throw new Error(`${output} exists: choose another --output or pass --force to replace it`);
  }
  const history = openDatabaseHistory(fs, dbPath);
  try {
    let restored: SnapshotInfo | undefined;
    writeFileAtomic(fs, output, (out) => {
      restored = replay(history.source, out, options.target ?? 'latest', options.onProgress).snapshot;
    });
    return restored;
  } finally {
    history.close();
  }
}

/** The result of verifyDatabase. */
export interface VerifyResult {
  ok: boolean;
  snapshots: number;
  lastTxid: bigint;
  /** Bytes of torn tail a crash left at the end of the journal (ignored; cut off at the next open). */
  tornBytes: number;
  /** What is wrong, when not ok. */
  problem?: string;
  /**
   * When ok although the file differs from the replay: the recovery the next open for writing will do
   * (a writer ended without closing, so the file lags the journal; it redoes the snapshots named here).
   */
  pending?: string;
  /** Byte offset in the journal, and the txid expected there, when the journal itself is damaged. */
  offset?: number;
  txid?: bigint;
}

/**
 * Checks every snapshot's checksum and structure, replays the journal into a temporary file and
 * compares it with the database byte for byte.
 */
export async function verifyDatabase(
  fs: FileSystem,
  dbPath: string,
  tempPath: string,
): Promise<VerifyResult> {
  await loadHash();
  const out = fs.open(tempPath, { create: true });
  let history: HistorySource | undefined;
  try {
    let snapshots = 0;
    let lastTxid = 0n;
    let tornBytes = 0;
    try {
      history = openDatabaseHistory(fs, dbPath);
      const reader = new JournalReader(history.source, { verify: true, merged: true });
      lastTxid = reader.header.baseTxid;
      for (const s of reader.snapshots()) {
        snapshots++;
        lastTxid = s.txid;
      }
      tornBytes = reader.tornBytes;
      replay(history.source, out);
    } catch (e) {
      if (!(e instanceof JournalFormatError)) throw e;
      return {
        ok: false,
        snapshots,
        lastTxid,
        tornBytes,
        problem: e.message,
        offset: e.offset,
        txid: e.txid,
      };
    }
    const base = { snapshots, lastTxid, tornBytes };
    if (!fs.exists(dbPath)) return { ...base, ok: false, problem: `${dbPath} does not exist` };
    const db = fs.open(dbPath, { readonly: true });
    try {
      const problem = firstDifference(db, out);
      if (!problem) return { ...base, ok: true };
      const pending = pendingRecovery(fs, dbPath, history!, db, out, `${tempPath}.spill`, lastTxid);
      return pending ? { ...base, ok: true, pending } : { ...base, ok: false, problem };
    } finally {
      db.close();
    }
  } finally {
    out.close();
    fs.delete(tempPath);
    history?.close();
  }
}

/**
 * Why the database file `db` may differ from the journal's replay `replayed` without damage: a writer
 * with journal durability ended without closing (its synced marker is behind the journal's head and no
 * writer holds the database), and redoing the snapshots after the marker, as the next open will, gives
 * exactly the replay. Undefined otherwise (the difference is real). Nothing is written to `db`.
 */
function pendingRecovery(
  fs: FileSystem,
  dbPath: string,
  history: HistorySource,
  db: FileHandle,
  replayed: FileHandle,
  spillPath: string,
  head: bigint,
): string | undefined {
  const paths = journalPaths(dbPath);
  const lock = fs.tryLockExclusive?.(paths.lock);
  if (fs.tryLockExclusive && !lock) return undefined; // a live writer: no recovery is pending
  try {
    const marker = readSyncedMarker(fs, paths.synced);
    if (marker === undefined || marker === 'bad' || !marker.holdsWrites || marker.txid >= head)
      return undefined;
    const from = redoPoint(history.source, marker);
    if (!from) return undefined;
    const shadow = new ShadowFile(db, fs, spillPath);
    try {
      redo(history.source, shadow, from);
      if (firstDifference(shadow, replayed)) return undefined;
    } catch {
      return undefined;
    } finally {
      shadow.discard();
    }
    return (
      `recovery pending: the database file lags its journal since txid ${marker.txid} (its writer ended ` +
      `without closing it); the next open for writing redoes txids ${from.txid + 1n}..${head}`
    );
  } finally {
    lock?.release();
  }
}

/** One line of `mycelite log`. */
export interface LogEntry {
  txid: bigint;
  timestamp: number;
  /** Pages the snapshot writes. */
  pages: number;
  /** Bytes the snapshot takes in the journal. */
  bytes: number;
  dbPages: number;
  pageSize: number;
  checksum: string;
  /** The snapshot stands for several transactions (retention merged them): their txids run from here. */
  mergedFrom?: bigint;
  /** The snapshot is a full image (a checkpoint restores start from). */
  checkpoint: boolean;
  /** Where the snapshot is kept: the compacted history or the live journal. */
  in: 'history' | 'journal';
  /** The change was made outside Mycelite (another program wrote the file) and recorded when noticed. */
  outside: boolean;
}

/** Lists the snapshots of the database's journal. */
export async function* logDatabase(fs: FileSystem, dbPath: string): AsyncGenerator<LogEntry> {
  await loadHash();
  const history = openDatabaseHistory(fs, dbPath);
  try {
    const reader = new JournalReader(history.source, { merged: true });
    let prev = reader.header.baseTxid;
    for (const s of reader.snapshots()) {
      const mergedFrom = (s.flags & FLAG_MERGED) !== 0 ? prev + 1n : undefined;
      prev = s.txid;
      yield {
        mergedFrom,
        checkpoint: (s.flags & FLAG_FULL_IMAGE) !== 0,
        in: s.offset < history.journalStart ? 'history' : 'journal',
        outside: (s.flags & FLAG_OUTSIDE) !== 0,
        txid: s.txid,
        timestamp: s.timestamp,
        pages: s.patchCount,
        bytes: s.length,
        dbPages: s.dbPages,
        pageSize: s.pageSize,
        checksum: hex64(s.postChecksum),
      };
    }
  } finally {
    history.close();
  }
}

/** The database's history (compacted history file + live journal) as one source. */
export function openDatabaseHistory(fs: FileSystem, dbPath: string): HistorySource {
  const paths = journalPaths(dbPath);
  return openHistory(
    fs,
    paths,
    () =>
      new Error(
        `${dbPath} has no Mycelite journal (${paths.journal} not found): open it through Mycelite first`,
      ),
  );
}

function firstDifference(a: FileHandle, b: FileHandle): string | undefined {
  const sa = a.size();
  const sb = b.size();
  const chunk = 1 << 20;
  const ba = new Uint8Array(chunk);
  const bb = new Uint8Array(chunk);
  for (let off = 0; off < Math.min(sa, sb); off += chunk) {
    const n = Math.min(chunk, Math.min(sa, sb) - off);
    a.read(ba.subarray(0, n), off);
    b.read(bb.subarray(0, n), off);
    for (let i = 0; i < n; i++) {
      if (ba[i] !== bb[i]) return `database differs from the journal's replay at byte ${off + i}`;
    }
  }
  if (sa !== sb) return `database is ${sa} bytes but the journal's replay is ${sb} bytes`;
  return undefined;
}
