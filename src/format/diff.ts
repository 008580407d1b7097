/**
 * Page diff: the byte runs where a new page differs from its old content. Compares 32-bit words (no
 * per-byte loop except at the two ends of a run) and merges runs separated by a gap smaller than a run
 * header, since a separate run would cost more than the bytes it skips.
 */

/** Runs closer than this many equal words are merged into one. */
const GAP_WORDS = 2;

const zeroPages = new Map<number, Uint8Array>();

/** A shared all-zero page of `size` bytes (never write to it). */
export function zeroPage(size: number): Uint8Array {
  let z = zeroPages.get(size);
  if (!z) {
    z = new Uint8Array(size);
    zeroPages.set(size, z);
  }
  return z;
}

function words(b: Uint8Array): Uint32Array {
  if (b.byteOffset % 4 !== 0) throw new Error('page buffers must be 4-byte aligned');
  return new Uint32Array(b.buffer, b.byteOffset, b.length >>> 2);
}

/**
 * Computes the runs where `neu` differs from `old` (both `neu.length` bytes, a multiple of 4, 4-byte
 * aligned). Writes [start, end) byte pairs into `out` and returns the number of runs. `out` must hold
 * `neu.length / 2` entries (the most runs a page can have).
 */
export function diffPage(old: Uint8Array, neu: Uint8Array, out: Int32Array): number {
  const a = words(old);
  const b = words(neu);
  const n = b.length;
  let runs = 0;
  let i = 0;
  while (i < n) {
    if (a[i] === b[i]) {
      i++;
      continue;
    }
    const first = i;
    let last = i;
    let j = i + 1;
    while (j < n) {
      if (a[j] !== b[j]) last = j;
      else if (j - last > GAP_WORDS) break;
      j++;
    }
    // Narrow the run to the bytes that differ inside its first and last words.
    let start = first * 4;
    while (old[start] === neu[start]) start++;
    let end = last * 4 + 4;
    while (old[end - 1] === neu[end - 1]) end--;
    out[runs * 2] = start;
    out[runs * 2 + 1] = end;
    runs++;
    i = j;
  }
  return runs;
}

/** True when the two pages are byte-for-byte equal. */
export function samePage(old: Uint8Array, neu: Uint8Array): boolean {
  const a = words(old);
  const b = words(neu);
  for (let i = 0; i < b.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
