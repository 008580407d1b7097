/**
 * The `synced` marker of journal durability (docs/FORMAT.md, "The synced marker"): the journal position
 * the database file is known to be durable at. The file may be ahead of it (writes after the commit are
 * not fsynced one by one) but never behind; open() brings it to the journal's head by applying the
 * snapshots after the marker again (redo).
 *
 * 32 bytes: "MYCSYNC1", txid (u64 LE), database checksum (u64 LE), XXH64 of the first 24 bytes.
 */
import { xxh64 } from '../format/index.js';
import type { FileHandle, FileSystem } from '../storage/file-system.js';

/** A journal position: a txid and the database checksum after it. */
export interface SyncedPoint {
  txid: bigint;
  checksum: bigint;
}

const MAGIC = [0x4d, 0x59, 0x43, 0x53, 0x59, 0x4e, 0x43, 0x31]; // MYCSYNC1
const SIZE = 32;

/** The marker at `path`: a point, 'bad' (unreadable or torn), or undefined when there is none. */
export function readSyncedMarker(fs: FileSystem, path: string): SyncedPoint | 'bad' | undefined {
  if (!fs.exists(path)) return undefined;
  const f = fs.open(path, { readonly: true });
  const b = new Uint8Array(SIZE);
  try {
    if (f.read(b, 0) < SIZE) return 'bad';
  } finally {
    f.close();
  }
  const v = new DataView(b.buffer);
  if (MAGIC.some((m, i) => b[i] !== m)) return 'bad';
  if (v.getBigUint64(24, true) !== xxh64(b.subarray(0, 24))) return 'bad';
  return { txid: v.getBigUint64(8, true), checksum: v.getBigUint64(16, true) };
}

/** Writes the marker in place (one 32-byte write; a torn write reads as 'bad'). */
export function writeSyncedMarker(f: FileHandle, p: SyncedPoint): void {
  const b = new Uint8Array(SIZE);
  b.set(MAGIC);
  const v = new DataView(b.buffer);
  v.setBigUint64(8, p.txid, true);
  v.setBigUint64(16, p.checksum, true);
  v.setBigUint64(24, xxh64(b.subarray(0, 24)), true);
  f.write(b, 0);
}
