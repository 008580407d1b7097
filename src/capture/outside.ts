/**
 * Snapshots that are not a SQLite transaction: a change made outside Mycelite (the database file differs
 * from the journal's last state: another program wrote it, or the journal lost what the file has),
 * recorded as one snapshot flagged `outside` so that replay, restore, verify and replicas stay correct
 * and the file is never changed to fit the journal; and a revert, one snapshot taking the database back
 * to an earlier state, so that history stays linear and replicas follow it.
 */
import {
  BODY_CHUNK_SIZE,
  BodyCompressor,
  FLAG_COMPRESSED,
  FLAG_FULL_IMAGE,
  FLAG_OUTSIDE,
  pageTerm,
  SnapshotBodyWriter,
  type SnapshotInfo,
} from '../format/index.js';
import type { JournalWriter } from '../journal/journal-writer.js';
import { readDbPages, readPageSize } from '../journal/sqlite-header.js';
import type { FileHandle } from '../storage/file-system.js';

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

/**
 * Appends to `journal` (and fsyncs) one snapshot taking the state `from` (the journal's last state, or
 * undefined when its pages cannot be read) to the state `to`: the pages that differ, or a full image when
 * `from` is unknown, empty or of another page size. `changed` sees every page written, in order. Returns
 * the snapshot, or undefined when the two states are equal.
 */
export function appendChange(
  journal: JournalWriter,
  from: Pages | undefined,
  to: Pages,
  flags: number,
  changed?: (pgno: number, page: Uint8Array) => void,
): SnapshotInfo | undefined {
  const pageSize = to.pageSize || from?.pageSize || 4096;
  const dbPages = to.dbPages;
  const old = from && from.dbPages > 0 && from.pageSize === pageSize ? from : undefined;
  const full = old === undefined;
  const appender = journal.begin();
  const packer = new BodyCompressor(appender.sink);
  const body = new SnapshotBodyWriter(pageSize, packer.sink, new Uint8Array(BODY_CHUNK_SIZE));
  let checksum = full ? 0n : journal.position.checksum;
  const neu = new Uint8Array(pageSize);
  const was = new Uint8Array(pageSize);
  try {
    const last = Math.max(dbPages, old?.dbPages ?? 0);
    for (let pgno = 1; pgno <= last; pgno++) {
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
        changed?.(pgno, neu);
      } else if (body.addDiff(pgno, existed ? was : undefined, neu) || !existed) {
        checksum ^= (existed ? pageTerm(was, pgno) : 0n) ^ pageTerm(neu, pgno);
        changed?.(pgno, neu);
      }
    }
    body.finish();
    if (!full && body.patchCount === 0 && dbPages === old.dbPages) {
      appender.cancel();
      return undefined;
    }
    const compressed = packer.finish();
    const snap = appender.finish(
      {
        pageSize,
        dbPages,
        flags: flags | (full ? FLAG_FULL_IMAGE : 0) | (compressed ? FLAG_COMPRESSED : 0),
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

/**
 * Records the content of `db` as a change made outside Mycelite after the journal's last state `old`
 * (see appendChange). The file is only read.
 */
export function appendOutsideChange(
  journal: JournalWriter,
  db: FileHandle,
  old: Pages | undefined,
): SnapshotInfo | undefined {
  return appendChange(journal, old, filePages(db), FLAG_OUTSIDE);
}
