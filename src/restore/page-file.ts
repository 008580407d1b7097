/**
 * A database file being rebuilt from snapshots, with a bounded write-back cache of pages so that many
 * small runs to the same page cost one read and one write.
 */
import type { FileHandle } from '../storage/file-system.js';

/** A file of pages that snapshots are applied to. */
export class PageFile {
  private readonly cache = new Map<number, Uint8Array>();
  private pageSize = 0;
  private pages = 0;

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

  /** Writes every cached page to the file, in page order, coalescing neighbours. */
  flush(): void {
    const pgnos = [...this.cache.keys()].sort((a, b) => a - b);
    let i = 0;
    while (i < pgnos.length) {
      let j = i + 1;
      while (j < pgnos.length && pgnos[j] === pgnos[j - 1]! + 1 && j - i < 256) j++;
      const run = new Uint8Array((j - i) * this.pageSize);
      for (let k = i; k < j; k++) run.set(this.cache.get(pgnos[k]!)!, (k - i) * this.pageSize);
      this.file.write(run, (pgnos[i]! - 1) * this.pageSize);
      i = j;
    }
    this.cache.clear();
  }
}
