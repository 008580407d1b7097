/** The database as of a point of its history, page by page, without writing anything. */
import type { Pages } from '../capture/outside.js';
import type { FileSystem } from '../files/file-system.js';
import type { SnapshotInfo } from '../format/index.js';
import { openHistory } from '../history/source.js';
import type { JournalPaths } from '../journal/paths.js';
import { PageIndex, type ViewTarget } from './page-index.js';

/**
 * The database as of the point `at` names, page by page, read from the history (a time-travel page
 * index: nothing is written). Close `pages` when done. Throws ViewRangeError for a point not kept.
 */
export function historyPages(
  fs: FileSystem,
  paths: Pick<JournalPaths, 'journal' | 'history'>,
  at: ViewTarget,
): { pages: Pages; snapshot: SnapshotInfo } {
  const history = openHistory(fs, paths, () => new Error(`${paths.journal} is missing`));
  try {
    const index = new PageIndex(history.source, at);
    return {
      snapshot: index.target,
      pages: {
        pageSize: index.pageSize,
        dbPages: index.dbPages,
        readPage: (pgno, out) => index.readPage(pgno, out),
        close: () => history.close(),
      },
    };
  } catch (e) {
    history.close();
    throw e;
  }
}
