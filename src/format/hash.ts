/**
 * XXH64, the one hash of the format (docs/FORMAT.md, "Hash"). The WASM hasher loads asynchronously once;
 * every function here is synchronous after `loadHash()` resolved.
 */
import xxhash, { type XXHashAPI } from 'xxhash-wasm';

let api: XXHashAPI | undefined;
let loading: Promise<void> | undefined;

/** Loads the hasher. Call (and await) once before any other function of this module. */
export function loadHash(): Promise<void> {
  loading ??= xxhash().then((a) => {
    api = a;
  });
  return loading;
}

function hasher(): XXHashAPI {
  if (!api) throw new Error('hash not loaded: await loadHash() first');
  return api;
}

/** XXH64 of `bytes` with `seed`. */
export function xxh64(bytes: Uint8Array, seed = 0n): bigint {
  return hasher().h64Raw(bytes, seed);
}

/** A streaming XXH64 (seed 0), for snapshots too large to hold in memory. */
export function createXxh64(): { update(bytes: Uint8Array): unknown; digest(): bigint } {
  return hasher().create64(0n);
}

/** The page's term of the database checksum: XXH64(page, seed = pgno). */
export function pageTerm(page: Uint8Array, pgno: number): bigint {
  return hasher().h64Raw(page, BigInt(pgno));
}
