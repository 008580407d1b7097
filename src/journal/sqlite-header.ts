/** Facts read from the 100-byte header of a SQLite database file (https://www.sqlite.org/fileformat.html). */
import { type FileHandle, type FileSystem, readAt } from '../files/file-system.js';

/** The page size stored at offset 16 (big-endian u16; 1 means 65536). */
export function readPageSize(db: FileHandle): number {
  const b = new Uint8Array(2);
  db.read(b, 16);
  const n = (b[0]! << 8) | b[1]!;
  if (n === 1) return 65536;
  if (n < 512 || n > 32768 || (n & (n - 1)) !== 0) {
    throw new Error(`${db.path} is not a SQLite database (page size field is ${n})`);
  }
  return n;
}

/** True when the header says the database is in WAL mode (file format versions 2 at offsets 18/19). */
export function isWalDatabase(db: FileHandle): boolean {
  const b = new Uint8Array(2);
  db.read(b, 18);
  return b[0] === 2 || b[1] === 2;
}

/**
 * The database size in pages. SQLite records it in the header (offset 28) and trusts it when the
 * "version-valid-for" number (offset 92) equals the change counter (offset 24); the file can be longer
 * for a moment, because SQLite truncates a shrunk database only after its commit point. Falls back to
 * the file size, as SQLite does.
 */
export function readDbPages(db: FileHandle, pageSize: number): number {
  const size = db.size();
  if (size < 100) return Math.floor(size / pageSize);
  const h = new Uint8Array(100);
  db.read(h, 0);
  const v = new DataView(h.buffer);
  const inHeader = v.getUint32(28);
  if (inHeader > 0 && v.getUint32(24) === v.getUint32(92)) return inHeader;
  return Math.floor(size / pageSize);
}

/** The bytes of a rollback journal's header that are read here (https://www.sqlite.org/fileformat.html#the_rollback_journal). */
const ROLLBACK_HEADER_SIZE = 28;

/**
 * The nonce of a rollback journal's header: the random number SQLite picks for each transaction (offset
 * 12, big-endian u32), which our snapshots carry as their `commitTag`. `header` holds at least 16 bytes.
 */
export function rollbackJournalNonce(header: Uint8Array): number {
  return ((header[12]! << 24) | (header[13]! << 16) | (header[14]! << 8) | header[15]!) >>> 0;
}

/**
 * The nonce of the hot rollback journal beside the database (`DB-journal`), or undefined when there is
 * none: no file, one shorter than a header, or one whose header SQLite zeroed (its transaction committed).
 * Throws what reading throws.
 */
export function hotJournalNonce(fs: FileSystem, dbPath: string): number | undefined {
  const path = `${dbPath}-journal`;
  if (fs.fileSize(path) < ROLLBACK_HEADER_SIZE) return undefined;
  const f = fs.open(path, { readonly: true });
  let head: Uint8Array;
  try {
    head = readAt(f, 0, ROLLBACK_HEADER_SIZE);
  } finally {
    f.close();
  }
  return head[0] === 0 ? undefined : rollbackJournalNonce(head);
}
