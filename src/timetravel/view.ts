/**
 * Time-travel views: a read-only Database showing a Mycelite database as of a txid or a moment, read
 * straight from its journal through a page index. Nothing is written: the view is a virtual file served
 * by a read-only VFS ("mycelite-views"), and pages are built on first read and cached.
 */

import { Database } from '../engine/database.js';
import { loadSqlite } from '../engine/sqlite.js';
import type { FileHandle, FileSystem, OpenOptions, Runtime } from '../files/file-system.js';
import { loadHash } from '../format/index.js';
import { openHistory } from '../history/source.js';
import { journalPaths } from '../journal/paths.js';
import { installMyceliteVfs } from '../vfs/vfs.js';
import { PageIndex, ViewRangeError, type ViewTarget } from './page-index.js';

export { ViewRangeError, type ViewTarget };

const VFS_NAME = 'mycelite-views';
/** Bytes of built pages each view keeps. */
const CACHE_BYTES = 32 << 20;

const views = new Map<string, FileHandle>();
let counter = 0;

/** A file whose bytes are the database as of the index's target. */
function viewFile(path: string, index: PageIndex): FileHandle {
  const { pageSize, dbPages } = index;
  const cache = new Map<number, Uint8Array>();
  const page = (pgno: number): Uint8Array => {
    let p = cache.get(pgno);
    if (p) return p;
    p = new Uint8Array(pageSize);
    index.readPage(pgno, p);
    if (cache.size * pageSize >= CACHE_BYTES) cache.delete(cache.keys().next().value!);
    cache.set(pgno, p);
    return p;
  };
  const readOnly = (): never => {
    throw new Error(`${path} is a read-only time-travel view`);
  };
  return {
    path,
    size: () => pageSize * dbPages,
    read(buf, offset) {
      const end = Math.min(offset + buf.length, pageSize * dbPages);
      let done = 0;
      for (let at = offset; at < end; ) {
        const pgno = Math.floor(at / pageSize) + 1;
        const inPage = at - (pgno - 1) * pageSize;
        const n = Math.min(pageSize - inPage, end - at);
        buf.set(page(pgno).subarray(inPage, inPage + n), at - offset);
        at += n;
        done += n;
      }
      if (done < buf.length) buf.fill(0, done);
      return done;
    },
    write: readOnly,
    truncate: readOnly,
    sync() {},
    close() {},
  };
}

/** Serves the registered views by path and everything else (temporary files) from `fs`. */
function viewFileSystem(fs: FileSystem): FileSystem {
  return {
    open: (p: string, o?: OpenOptions) => views.get(p) ?? fs.open(p, o),
    exists: (p) => views.has(p) || fs.exists(p),
    fileSize: (p) => views.get(p)?.size() ?? fs.fileSize(p),
    delete: (p, s) => {
      if (!views.has(p)) fs.delete(p, s);
    },
    syncDir: (p) => fs.syncDir(p),
    mkdir: (p) => fs.mkdir(p),
    rename: (a, b) => fs.rename(a, b),
  };
}

/**
 * Opens a read-only view of the database at `file` as of `at` (a txid, or the last snapshot at or before
 * a Date). Throws ViewRangeError, naming the restorable range, when the journal holds no such point.
 * The view reads the journal only; it may be opened while a writer writes. Close it like any Database.
 */
export async function openView(runtime: Runtime, file: string, at: ViewTarget): Promise<Database> {
  await loadHash();
  const sqlite3 = await loadSqlite();
  const dbPath = runtime.resolve(file);
  const paths = journalPaths(dbPath);
  const journal = openHistory(
    runtime.fs,
    paths,
    () => new ViewRangeError(`${dbPath} has no Mycelite journal (${paths.journal}): nothing to view`),
  );
  let index: PageIndex;
  try {
    index = new PageIndex(journal.source, at);
  } catch (e) {
    journal.close();
    throw e;
  }
  installMyceliteVfs(sqlite3, VFS_NAME, { fs: viewFileSystem(runtime.fs), tempPath: runtime.tempPath });
  const viewPath = `${dbPath}@txid-${index.target.txid}-view-${counter++}`;
  views.set(viewPath, viewFile(viewPath, index));
  let db: Database;
  try {
    db = Database.open(sqlite3, viewPath, { readonly: true, vfs: VFS_NAME });
  } catch (e) {
    views.delete(viewPath);
    journal.close();
    throw e;
  }
  const close = db.close.bind(db);
  db.close = () => {
    close();
    views.delete(viewPath);
    journal.close();
    return db;
  };
  return db;
}
