/**
 * A database file being rebuilt from snapshots, with a bounded write-back cache of pages so that many
 * small runs to the same page cost one read and one write. It keeps the database checksum of what it
 * wrote (docs/FORMAT.md, "Database checksum") as it goes, so a restore need not read the file back.
 */

import type { FileHandle } from '../files/file-system.js';
import { pageTerm, zeroPage } from '../format/index.js';

/** A file of pages that snapshots are applied to. */
export class PageFile {
  private readonly cache = new Map<number, Uint8Array>();
  private pageSize = 0;
  private pages = 0;
  /** Each written page's checksum term (index pgno); pages never written are zeros. */
  private terms = new BigUint64Array(0);
  private written = new Uint8Array(0);
  private sum = 0n;

  constructor(
    readonly file: FileHandle,
    private readonly budget = 64 << 20,
  ) {}

  /** Sets page size and length in pages (truncating or extending with zeros). */
  resize(pageSize: number, pages: number): void {
    if (pageSize !== this.pageSize) this.flush();
    if (pages < this.pages || pageSize !== this.pageSize) {
      for (const pgno of this.cache.keys()) if (pgno > pages) this.cache.delete(pgno);
    }
    if (pageSize !== this.pageSize) {
      // Every page of the file changes meaning: start the checksum over (a page-size change is a full image).
      this.terms = new BigUint64Array(pages + 1);
      this.written = new Uint8Array(pages + 1);
      this.sum = 0n;
    } else {
      for (let p = pages + 1; p <= this.pages; p++) this.forget(p);
      if (pages + 1 > this.terms.length) this.grow(pages + 1);
    }
    this.pageSize = pageSize;
    this.pages = pages;
    this.file.truncate(pageSize * pages);
  }

  /** Writes `bytes` at `offset` of page `pgno`. */
  patch(pgno: number, offset: number, bytes: Uint8Array): void {
    let page = this.cache.get(pgno);
    if (!page) {
      page = new Uint8Array(this.pageSize);
      if (offset !== 0 || bytes.length !== this.pageSize) this.file.read(page, (pgno - 1) * this.pageSize);
      if (this.cache.size * this.pageSize >= this.budget) this.flush();
      this.cache.set(pgno, page);
    }
    page.set(bytes, offset);
  }

  /** Writes whole pages `first`, `first + 1`, … from `run` straight to the file (no page is cached). */
  writePages(first: number, run: Uint8Array): void {
    const n = run.length / this.pageSize;
    for (let k = 0; k < n; k++) {
      this.cache.delete(first + k);
      this.note(first + k, run.subarray(k * this.pageSize, (k + 1) * this.pageSize));
    }
    this.file.write(run, (first - 1) * this.pageSize);
  }

  /** Writes every cached page to the file, in page order, coalescing neighbours. */
  flush(): void {
    const pgnos = [...this.cache.keys()].sort((a, b) => a - b);
    let i = 0;
    while (i < pgnos.length) {
      let j = i + 1;
      while (j < pgnos.length && pgnos[j] === pgnos[j - 1]! + 1 && j - i < 256) j++;
      const run = new Uint8Array((j - i) * this.pageSize);
      for (let k = i; k < j; k++) {
        const page = this.cache.get(pgnos[k]!)!;
        run.set(page, (k - i) * this.pageSize);
        this.note(pgnos[k]!, page);
      }
      this.file.write(run, (pgnos[i]! - 1) * this.pageSize);
      i = j;
    }
    this.cache.clear();
  }

  /** The database checksum of the file as written so far (call after `flush`). */
  checksum(): bigint {
    let sum = this.sum;
    let zero: Uint8Array | undefined;
    for (let p = 1; p <= this.pages; p++) {
      if (this.written[p]) continue;
      zero ??= zeroPage(this.pageSize);
      sum ^= pageTerm(zero, p);
    }
    return sum;
  }

  private note(pgno: number, page: Uint8Array): void {
    const term = pageTerm(page, pgno);
    if (this.written[pgno]) this.sum ^= this.terms[pgno]!;
    this.sum ^= term;
    this.terms[pgno] = term;
    this.written[pgno] = 1;
  }

  private forget(pgno: number): void {
    if (pgno >= this.written.length || !this.written[pgno]) return;
    this.sum ^= this.terms[pgno]!;
    this.written[pgno] = 0;
  }

  private grow(n: number): void {
    const size = Math.max(n, this.terms.length * 2);
    const terms = new BigUint64Array(size);
    terms.set(this.terms);
    const written = new Uint8Array(size);
    written.set(this.written);
    this.terms = terms;
    this.written = written;
  }
}
