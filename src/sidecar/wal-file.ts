/**
 * Reading SQLite's write-ahead log as another process writes it (https://www.sqlite.org/fileformat2.html,
 * "The Write-Ahead Log"; https://www.sqlite.org/walformat.html). A WAL file is a 32-byte header (magic,
 * version, page size, checkpoint sequence, two salts, a checksum of the header), then frames: a 24-byte
 * frame header (page number, "commit size" — the database size in pages on the last frame of a
 * transaction, 0 otherwise — the two salts, a running checksum) and one page. A frame is valid when its
 * salts are the header's and its checksum, continued from the previous frame's (the header's for the
 * first), matches; a transaction is committed once its commit frame is valid. A WAL restart writes a new
 * header (new salts) and then overwrites frames from the first: old frames no longer check.
 *
 * Nothing here writes the file. Node only (node:fs), like the rest of the sidecar.
 */
import * as fs from 'node:fs';

export const WAL_HEADER_SIZE = 32;
export const FRAME_HEADER_SIZE = 24;
const MAGIC_LE = 0x377f0682;
const MAGIC_BE = 0x377f0683;

/** What identifies one generation of a WAL (between two restarts). */
export interface WalHeader {
  pageSize: number;
  /** Checksums over big-endian words (magic 0x377f0683) rather than little-endian. */
  bigEndian: boolean;
  checkpointSeq: number;
  salt1: number;
  salt2: number;
  /** The running checksum after the header (the seed of frame 1's). */
  ck0: number;
  ck1: number;
}

/** A committed transaction found in the WAL. */
export interface WalTransaction {
  /** The latest frame index (1-based) of each page the transaction wrote. */
  pages: Map<number, number>;
  /** The database size in pages after it (the commit frame's commit size). */
  dbPages: number;
  /** The commit frame's index and running checksum. */
  commitFrame: number;
  ck0: number;
  ck1: number;
}

/**
 * SQLite's WAL checksum over `data` (a multiple of 8 bytes), continued from (s0, s1): for each pair of
 * 32-bit words x0, x1: s0 += x0 + s1; s1 += x1 + s0 (mod 2^32).
 */
export function walChecksum(data: Uint8Array, bigEndian: boolean, s0: number, s1: number): [number, number] {
  const v = new DataView(data.buffer, data.byteOffset, data.length);
  const le = !bigEndian;
  for (let i = 0; i < data.length; i += 8) {
    s0 = (s0 + v.getUint32(i, le) + s1) >>> 0;
    s1 = (s1 + v.getUint32(i + 4, le) + s0) >>> 0;
  }
  return [s0, s1];
}

/** Decodes a WAL header; undefined when it is not a valid one (missing, torn, or not yet written). */
export function decodeWalHeader(b: Uint8Array): WalHeader | undefined {
  if (b.length < WAL_HEADER_SIZE) return undefined;
  const v = new DataView(b.buffer, b.byteOffset, WAL_HEADER_SIZE);
  const magic = v.getUint32(0);
  if (magic !== MAGIC_LE && magic !== MAGIC_BE) return undefined;
  const bigEndian = magic === MAGIC_BE;
  if (v.getUint32(4) !== 3007000) return undefined;
  const [c0, c1] = walChecksum(b.subarray(0, 24), bigEndian, 0, 0);
  if (c0 !== v.getUint32(24) || c1 !== v.getUint32(28)) return undefined;
  const raw = v.getUint32(8);
  const pageSize = raw === 1 ? 65536 : raw;
  if (pageSize < 512 || pageSize > 65536 || (pageSize & (pageSize - 1)) !== 0) return undefined;
  return {
    pageSize,
    bigEndian,
    checkpointSeq: v.getUint32(12),
    salt1: v.getUint32(16),
    salt2: v.getUint32(20),
    ck0: c0,
    ck1: c1,
  };
}

/** True when two headers are the same generation of the WAL. */
export function sameGeneration(a: WalHeader, b: WalHeader): boolean {
  return a.salt1 === b.salt1 && a.salt2 === b.salt2 && a.pageSize === b.pageSize;
}

/** Byte offset of frame `index` (1-based) in a WAL of `pageSize`. */
export function frameOffset(pageSize: number, index: number): number {
  return WAL_HEADER_SIZE + (index - 1) * (FRAME_HEADER_SIZE + pageSize);
}

/** Reads `buf.length` bytes at `offset` of `fd`; returns the bytes read (fewer at end of file). */
function readFull(fd: number, buf: Uint8Array, offset: number): number {
  let got = 0;
  while (got < buf.length) {
    const n = fs.readSync(fd, buf, got, buf.length - got, offset + got);
    if (n === 0) break;
    got += n;
  }
  return got;
}

/** The WAL file of one database, read by path (reopened when it is replaced or deleted). */
export class WalFile {
  private fd: number | undefined;
  private ino = -1;

  constructor(readonly path: string) {}

  /** Opens the file if it exists (again, when another file now has its name). False when missing. */
  private ensureOpen(): boolean {
    let st: fs.Stats;
    try {
      st = fs.statSync(this.path);
    } catch {
      this.close();
      return false;
    }
    if (this.fd !== undefined && st.ino === this.ino) return true;
    this.close();
    try {
      this.fd = fs.openSync(this.path, 'r');
    } catch {
      return false;
    }
    this.ino = fs.fstatSync(this.fd).ino;
    return true;
  }

  size(): number {
    if (!this.ensureOpen()) return 0;
    return fs.fstatSync(this.fd!).size;
  }

  /** The header now in the file, or undefined (missing, empty, truncated or not yet written). */
  header(): WalHeader | undefined {
    if (!this.ensureOpen()) return undefined;
    const b = new Uint8Array(WAL_HEADER_SIZE);
    if (readFull(this.fd!, b, 0) < WAL_HEADER_SIZE) return undefined;
    return decodeWalHeader(b);
  }

  /** Reads the page of frame `index` into `out` (pageSize bytes). */
  readPage(h: WalHeader, index: number, out: Uint8Array): void {
    if (
      !this.ensureOpen() ||
      readFull(this.fd!, out, frameOffset(h.pageSize, index) + FRAME_HEADER_SIZE) < out.length
    ) {
      throw new Error(`${this.path}: frame ${index} is gone (the WAL was cut or removed under the sidecar)`);
    }
  }

  /**
   * The committed transactions after frame `after` (whose running checksum is `ck`), up to frame `limit`:
   * frames are read in order and checked (salts, running checksum); a transaction counts once its commit
   * frame checks. Stops at the first frame that does not (the end of what is written, or an old
   * generation's frame). Frames of a transaction not yet committed are left for the next call.
   */
  *transactions(h: WalHeader, after: number, ck: [number, number], limit: number): Generator<WalTransaction> {
    if (!this.ensureOpen()) return;
    const fd = this.fd!;
    const frameSize = FRAME_HEADER_SIZE + h.pageSize;
    const size = fs.fstatSync(fd).size;
    const last = Math.min(limit, Math.floor((size - WAL_HEADER_SIZE) / frameSize));
    const per = Math.max(1, Math.floor((1 << 20) / frameSize));
    const buf = new Uint8Array(per * frameSize);
    let [s0, s1] = ck;
    let pages = new Map<number, number>();
    for (let first = after + 1; first <= last; first += per) {
      const n = Math.min(per, last - first + 1);
      const chunk = buf.subarray(0, n * frameSize);
      const got = readFull(fd, chunk, frameOffset(h.pageSize, first));
      for (let i = 0; i < n; i++) {
        if ((i + 1) * frameSize > got) return;
        const frame = chunk.subarray(i * frameSize, (i + 1) * frameSize);
        const v = new DataView(frame.buffer, frame.byteOffset, FRAME_HEADER_SIZE);
        if (v.getUint32(8) !== h.salt1 || v.getUint32(12) !== h.salt2) return;
        [s0, s1] = walChecksum(frame.subarray(0, 8), h.bigEndian, s0, s1);
        [s0, s1] = walChecksum(frame.subarray(FRAME_HEADER_SIZE), h.bigEndian, s0, s1);
        if (s0 !== v.getUint32(16) || s1 !== v.getUint32(20)) return;
        const pgno = v.getUint32(0);
        if (pgno === 0) return;
        const index = first + i;
        pages.set(pgno, index);
        const commit = v.getUint32(4);
        if (commit !== 0) {
          yield { pages, dbPages: commit, commitFrame: index, ck0: s0, ck1: s1 };
          pages = new Map();
        }
      }
    }
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
    this.ino = -1;
  }
}

/**
 * The committed end of the WAL as the wal-index (`DB-shm`) says: its header's mxFrame, when both copies
 * of the header agree and name the salts of `h`. SQLite's readers see frames up to mxFrame only, so a
 * commit frame past it (a writer killed between writing it and publishing it) is not committed yet.
 * Undefined when the wal-index cannot say (being rewritten, another generation): look again. `shm` is a
 * descriptor the caller keeps open as long as its process has SQLite connections to the database:
 * closing any descriptor of a file drops every POSIX lock the process holds on it, SQLite's included.
 */
export function walIndexEnd(shm: number, h: WalHeader): number | undefined {
  const b = new Uint8Array(96);
  if (readFull(shm, b, 0) < 96) return undefined;
  for (let i = 0; i < 48; i++) if (b[i] !== b[48 + i]) return undefined;
  // The wal-index is in the host's byte order (little-endian on every platform Node runs on here),
  // except the salts: SQLite copies their bytes from the WAL header as they are (big-endian).
  const v = new DataView(b.buffer);
  if (v.getUint32(0, true) !== 3007000 || b[12] !== 1) return undefined;
  if (v.getUint32(32) !== h.salt1 || v.getUint32(36) !== h.salt2) return undefined;
  return v.getUint32(16, true);
}
