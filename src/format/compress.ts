/**
 * Compressed snapshot bodies (docs/FORMAT.md, "Compressed body"): raw DEFLATE via fflate (pure JS,
 * synchronous, runs in browsers), or Node's native zlib when the runtime has it (same stream format,
 * 2–3x faster); or one Zstandard frame (flags bit 4) where the runtime gives a zstd codec (`useZstd`:
 * Node with the optional zstd-napi), read everywhere (fzstd, pure JS, when no codec is given). A writer
 * buffers a body up to BODY_COMPRESS_LIMIT and stores it compressed when that is smaller; larger bodies
 * stream through uncompressed.
 */
import { deflateSync, Inflate } from 'fflate';
import { decompress as fzstdDecompress } from 'fzstd';
import { FLAG_COMPRESSED, FLAG_ZSTD } from './constants.js';
import { xxh64 } from './hash.js';

interface RawDeflate {
  deflateRawSync(b: Uint8Array, o: { level: number }): Uint8Array;
  inflateRawSync(b: Uint8Array, o: { maxOutputLength: number }): Uint8Array;
}

/** Node's zlib, reached without a static `node:` import so this module still runs in browsers. */
const native: RawDeflate | undefined = (() => {
  const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
  try {
    return proc?.getBuiltinModule?.('node:zlib') as RawDeflate | undefined;
  } catch {
    return undefined;
  }
})();

/**
 * The same raw DEFLATE as `deflate` below (same library, same parameters, the same bytes) from a
 * stream kept between bodies, set by the Node runtime when Mycelite's addon has it (its `deflateRaw`:
 * node:zlib's synchronous call makes and tears down a stream each time, about 30 µs, half the time of a
 * one-row commit's ~540-byte body). Returns null when the result would not be smaller than the body.
 */
let kept: ((body: Uint8Array) => Uint8Array | null) | undefined;

/** Sets (or with undefined, removes) the kept-stream deflate `compressBody` uses; see `kept`. */
export function useKeptDeflate(f: ((body: Uint8Array) => Uint8Array | null) | undefined): void {
  kept = f;
}

/**
 * Level 1 with a 4 KiB window (windowBits 12, Node only; any raw-DEFLATE reader inflates it): on the
 * bodies of workloads a, b, c about 25-30 % less time than the default 32 KiB window, for a ratio 5 %
 * lower on a, the same on b and 2 % higher on c (docs/BENCHMARKS.md, "Optimisations").
 */
function deflate(body: Uint8Array): Uint8Array {
  return native
    ? native.deflateRawSync(body, { level: 1, windowBits: 12, memLevel: 9 } as { level: number })
    : deflateSync(body, { level: 1 });
}

/** Inflates at most `max` bytes: a stream that would produce more throws before allocating them. */
function inflate(stored: Uint8Array, max: number): Uint8Array {
  const limit = Math.max(1, Math.min(max, 2 ** 31 - 1));
  if (native) {
    let b: Uint8Array;
    try {
      b = native.inflateRawSync(stored, { maxOutputLength: limit });
    } catch (e) {
      if ((e as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') throw tooLarge(max);
      throw e;
    }
    return new Uint8Array(b.buffer, b.byteOffset, b.length);
  }
  const chunks: Uint8Array[] = [];
  let length = 0;
  let done = false;
  const inf = new Inflate((chunk, final) => {
    length += chunk.length;
    if (length > limit) throw tooLarge(max);
    chunks.push(chunk);
    if (final) done = true;
  });
  inf.push(stored, true);
  if (!done) throw new Error('unexpected EOF');
  return concat(chunks, length);
}

function tooLarge(max: number): Error {
  return new Error(`it inflates past ${max} bytes, the most its header allows`);
}

/** A Zstandard codec a runtime provides (Node: zstd-napi, an optional dependency; src/node/zstd.ts). */
export interface ZstdCodec {
  /**
   * One frame holding `body`, with its content size in the frame header and its content checksum (the
   * low 32 bits of XXH64); absent: write DEFLATE.
   */
  compress?(body: Uint8Array): Uint8Array;
  /** The content of `frame`, one frame already checked to declare `size` bytes (at most what is allowed). */
  decompress(frame: Uint8Array, size: number): Uint8Array;
}

let zstd: ZstdCodec | undefined;

/**
 * Sets (or with undefined, removes) the Zstandard codec: from then on `BodyCompressor` stores bodies as
 * zstd frames (flags bit 4; level 1: on the benchmark's bodies about a quarter of DEFLATE's time at a
 * better ratio, docs/BENCHMARKS.md), and zstd bodies are read with it instead of fzstd.
 */
export function useZstd(codec: ZstdCodec | undefined): void {
  zstd = codec;
}

/** The Zstandard codec in use, if any (`useZstd`). */
export function zstdCodec(): ZstdCodec | undefined {
  return zstd;
}

/**
 * The content size of the one Zstandard frame that is the whole of `b` (RFC 8878, 3.1.1), walking its
 * block headers to its end. Throws unless `b` is exactly one frame, without dictionary, that declares its
 * content size and carries a content checksum: a writer's frames always do; a reader allocates no more
 * than the size, and the checksum makes every decoder agree on a frame (fzstd believes a single-segment
 * frame's size even when its blocks hold more or less: the checksum then fails).
 */
export function zstdFrameContentSize(b: Uint8Array): number {
  if (b.length < 6 || b[0] !== 0x28 || b[1] !== 0xb5 || b[2] !== 0x2f || b[3] !== 0xfd) {
    throw new Error('not a Zstandard frame');
  }
  const fhd = b[4]!;
  if ((fhd & 0x08) !== 0) throw new Error('a Zstandard frame header with its reserved bit set');
  if ((fhd & 0x03) !== 0) throw new Error('a Zstandard frame with a dictionary');
  const single = (fhd & 0x20) !== 0;
  const fcsBytes = [single ? 1 : 0, 2, 4, 8][fhd >> 6]!;
  if (fcsBytes === 0) throw new Error('a Zstandard frame that does not declare its content size');
  if ((fhd & 0x04) === 0) throw new Error('a Zstandard frame without its content checksum');
  let at = 5 + (single ? 0 : 1);
  if (at + fcsBytes > b.length) throw new Error('a truncated Zstandard frame');
  let size = 0;
  for (let i = fcsBytes - 1; i >= 0; i--) size = size * 256 + b[at + i]!;
  if (fcsBytes === 2) size += 256;
  at += fcsBytes;
  for (;;) {
    if (at + 3 > b.length) throw new Error('a truncated Zstandard frame');
    const bh = b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16);
    at += 3;
    const type = (bh >> 1) & 3;
    if (type === 3) throw new Error('a Zstandard block of the reserved type');
    at += type === 1 ? 1 : bh >>> 3;
    if ((bh & 1) !== 0) break;
  }
  at += 4; // the content checksum
  if (at !== b.length) {
    throw new Error(at > b.length ? 'a truncated Zstandard frame' : 'bytes after the Zstandard frame');
  }
  return size;
}

/** Decompresses one zstd frame of at most `max` bytes (checked before anything is allocated). */
function unzstd(stored: Uint8Array, max: number): Uint8Array {
  const size = zstdFrameContentSize(stored);
  if (size > Math.min(max, 2 ** 31 - 1)) throw tooLarge(max);
  if (zstd) {
    // libzstd checks the content's size and checksum itself.
    const out = zstd.decompress(stored, size);
    if (out.length !== size)
      throw new Error(`the frame holds ${out.length} bytes, not the ${size} it declares`);
    return out;
  }
  const out = fzstdDecompress(stored, new Uint8Array(size));
  const at = stored.length - 4;
  const sum =
    (stored[at]! | (stored[at + 1]! << 8) | (stored[at + 2]! << 16) | (stored[at + 3]! << 24)) >>> 0;
  if (out.length !== size || Number(xxh64(out) & 0xffffffffn) !== sum) {
    throw new Error("the frame's content does not match its size and checksum");
  }
  return out;
}

/** Largest body the writer compresses (and so the most a reader inflates into memory). */
export const BODY_COMPRESS_LIMIT = 16 * 1024 * 1024;

/** Compresses a whole body; undefined when compression does not make it smaller. */
export function compressBody(body: Uint8Array): Uint8Array | undefined {
  if (body.length < 64) return undefined;
  if (kept) return kept(body) ?? undefined;
  const packed = deflate(body);
  return packed.length < body.length ? packed : undefined;
}

/**
 * Compresses a body as a writer stores it: a zstd frame where a codec was given (`useZstd`), else raw
 * DEFLATE. Returns the bytes and the header flags saying so, or undefined: store the body as it is.
 */
export function packBody(body: Uint8Array): { bytes: Uint8Array; flags: number } | undefined {
  if (body.length < 64) return undefined;
  if (zstd?.compress) {
    const packed = zstd.compress(body);
    return packed.length < body.length ? { bytes: packed, flags: FLAG_COMPRESSED | FLAG_ZSTD } : undefined;
  }
  const packed = compressBody(body);
  return packed ? { bytes: packed, flags: FLAG_COMPRESSED } : undefined;
}

/**
 * Inflates a stored body to at most `max` bytes (see `maxBodyLength`), so a tiny stored body cannot
 * inflate to gigabytes: raw DEFLATE, or with FLAG_ZSTD in `flags` (the snapshot's) one zstd frame. Throws
 * a plain Error naming the problem when it is not such a stream or is larger than `max`.
 */
export function inflateBody(stored: Uint8Array, max: number, flags = FLAG_COMPRESSED): Uint8Array {
  try {
    return (flags & FLAG_ZSTD) !== 0 ? unzstd(stored, max) : inflate(stored, max);
  } catch (e) {
    throw new Error(`compressed body does not inflate (${(e as Error).message})`);
  }
}

/**
 * Sits between a body writer and the journal: collects chunks while the body is small, then on
 * `finish()` writes either the compressed body or the chunks as they were. Past `limit` bytes it gives up
 * and passes everything through uncompressed, so memory stays bounded for huge transactions.
 */
export class BodyCompressor {
  private chunks: Uint8Array[] = [];
  private held = 0;
  private passing = false;

  /**
   * `outCopies`: `out` is done with each chunk when it returns (it copies or writes it), so a chunk this
   * compressor passed on or released may be written over (the sink says so): a body too large to
   * compress then streams through one chunk instead of a new one per 256 KiB.
   */
  constructor(
    private readonly out: (chunk: Uint8Array) => void,
    private readonly limit = BODY_COMPRESS_LIMIT,
    private readonly outCopies = false,
  ) {}

  /**
   * Takes a chunk from the body writer; returns whether it is kept (held here, or by `out`): false lets
   * the writer write its next bytes into it.
   */
  readonly sink = (chunk: Uint8Array): boolean => {
    if (this.passing) {
      this.out(chunk);
      return !this.outCopies;
    }
    this.chunks.push(chunk);
    this.held += chunk.length;
    if (this.held > this.limit) {
      this.passing = true;
      this.release();
      return !this.outCopies;
    }
    return true;
  };

  /**
   * Writes what is held. Returns the flags to set in the snapshot's header: FLAG_COMPRESSED (with
   * FLAG_ZSTD for a zstd frame) when the body was stored compressed, else 0.
   */
  finish(): number {
    if (this.passing || this.held === 0) return 0;
    const body = concat(this.chunks, this.held);
    const packed = packBody(body);
    if (!packed) {
      this.release();
      return 0;
    }
    this.chunks = [];
    this.held = 0;
    this.out(packed.bytes);
    return packed.flags;
  }

  private release(): void {
    for (const c of this.chunks) this.out(c);
    this.chunks = [];
    this.held = 0;
  }
}

function concat(chunks: Uint8Array[], length: number): Uint8Array {
  if (chunks.length === 1) return chunks[0]!;
  const all = new Uint8Array(length);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return all;
}
