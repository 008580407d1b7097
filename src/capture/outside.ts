/**
 * Recording a change made outside Mycelite: the database file differs from the journal's last state
 * (another program wrote it, or the journal lost what the file has). The difference becomes one snapshot
 * of its own, flagged `outside`, so that replay, restore, verify and replicas stay correct and the file
 * is never changed to fit the journal.
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
import type { FileHandle } from '../storage/file-system.js';
import { readDbPages, readPageSize } from './sqlite-header.js';

/** The journal's last state, page by page (a time-travel page index over the history). */
export interface OldState {
  readonly pageSize: number;
  readonly dbPages: number;
  /** Page `pgno` (1-based) of that state into `out` (pageSize bytes). */
  readPage(pgno: number, out: Uint8Array): void;
  /** Releases what reading the pages holds open. */
  close?(): void;
}

/**
 * Appends to `journal` (and fsyncs) one snapshot taking its last state to the content of `db`: the pages
 * that differ from `old`, or a full image when `old` is unknown (the journal's pages cannot be read) or
 * the page size changed. Returns it, or undefined when the file equals the journal's state.
 */
export function appendOutsideChange(
  journal: JournalWriter,
  db: FileHandle,
  old: OldState | undefined,
): SnapshotInfo | undefined {
  const size = db.size();
  const pageSize = size >= 100 ? readPageSize(db) : (old?.pageSize ?? 4096);
  const dbPages = size >= 100 ? readDbPages(db, pageSize) : 0;
  if (dbPages * pageSize > size) {
    throw new Error(
      `${db.path}: its header says ${dbPages} pages of ${pageSize} bytes but it has ${size} bytes`,
    );
  }
  const full = old === undefined || old.dbPages === 0 || old.pageSize !== pageSize;
  const appender = journal.begin();
  const packer = new BodyCompressor(appender.sink);
  const body = new SnapshotBodyWriter(pageSize, packer.sink, new Uint8Array(BODY_CHUNK_SIZE));
  let checksum = full ? 0n : journal.position.checksum;
  const neu = new Uint8Array(pageSize);
  const was = new Uint8Array(pageSize);
  try {
    const last = full ? dbPages : Math.max(dbPages, old.dbPages);
    for (let pgno = 1; pgno <= last; pgno++) {
      const existed = !full && pgno <= old.dbPages;
      if (existed) old.readPage(pgno, was);
      if (pgno > dbPages) {
        checksum ^= pageTerm(was, pgno); // cut off
        continue;
      }
      db.read(neu, (pgno - 1) * pageSize);
      if (full) {
        body.addFullPage(pgno, neu);
        checksum ^= pageTerm(neu, pgno);
      } else if (body.addDiff(pgno, existed ? was : undefined, neu) || !existed) {
        checksum ^= (existed ? pageTerm(was, pgno) : 0n) ^ pageTerm(neu, pgno);
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
        flags: FLAG_OUTSIDE | (full ? FLAG_FULL_IMAGE : 0) | (compressed ? FLAG_COMPRESSED : 0),
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
