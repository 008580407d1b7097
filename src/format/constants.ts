/** Sizes and magic numbers of journal format v1. See docs/FORMAT.md. */

/** The journal format version this code writes and reads. */
export const FORMAT_VERSION = 1;
/** ASCII `MYCELITE`: the first 8 bytes of a journal file. */
export const FILE_MAGIC = new Uint8Array([0x4d, 0x59, 0x43, 0x45, 0x4c, 0x49, 0x54, 0x45]);
/** Size of the journal file header. */
export const FILE_HEADER_SIZE = 64;
/** ASCII `SNAP` read as a little-endian u32. */
export const SNAPSHOT_MAGIC = 0x50414e53;
/** Size of a snapshot header. */
export const SNAPSHOT_HEADER_SIZE = 64;
/** Size of a snapshot trailer (the snapshot checksum). */
export const SNAPSHOT_TRAILER_SIZE = 8;
/** Size of a page patch header (pgno u32, runCount u16). */
export const PATCH_HEADER_SIZE = 6;
/** Size of a run header (offset u16, lengthMinus1 u16). */
export const RUN_HEADER_SIZE = 4;
/** Snapshot flag: the body holds every page of the database in full. */
export const FLAG_FULL_IMAGE = 1;
/** Snapshot flag: the stored body is the patches compressed: one raw DEFLATE stream (or see FLAG_ZSTD). */
export const FLAG_COMPRESSED = 2;
/**
 * Snapshot flag: the snapshot stands for several transactions, those after the previous snapshot up to its
 * txid (compacted history only: never in a live journal or on the wire).
 */
export const FLAG_MERGED = 4;
/**
 * Snapshot flag: the change was made outside Mycelite (another program wrote the database file, or the
 * writer found its file ahead of a damaged journal) and recorded when the writer noticed it. Informational:
 * the snapshot applies like any other.
 */
export const FLAG_OUTSIDE = 8;
/**
 * Snapshot flag, only with FLAG_COMPRESSED: the stored body is one Zstandard frame (RFC 8878) instead of
 * a raw DEFLATE stream.
 */
export const FLAG_ZSTD = 16;
/** Every snapshot flag this version knows. */
export const KNOWN_SNAPSHOT_FLAGS =
  FLAG_FULL_IMAGE | FLAG_COMPRESSED | FLAG_MERGED | FLAG_OUTSIDE | FLAG_ZSTD;
/** The flags saying how a body is stored (cleared together when a reader keeps it inflated). */
export const BODY_CODEC_FLAGS = FLAG_COMPRESSED | FLAG_ZSTD;
/** Smallest and largest SQLite page sizes. */
export const MIN_PAGE_SIZE = 512;
export const MAX_PAGE_SIZE = 65536;
/** Largest snapshot this version encodes (the length field is a u32). */
export const MAX_SNAPSHOT_LENGTH = 0xffffffff;

/** True when `n` is a valid SQLite page size. */
export function isPageSize(n: number): boolean {
  return Number.isInteger(n) && n >= MIN_PAGE_SIZE && n <= MAX_PAGE_SIZE && (n & (n - 1)) === 0;
}
