/**
 * Snapshots that are not a SQLite transaction: a change made outside Mycelite (the database file differs
 * from the journal's last state: another program wrote it, or the journal lost what the file has),
 * recorded as one snapshot flagged `outside` so that replay, restore, verify and replicas stay correct
 * and the file is never changed to fit the journal; and a revert, one snapshot taking the database back
 * to an earlier state, so that history stays linear and replicas follow it.
 */

import type { FileHandle } from '../files/file-system.js';
import {
  BODY_CHUNK_SIZE,
  BodyCompressor,
  FLAG_FULL_IMAGE,
  FLAG_OUTSIDE,
  pageTerm,
  SnapshotBodyWriter,
  type SnapshotInfo,
} from '../format/index.js';
import type { JournalWriter } from '../journal/journal-writer.js';
import { readDbPages, readPageSize } from '../journal/sqlite-header.js';

/** A database state, page by page (a file, or a time-travel page index over the history). */
export interface Pages {
  readonly pageSize: number;
  readonly dbPages: number;
  /** Page `pgno` (1-based) into `out` (pageSize bytes). */
  readPage(pgno: number, out: Uint8Array): void;
  /** Releases what reading the pages holds open. */
  close?(): void;
}

/** The empty database (no pages). */
export const NO_PAGES: Pages = { pageSize: 0, dbPages: 0, readPage: (_pgno, out) => out.fill(0) };

/** The database file `db` as it is now, page by page. */
export function filePages(db: FileHandle): Pages {
  const size = db.size();
  const pageSize = size >= 100 ? readPageSize(db) : 0;
  const dbPages = size >= 100 ? readDbPages(db, pageSize) : 0;
  if (dbPages * pageSize > size) {
    throw new Error(
      `${db.path}: its header says ${dbPages} pages of ${pageSize} bytes but it has ${size} bytes`,
    );
  }
  return { pageSize, dbPages, readPage: (pgno, out) => void db.read(out, (pgno - 1) * pageSize) };
}

/** Options of appendChange. */
export interface ChangeOptions {
  /** Snapshot flags to add (FLAG_OUTSIDE). */
  flags?: number;
  /** Sees every page written, in order. */
  changed?: (pgno: number, page: Uint8Array) => void;
  /**
   * The only pages that may differ (ascending; pages between the two sizes are added): the snapshot then
   * costs these pages, not the database. Default: every page.
   */
  pages?: readonly number[];
  /** The database checksum the new state must have: else nothing is appended and this throws. */
  expect?: bigint;
}

/**
 * Appends to `journal` (and fsyncs) one snapshot taking the state `from` (the journal's last state, or
 * undefined when its pages cannot be read) to the state `to`: the pages that differ, or a full image when
 * `from` is unknown, empty or of another page size. Returns the snapshot, or undefined when the two
 * states are equal.
 */
export function appendChange(
  journal: JournalWriter,
  from: Pages | undefined,
  to: Pages,
  options: ChangeOptions = {},
): SnapshotInfo | undefined {
  const pageSize = to.pageSize || from?.pageSize || 4096;
  const dbPages = to.dbPages;
  const old = from && from.dbPages > 0 && from.pageSize === pageSize ? from : undefined;
  const full = old === undefined;
  const appender = journal.begin();
  const packer = new BodyCompressor(appender.sink, undefined, true); // the appender copies or writes
  const body = new SnapshotBodyWriter(pageSize, packer.sink, new Uint8Array(BODY_CHUNK_SIZE));
  let checksum = full ? 0n : journal.position.checksum;
  const neu = new Uint8Array(pageSize);
  const was = new Uint8Array(pageSize);
  try {
    for (const pgno of candidates(full, dbPages, old?.dbPages ?? 0, options.pages)) {
      const existed = old !== undefined && pgno <= old.dbPages;
      if (existed) old.readPage(pgno, was);
      if (pgno > dbPages) {
        checksum ^= pageTerm(was, pgno); // cut off
        continue;
      }
      to.readPage(pgno, neu);
      if (full) {
        body.addFullPage(pgno, neu);
        checksum ^= pageTerm(neu, pgno);
        options.changed?.(pgno, neu);
      } else if (body.addDiff(pgno, existed ? was : undefined, neu) || !existed) {
        checksum ^= (existed ? pageTerm(was, pgno) : 0n) ^ pageTerm(neu, pgno);
        options.changed?.(pgno, neu);
      }
    }
    body.finish();
    if (options.expect !== undefined && checksum !== options.expect) {
      throw new Error(
        `the new state's checksum ${checksum.toString(16)} is not the expected ${options.expect.toString(16)}`,
      );
    }
    if (!full && body.patchCount === 0 && dbPages === old.dbPages) {
      appender.cancel();
      return undefined;
    }
    const compressed = packer.finish();
    const snap = appender.finish(
      {
        pageSize,
        dbPages,
        flags: (options.flags ?? 0) | (full ? FLAG_FULL_IMAGE : 0) | compressed,
        postChecksum: checksum,
        commitTag: 0,
      },
      body.patchCount,
      true,
    );
    journal.confirm();
    return snap;
  } catch (e) {
    appender.cancel();
    throw e;
  }
}

/** The page numbers to compare, ascending: all, or `pages` plus those between the two sizes. */
function* candidates(
  full: boolean,
  dbPages: number,
  oldPages: number,
  pages?: readonly number[],
): Generator<number> {
  const last = Math.max(dbPages, oldPages);
  if (full || pages === undefined) {
    for (let pgno = 1; pgno <= last; pgno++) yield pgno;
    return;
  }
  const low = Math.min(dbPages, oldPages);
  let prev = 0;
  for (const pgno of pages) {
    if (pgno > low) break;
    if (pgno > prev) yield pgno;
    prev = pgno;
  }
  for (let pgno = Math.max(low, prev) + 1; pgno <= last; pgno++) yield pgno;
}

/**
 * Records the content of `db` as a change made outside Mycelite after the journal's last state `old`
 * (see appendChange). The file is only read.
 */
export function appendOutsideChange(
  journal: JournalWriter,
  db: FileHandle,
  old: Pages | undefined,
): SnapshotInfo | undefined {
  return appendChange(journal, old, filePages(db), { flags: FLAG_OUTSIDE });
}
