/**
 * Zstandard bodies in Node: zstd-napi (an optional dependency, a native addon) gives the format its zstd
 * codec (`useZstd`), so the writer stores snapshot bodies as zstd frames (docs/FORMAT.md, "Compressed
 * body") and readers decompress them natively. Where it is not installed (it failed to build), bodies are
 * DEFLATE as before and zstd bodies are read with fzstd. `MYCELITE_BODY_CODEC=deflate` keeps writing
 * DEFLATE (for readers older than the zstd flag), while still reading zstd natively.
 */
import { createRequire } from 'node:module';
import { useZstd } from '../format/compress.js';

interface ZstdNapi {
  Compressor: new () => {
    setParameters(p: { compressionLevel: number; checksumFlag: boolean }): void;
    compress(b: Uint8Array): Uint8Array;
  };
  Decompressor: new () => { decompress(b: Uint8Array): Uint8Array };
}

/** Level 1: on the benchmark's bodies about a quarter of level-1 DEFLATE's time, at a better ratio. */
const LEVEL = 1;

/** Sets the format's zstd codec from zstd-napi once; false when the package is not there. */
export function loadZstd(): boolean {
  if (loaded !== undefined) return loaded;
  let z: ZstdNapi;
  try {
    z = createRequire(import.meta.url)('zstd-napi') as ZstdNapi;
  } catch {
    loaded = false;
    return loaded;
  }
  const c = new z.Compressor();
  // The content checksum is what makes a frame read the same by every decoder (format/compress.ts).
  c.setParameters({ compressionLevel: LEVEL, checksumFlag: true });
  const d = new z.Decompressor();
  const write = process.env['MYCELITE_BODY_CODEC'] !== 'deflate';
  useZstd({
    compress: write ? (body) => c.compress(body) : undefined,
    decompress: (frame) => {
      const b = d.decompress(frame);
      return new Uint8Array(b.buffer, b.byteOffset, b.length);
    },
  });
  loaded = true;
  return loaded;
}

let loaded: boolean | undefined;
