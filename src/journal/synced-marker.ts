/**
 * The `synced` marker (docs/FORMAT.md, "The synced marker"): a journal position the database file was
 * exactly at, and durable at, when the marker was written, with a fingerprint of the file then (its
 * size and page 1's checksum term). The file may have moved ahead since (commits after the marker), never
 * back: open() brings it to the journal's head by applying the snapshots after the marker again (redo),
 * and when the marker is the head, the fingerprint tells in constant time whether another program
 * changed the file meanwhile.
 *
 * 72 bytes, written in place with one write: "MYCSYNC3", txid, checksum, file size, page 1's term,
 * checked txid (u64 LE each), flags (u32), 4 reserved bytes, the journal offset of the txid's snapshot
 * (u64; 0 when not known), XXH64 of the first 64 bytes. Version 2 ("MYCSYNC2", 64 bytes: no offset, the
 * hash at 56) and the 32-byte version 1 ("MYCSYNC1": txid, checksum, hash; no fingerprint) are still read.
 */

import { type FileHandle, type FileSystem, readAt } from '../files/file-system.js';
import { type Position, pageTerm, xxh64 } from '../format/index.js';
import { readPageSize } from './sqlite-header.js';

/** A journal position: a txid and the database checksum after it. */
export interface SyncedPoint {
  txid: bigint;
  checksum: bigint;
}

/** What a marker says. */
export interface SyncedMarker extends SyncedPoint {
  /** The file's size and page 1's checksum term when the marker was written (undefined: version 1). */
  fingerprint?: FileFingerprint;
  /** Snapshot bodies of the journal are known good up to this txid (0: none checked). */
  checkedTxid: bigint;
  /** The writer held SQLite's writes until the journal had them (journal durability): the file may lag. */
  holdsWrites: boolean;
  /**
   * Where the snapshot of `txid` starts in the journal (undefined: not known): open() reads only what
   * follows it, once it finds that snapshot there.
   */
  offset?: number;
}

/** A cheap summary of a database file: its size and page 1's checksum term (0 when it has no page). */
export interface FileFingerprint {
  size: number;
  page1: bigint;
}

const MAGIC_V1 = [0x4d, 0x59, 0x43, 0x53, 0x59, 0x4e, 0x43, 0x31]; // MYCSYNC1
const MAGIC_V2 = [0x4d, 0x59, 0x43, 0x53, 0x59, 0x4e, 0x43, 0x32]; // MYCSYNC2
const MAGIC = [0x4d, 0x59, 0x43, 0x53, 0x59, 0x4e, 0x43, 0x33]; // MYCSYNC3
const SIZE_V1 = 32;
const SIZE_V2 = 64;
const SIZE = 72;
const FLAG_HOLDS_WRITES = 1;

/** The marker at `path`: what it says, 'bad' (unreadable or torn), or undefined when there is none. */
export function readSyncedMarker(fs: FileSystem, path: string): SyncedMarker | 'bad' | undefined {
  if (!fs.exists(path)) return undefined;
  const f = fs.open(path, { readonly: true });
  const b = new Uint8Array(SIZE);
  let n: number;
  try {
    n = f.read(b, 0);
  } finally {
    f.close();
  }
  const v = new DataView(b.buffer);
  if (n >= SIZE_V1 && MAGIC_V1.every((m, i) => b[i] === m)) {
    if (v.getBigUint64(24, true) !== xxh64(b.subarray(0, 24))) return 'bad';
    const point = { txid: v.getBigUint64(8, true), checksum: v.getBigUint64(16, true) };
    return { ...point, checkedTxid: 0n, holdsWrites: true };
  }
  const v2 = n >= SIZE_V2 && MAGIC_V2.every((m, i) => b[i] === m);
  if (!v2 && (n < SIZE || MAGIC.some((m, i) => b[i] !== m))) return 'bad';
  const hashAt = v2 ? 56 : 64;
  if (v.getBigUint64(hashAt, true) !== xxh64(b.subarray(0, hashAt))) return 'bad';
  const offset = v2 ? 0 : Number(v.getBigUint64(56, true));
  return {
    txid: v.getBigUint64(8, true),
    checksum: v.getBigUint64(16, true),
    fingerprint: { size: Number(v.getBigUint64(24, true)), page1: v.getBigUint64(32, true) },
    checkedTxid: v.getBigUint64(40, true),
    holdsWrites: (v.getUint32(48, true) & FLAG_HOLDS_WRITES) !== 0,
    ...(offset > 0 ? { offset } : {}),
  };
}

/** Writes the marker in place (one 72-byte write; a torn write reads as 'bad'). */
export function writeSyncedMarker(f: FileHandle, m: SyncedMarker & { fingerprint: FileFingerprint }): void {
  const b = new Uint8Array(SIZE);
  b.set(MAGIC);
  const v = new DataView(b.buffer);
  v.setBigUint64(8, m.txid, true);
  v.setBigUint64(16, m.checksum, true);
  v.setBigUint64(24, BigInt(m.fingerprint.size), true);
  v.setBigUint64(32, m.fingerprint.page1, true);
  v.setBigUint64(40, m.checkedTxid, true);
  v.setUint32(48, m.holdsWrites ? FLAG_HOLDS_WRITES : 0, true);
  v.setBigUint64(56, BigInt(m.offset ?? 0), true);
  v.setBigUint64(64, xxh64(b.subarray(0, 64)), true);
  if (f.size() > SIZE) f.truncate(SIZE);
  f.write(b, 0);
}

/** The fingerprint of the database file `db` as it is now (reads page 1 only). */
export function fingerprintOf(db: FileHandle): FileFingerprint {
  const size = db.size();
  if (size < 100) return { size, page1: 0n };
  const pageSize = readPageSize(db);
  if (size < pageSize) return { size, page1: 0n };
  return { size, page1: pageTerm(readAt(db, 0, pageSize), 1) };
}

/** True when both fingerprints describe the same file. */
export function sameFingerprint(a: FileFingerprint, b: FileFingerprint): boolean {
  return a.size === b.size && a.page1 === b.page1;
}

/** Writes the synced marker for the journal's head, the file fsynced first (its creation made durable). */
export function setSyncedMarker(
  fs: FileSystem,
  dbPath: string,
  path: string,
  head: Position,
  extra: { checkedTxid: bigint; holdsWrites: boolean; offset?: number },
): FileHandle {
  const created = !fs.exists(path);
  const f = fs.open(path, { create: true });
  try {
    let fingerprint: ReturnType<typeof fingerprintOf> = { size: 0, page1: 0n };
    if (fs.exists(dbPath)) {
      const d = fs.open(dbPath);
      try {
        d.sync();
        fingerprint = fingerprintOf(d);
      } finally {
        d.close();
      }
    }
    writeSyncedMarker(f, { ...head, fingerprint, ...extra });
    f.sync();
    if (created) fs.syncDir(path);
    return f;
  } catch (e) {
    f.close();
    throw e;
  }
}
