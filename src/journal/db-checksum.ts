/** The database checksum of a file (docs/FORMAT.md, "Database checksum"). */

import type { FileHandle } from '../files/file-system.js';
import { pageTerm } from '../format/index.js';

/** XOR of XXH64(page, seed = pgno) over the pages of `file`, read in 1 MiB chunks. */
export function databaseChecksum(file: FileHandle, pageSize: number): bigint {
  const size = file.size();
  const pages = Math.floor(size / pageSize);
  const per = Math.max(1, Math.floor((1 << 20) / pageSize));
  const buf = new Uint8Array(per * pageSize);
  let sum = 0n;
  for (let first = 0; first < pages; first += per) {
    const n = Math.min(per, pages - first);
    const chunk = buf.subarray(0, n * pageSize);
    file.read(chunk, first * pageSize);
    for (let i = 0; i < n; i++)
      sum ^= pageTerm(chunk.subarray(i * pageSize, (i + 1) * pageSize), first + i + 1);
  }
  return sum;
}
