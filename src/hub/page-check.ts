/**
 * Checking a snapshot against the pages it applies to: apply its patches to the old content of each page
 * it names and move the database checksum (docs/FORMAT.md, "Database checksum") as it goes — the old
 * term of each changed or dropped page out, the new term in — then compare with the snapshot's
 * postChecksum. The pages come from a `PageStore`: the hub's head file directly (catching up on stored
 * snapshots), or the head file seen through the changes of a push not stored yet (src/hub/head-file.ts).
 *
 * Patches name each page once, in ascending order, so a page is finished when the next one starts:
 * only one page is held at a time (besides what the store keeps).
 */
import {
  type ByteSource,
  FLAG_FULL_IMAGE,
  hex64,
  pageTerm,
  type SnapshotHeader,
  walkPatches,
  zeroPage,
} from '../format/index.js';

/** Where a check reads a page's current content and puts its new one. */
export interface PageStore {
  /** A copy of page `pgno` as it is now (zeros for a page past the end or cut off) and its checksum term. */
  get(pgno: number): { bytes: Uint8Array; term: bigint };
  /** Page `pgno` is now `bytes` (the store may keep the array), whose term is `term`. */
  put(pgno: number, bytes: Uint8Array, term: bigint): void;
  /** The database is now `pages` pages of `pageSize`: pages past it are gone, pages added are zeros. */
  resize(pageSize: number, pages: number): void;
}

/** Where a database stands: its checksum, page size (0: no pages yet) and size in pages. */
export interface PageCount {
  checksum: bigint;
  pageSize: number;
  dbPages: number;
}

/** A snapshot whose patches, applied to the pages it continues, do not give the checksum it claims. */
export class DoesNotApplyError extends Error {
  constructor(
    readonly txid: bigint,
    why: string,
  ) {
    super(`snapshot ${txid} does not apply: ${why}`);
    this.name = 'DoesNotApplyError';
  }
}

/** The term of an all-zero page. */
export function zeroTerm(pageSize: number, pgno: number): bigint {
  return pageTerm(zeroPage(pageSize), pgno);
}

/**
 * Applies the snapshot at `offset` of `src` (header `h`) to `store`, which holds the state `at`, and
 * returns the state after it. Throws DoesNotApplyError when its checksum is not the one it claims (the
 * store then holds a partial application), JournalFormatError when its body does not parse.
 */
export function applyChecked(
  store: PageStore,
  at: PageCount,
  src: ByteSource,
  offset: number,
  h: SnapshotHeader,
): PageCount {
  const image = (h.flags & FLAG_FULL_IMAGE) !== 0;
  const ps = h.pageSize;
  let sum: bigint;
  if (image) {
    // Everything before is replaced: unnamed pages are zeros.
    store.resize(ps, 0);
    store.resize(ps, h.dbPages);
    sum = 0n;
  } else {
    if (at.dbPages > 0 && at.pageSize !== ps) {
      throw new DoesNotApplyError(h.txid, `its page size ${ps} is not the database's ${at.pageSize}`);
    }
    sum = at.checksum;
    for (let p = h.dbPages + 1; p <= at.dbPages; p++) sum ^= store.get(p).term;
    for (let p = at.dbPages + 1; p <= h.dbPages; p++) sum ^= zeroTerm(ps, p);
    store.resize(ps, h.dbPages);
  }
  // The page being patched (patches name each page once, in order).
  let pgno = 0;
  let page: Uint8Array | undefined;
  let old = 0n;
  let next = 1; // an image: the first page not named yet
  const finish = (): void => {
    if (!page) return;
    const term = pageTerm(page, pgno);
    sum ^= old ^ term;
    store.put(pgno, page, term);
    page = undefined;
  };
  walkPatches(src, offset, h, (p, off, bytes) => {
    if (p !== pgno) {
      finish();
      pgno = p;
      if (image) {
        for (; next < p; next++) sum ^= zeroTerm(ps, next);
        next = p + 1;
        page = new Uint8Array(ps);
        old = 0n;
      } else {
        const cur = store.get(p);
        page = cur.bytes;
        old = cur.term;
      }
    }
    page!.set(bytes, off);
  });
  finish();
  if (image) for (; next <= h.dbPages; next++) sum ^= zeroTerm(ps, next);
  if (sum !== h.postChecksum) {
    throw new DoesNotApplyError(
      h.txid,
      `its pages give the database checksum ${hex64(sum)}, not the ${hex64(h.postChecksum)} it claims`,
    );
  }
  return { checksum: sum, pageSize: ps, dbPages: h.dbPages };
}
