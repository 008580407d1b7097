/**
 * Restore, verify and log: the operations a user runs on a database's journal without opening the
 * database for writing.
 */

import { journalPaths } from '../api/paths.js';
import { hex, JournalFormatError, JournalReader, loadHash, type SnapshotInfo } from '../format/index.js';
import { fileSource } from '../journal/file-source.js';
import { type FileHandle, type FileSystem, writeFileAtomic } from '../storage/file-system.js';
import { replay, type Target } from './replay.js';

/** Options of restoreDatabase. */
export interface RestoreOptions {
  target?: Target;
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
  const journal = openJournal(fs, dbPath);
  try {
    let restored: SnapshotInfo | undefined;
    writeFileAtomic(fs, output, (out) => {
      restored = replay(fileSource(journal), out, options.target ?? 'latest').snapshot;
    });
    return restored;
  } finally {
    journal.close();
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
  const journal = openJournal(fs, dbPath);
  const out = fs.open(tempPath, { create: true });
  try {
    let snapshots = 0;
    let lastTxid = 0n;
    let tornBytes = 0;
    try {
      const reader = new JournalReader(fileSource(journal), { verify: true });
      lastTxid = reader.header.baseTxid;
      for (const s of reader.snapshots()) {
        snapshots++;
        lastTxid = s.txid;
      }
      tornBytes = reader.tornBytes;
      replay(fileSource(journal), out);
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
      return problem ? { ...base, ok: false, problem } : { ...base, ok: true };
    } finally {
      db.close();
    }
  } finally {
    out.close();
    fs.delete(tempPath);
    journal.close();
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
}

/** Lists the snapshots of the database's journal. */
export async function* logDatabase(fs: FileSystem, dbPath: string): AsyncGenerator<LogEntry> {
  await loadHash();
  const journal = openJournal(fs, dbPath);
  try {
    for (const s of new JournalReader(fileSource(journal)).snapshots()) {
      yield {
        txid: s.txid,
        timestamp: s.timestamp,
        pages: s.patchCount,
        bytes: s.length,
        dbPages: s.dbPages,
        pageSize: s.pageSize,
        checksum: hex(s.postChecksum),
      };
    }
  } finally {
    journal.close();
  }
}

function openJournal(fs: FileSystem, dbPath: string) {
  const p = journalPaths(dbPath).journal;
  if (!fs.exists(p)) {
    throw new Error(`${dbPath} has no Mycelite journal (${p} not found): open it through Mycelite first`);
  }
  return fs.open(p, { readonly: true });
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
