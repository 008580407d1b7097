/**
 * What a journal file holds, read without changing it: its header, its valid snapshots up to the first
 * problem, and what lies after them (a torn tail, zeros written ahead, or damage). A writer's recovery
 * decides from this what to keep before anything is cut (src/writer/recovery.ts).
 */

import type { FileSystem } from '../files/file-system.js';
import {
  type FileHeader,
  JournalFormatError,
  JournalReader,
  type Position,
  type SnapshotInfo,
} from '../format/index.js';
import { fileSource } from './file-source.js';

/** A journal as found. */
export interface JournalScan {
  path: string;
  /** Size of the file in bytes (0 when missing). */
  size: number;
  /** The file header; undefined when the file is missing, empty or its header is unreadable. */
  header: FileHeader | undefined;
  /** Why the header is unreadable (the file has bytes but no valid header). */
  headerProblem: JournalFormatError | undefined;
  /** The last valid snapshot and the one before it. */
  last: SnapshotInfo | undefined;
  lastBefore: SnapshotInfo | undefined;
  /** Offset after the last valid snapshot (the file header's end when there is none). */
  end: number;
  /** The position after the last valid snapshot (the header's base when there is none). */
  head: Position;
  /** Bytes after `end`: a torn tail, zeros written ahead, or what follows damage. */
  tailBytes: number;
  /** True when every byte after `end` is zero (zeros written ahead, or a tail that never got its bytes). */
  tailZeros: boolean;
  /** Damage that is not a torn tail: a bad snapshot followed by a valid one (the reader's error). */
  damage: JournalFormatError | undefined;
  /** Where the known point's snapshot starts, when only what follows it was read (see scanJournal). */
  from?: number;
}

/** A snapshot known from elsewhere (the synced marker): where it starts, its txid and checksum after it. */
export interface KnownPoint extends Position {
  offset: number;
}

/**
 * Reads the journal at `path` (never writes it). With `known`, a snapshot the journal held when the
 * synced marker was written, only what follows it is read (open in constant time): if that snapshot is not
 * at its offset as described (the journal was rewritten, cut or replaced since), the whole journal is read.
 * Damage before it is then left to the background history check (src/writer/history-check.ts).
 */
export function scanJournal(fs: FileSystem, path: string, known?: KnownPoint): JournalScan {
  if (known && known.offset > 0) {
    const from = scanFrom(fs, path, known.offset);
    if (from.first && from.first.txid === known.txid && from.first.postChecksum === known.checksum) {
      return { ...from.scan, from: known.offset };
    }
  }
  return scanFrom(fs, path, undefined).scan;
}

function scanFrom(
  fs: FileSystem,
  path: string,
  from: number | undefined,
): { scan: JournalScan; first: SnapshotInfo | undefined } {
  let first: SnapshotInfo | undefined;
  const size = fs.fileSize(path);
  const scan: JournalScan = {
    path,
    size,
    header: undefined,
    headerProblem: undefined,
    last: undefined,
    lastBefore: undefined,
    end: 0,
    head: { txid: 0n, checksum: 0n },
    tailBytes: size,
    tailZeros: false,
    damage: undefined,
  };
  if (size === 0) return { scan, first };
  const file = fs.open(path, { readonly: true });
  try {
    const src = fileSource(file);
    let reader: JournalReader;
    try {
      reader = new JournalReader(src, { from });
    } catch (e) {
      if (!(e instanceof JournalFormatError)) throw e;
      scan.headerProblem = e;
      scan.tailZeros = allZeros(src, 0, size);
      return { scan, first };
    }
    scan.header = reader.header;
    scan.head = { txid: reader.header.baseTxid, checksum: reader.header.baseChecksum };
    try {
      for (const s of reader.snapshots()) {
        first ??= s;
        scan.lastBefore = scan.last;
        scan.last = s;
        scan.head = { txid: s.txid, checksum: s.postChecksum };
      }
    } catch (e) {
      if (!(e instanceof JournalFormatError)) throw e;
      scan.damage = e;
    }
    scan.end = reader.end;
    scan.tailBytes = size - reader.end;
    scan.tailZeros = allZeros(src, reader.end, size);
    return { scan, first };
  } finally {
    file.close();
  }
}

/** True when the journal holds something that is not a clean end or zeros: bytes recovery would drop. */
export function hasDamage(scan: JournalScan): boolean {
  return (
    scan.headerProblem !== undefined || scan.damage !== undefined || (scan.tailBytes > 0 && !scan.tailZeros)
  );
}

function allZeros(src: ReturnType<typeof fileSource>, from: number, to: number): boolean {
  for (let at = from; at < to; ) {
    const n = Math.min(1 << 20, to - at);
    const bytes = src.read(at, n);
    for (let i = 0; i < bytes.length; i++) if (bytes[i] !== 0) return false;
    at += n;
  }
  return true;
}
