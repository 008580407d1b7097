/** How many snapshots a replica applies together: the bound on one batch's memory. Runtime-neutral. */
import type { EncodedSnapshot } from '../protocol/index.js';

/** Most memory the pages of one batch may take (bytes), see `batchCost`. */
export const BATCH_BYTES = 32 << 20;

/**
 * What applying `s` in a batch holds in memory at most: its bytes, its inflated body and a whole page
 * per patch (both at most about a page per patch).
 */
export function batchCost(s: EncodedSnapshot): number {
  return s.bytes.length + 2 * s.header.patchCount * s.header.pageSize;
}
