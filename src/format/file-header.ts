/** The 64-byte journal file header (docs/FORMAT.md, "File header"). */
import { FILE_HEADER_SIZE, FILE_MAGIC, FORMAT_VERSION } from './constants.js';
import { JournalFormatError } from './errors.js';
import { xxh64 } from './hash.js';

/** What a journal file header says. */
export interface FileHeader {
  version: number;
  /** 16 random bytes naming this history. */
  journalId: Uint8Array;
  createdAt: number;
  /** txid before the first snapshot of the file; 0n for a history from the start. */
  baseTxid: bigint;
  /** Database checksum at `baseTxid`. */
  baseChecksum: bigint;
}

/** Encodes a file header into 64 bytes. */
export function encodeFileHeader(h: FileHeader): Uint8Array {
  if (h.journalId.length !== 16) throw new Error(`journalId must be 16 bytes, got ${h.journalId.length}`);
  const out = new Uint8Array(FILE_HEADER_SIZE);
  const v = new DataView(out.buffer);
  out.set(FILE_MAGIC, 0);
  v.setUint16(8, h.version, true);
  v.setUint16(10, FILE_HEADER_SIZE, true);
  v.setUint32(12, 0, true);
  out.set(h.journalId, 16);
  v.setBigInt64(32, BigInt(h.createdAt), true);
  v.setBigUint64(40, h.baseTxid, true);
  v.setBigUint64(48, h.baseChecksum, true);
  v.setBigUint64(56, xxh64(out.subarray(0, 56)), true);
  return out;
}

/** Decodes and validates a file header; throws JournalFormatError saying what is wrong. */
export function decodeFileHeader(bytes: Uint8Array): FileHeader {
  if (bytes.length < FILE_HEADER_SIZE) {
    throw new JournalFormatError(`journal is ${bytes.length} bytes, shorter than its 64-byte header`, 0);
  }
  for (let i = 0; i < FILE_MAGIC.length; i++) {
    if (bytes[i] !== FILE_MAGIC[i]) throw new JournalFormatError('not a Mycelite journal (bad magic)', 0);
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, FILE_HEADER_SIZE);
  const version = v.getUint16(8, true);
  if (version !== FORMAT_VERSION) {
    throw new JournalFormatError(
      `journal format version ${version} is not supported (this Mycelite reads version ${FORMAT_VERSION}; upgrade Mycelite)`,
      8,
    );
  }
  if (v.getUint16(10, true) !== FILE_HEADER_SIZE) throw new JournalFormatError('bad journal header size', 10);
  if (v.getUint32(12, true) !== 0) throw new JournalFormatError('unknown journal header flags', 12);
  if (v.getBigUint64(56, true) !== xxh64(bytes.subarray(0, 56))) {
    throw new JournalFormatError('journal header checksum mismatch', 56);
  }
  return {
    version,
    journalId: bytes.slice(16, 32),
    createdAt: Number(v.getBigInt64(32, true)),
    baseTxid: v.getBigUint64(40, true),
    baseChecksum: v.getBigUint64(48, true),
  };
}
