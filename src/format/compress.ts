/**
 * Compressed snapshot bodies (docs/FORMAT.md, "Compressed body"): raw DEFLATE via fflate (pure JS,
 * synchronous, runs in browsers), or Node's native zlib when the runtime has it (same stream format,
 * 2–3x faster). A writer buffers a body up to BODY_COMPRESS_LIMIT and stores it compressed when that is
 * smaller; larger bodies stream through uncompressed.
 */
import { deflateSync, Inflate } from 'fflate';

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
 * Inflates a stored body to at most `max` bytes (see `maxBodyLength`), so a tiny stored body cannot
 * inflate to gigabytes. Throws a plain Error naming the problem when it is not a DEFLATE stream or is
 * larger than `max`.
 */
export function inflateBody(stored: Uint8Array, max: number): Uint8Array {
  try {
    return inflate(stored, max);
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

  constructor(
    private readonly out: (chunk: Uint8Array) => void,
    private readonly limit = BODY_COMPRESS_LIMIT,
  ) {}

  /** Takes a chunk from the body writer (which never reuses a chunk it handed out). */
  readonly sink = (chunk: Uint8Array): void => {
    if (this.passing) {
      this.out(chunk);
      return;
    }
    this.chunks.push(chunk);
    this.held += chunk.length;
    if (this.held > this.limit) {
      this.passing = true;
      this.release();
    }
  };

  /** Writes what is held. Returns true when the body was stored compressed (set FLAG_COMPRESSED). */
  finish(): boolean {
    if (this.passing || this.held === 0) return false;
    const body = concat(this.chunks, this.held);
    const packed = compressBody(body);
    if (!packed) {
      this.release();
      return false;
    }
    this.chunks = [];
    this.held = 0;
    this.out(packed);
    return true;
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
