/** Random-access bytes a journal is read from: a file (Node, OPFS) or memory. */

/** Synchronous random-access bytes. `read` returns exactly `length` bytes or throws. */
export interface ByteSource {
  size(): number;
  read(offset: number, length: number): Uint8Array;
}

/** A ByteSource over bytes in memory. */
export function memorySource(bytes: Uint8Array): ByteSource {
  return {
    size: () => bytes.length,
    read(offset, length) {
      if (offset < 0 || offset + length > bytes.length) {
        throw new RangeError(`read ${length} bytes at ${offset} past the end (${bytes.length})`);
      }
      return bytes.subarray(offset, offset + length);
    },
  };
}

/**
 * Sequential reader over a range of a ByteSource with a bounded window, so a snapshot of any size is
 * parsed in constant memory. Views it returns are valid until the next call.
 */
export class ChunkReader {
  private buf: Uint8Array = new Uint8Array(0);
  private bufStart = 0;
  pos: number;

  constructor(
    private readonly src: ByteSource,
    start: number,
    readonly end: number,
    private readonly window = 1 << 20,
  ) {
    this.pos = start;
    this.bufStart = start;
  }

  /** Bytes left before `end`. */
  get remaining(): number {
    return this.end - this.pos;
  }

  /** The next `n` bytes (n ≤ remaining; caller checks). */
  take(n: number): Uint8Array {
    const rel = this.pos - this.bufStart;
    if (rel + n > this.buf.length) {
      const len = Math.min(Math.max(n, this.window), this.end - this.pos);
      this.buf = this.src.read(this.pos, len);
      this.bufStart = this.pos;
      this.pos += n;
      return this.buf.subarray(0, n);
    }
    this.pos += n;
    return this.buf.subarray(rel, rel + n);
  }
}

/**
 * A ByteSource that reads `src` in blocks of `block` bytes and answers small reads from the last block,
 * so a scan of many small snapshots costs one read per block instead of two or three per snapshot.
 * Returned views stay valid (each block is a new array); reads larger than a block go straight through.
 */
export function blockSource(src: ByteSource, block = 1 << 20): ByteSource {
  let buf: Uint8Array = new Uint8Array(0);
  let at = 0;
  return {
    size: () => src.size(),
    read(offset, length) {
      if (offset >= at && offset + length <= at + buf.length)
        return buf.subarray(offset - at, offset - at + length);
      if (length >= block) return src.read(offset, length);
      const n = Math.min(block, src.size() - offset);
      if (n < length) return src.read(offset, length); // past the end: the source says so
      buf = src.read(offset, n);
      at = offset;
      return buf.subarray(0, length);
    },
  };
}
