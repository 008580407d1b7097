/** The 64-byte snapshot header (docs/FORMAT.md, "Snapshot header"). */
import {
  FLAG_COMPRESSED,
  FLAG_ZSTD,
  isPageSize,
  KNOWN_SNAPSHOT_FLAGS,
  SNAPSHOT_HEADER_SIZE,
  SNAPSHOT_MAGIC,
  SNAPSHOT_TRAILER_SIZE,
} from './constants.js';
import { xxh64 } from './hash.js';

/** What a snapshot header says. */
export interface SnapshotHeader {
  /** Bytes of the whole snapshot: header, body and trailer. */
  length: number;
  txid: bigint;
  /** Milliseconds since the Unix epoch. */
  timestamp: number;
  pageSize: number;
  /** Database size in pages after the commit. */
  dbPages: number;
  patchCount: number;
  flags: number;
  preChecksum: bigint;
  postChecksum: bigint;
  /** Nonce of SQLite's rollback journal for this transaction, or 0. */
  commitTag: number;
}

/** Encodes a snapshot header (64 bytes), computing its headerCheck. */
export function encodeSnapshotHeader(h: SnapshotHeader): Uint8Array {
  const out = new Uint8Array(SNAPSHOT_HEADER_SIZE);
  const v = new DataView(out.buffer);
  v.setUint32(0, SNAPSHOT_MAGIC, true);
  v.setUint32(4, h.length, true);
  v.setBigUint64(8, h.txid, true);
  v.setBigInt64(16, BigInt(h.timestamp), true);
  v.setUint32(24, h.pageSize, true);
  v.setUint32(28, h.dbPages, true);
  v.setUint32(32, h.patchCount, true);
  v.setUint32(36, h.flags, true);
  v.setBigUint64(40, h.preChecksum, true);
  v.setBigUint64(48, h.postChecksum, true);
  v.setUint32(56, h.commitTag >>> 0, true);
  v.setUint32(60, Number(xxh64(out.subarray(0, 60)) & 0xffffffffn), true);
  return out;
}

/**
 * Decodes a snapshot header. Returns undefined when the bytes are not a snapshot header at all (bad
 * magic or headerCheck: what a torn tail looks like); returns a string naming the problem when the header
 * is intact but says something impossible.
 */
export function decodeSnapshotHeader(bytes: Uint8Array): SnapshotHeader | string | undefined {
  if (bytes.length < SNAPSHOT_HEADER_SIZE) return undefined;
  const v = new DataView(bytes.buffer, bytes.byteOffset, SNAPSHOT_HEADER_SIZE);
  if (v.getUint32(0, true) !== SNAPSHOT_MAGIC) return undefined;
  if (v.getUint32(60, true) !== Number(xxh64(bytes.subarray(0, 60)) & 0xffffffffn)) return undefined;
  const h: SnapshotHeader = {
    length: v.getUint32(4, true),
    txid: v.getBigUint64(8, true),
    timestamp: Number(v.getBigInt64(16, true)),
    pageSize: v.getUint32(24, true),
    dbPages: v.getUint32(28, true),
    patchCount: v.getUint32(32, true),
    flags: v.getUint32(36, true),
    preChecksum: v.getBigUint64(40, true),
    postChecksum: v.getBigUint64(48, true),
    commitTag: v.getUint32(56, true),
  };
  if (h.length < SNAPSHOT_HEADER_SIZE + SNAPSHOT_TRAILER_SIZE)
    return `snapshot length ${h.length} is too small`;
  if (!isPageSize(h.pageSize)) return `page size ${h.pageSize} is not a power of two in 512..65536`;
  if ((h.flags & ~KNOWN_SNAPSHOT_FLAGS) !== 0) return `unknown snapshot flags 0x${h.flags.toString(16)}`;
  if ((h.flags & FLAG_ZSTD) !== 0 && (h.flags & FLAG_COMPRESSED) === 0)
    return `snapshot flags 0x${h.flags.toString(16)}: zstd without compressed`;
  if (h.patchCount > h.dbPages) return `${h.patchCount} patches for a database of ${h.dbPages} pages`;
  return h;
}
