/**
 * Opening a database through Mycelite: take the writer lock, recover from a crash, bootstrap an existing
 * database into a new journal, then hand out a better-sqlite3-like connection whose every committed
 * transaction becomes one snapshot. Runtime-neutral: the runtime (Node, browser) supplies the files.
 */
import { Capture } from '../capture/capture.js';
import { isWalDatabase, readDbPages, readPageSize } from '../capture/sqlite-header.js';
import { Database } from '../engine/database.js';
import { loadSqlite } from '../engine/sqlite.js';
import { hex, loadHash, type SnapshotInfo } from '../format/index.js';
import { databaseChecksum } from '../journal/db-checksum.js';
import { fileSource } from '../journal/file-source.js';
import { JournalWriter, type Position } from '../journal/journal-writer.js';
import { replay } from '../restore/replay.js';
import type { FileHandle, FileSystem } from '../storage/file-system.js';
import { installMyceliteVfs } from '../vfs/vfs.js';
import { journalPaths } from './paths.js';

/** What the runtime provides. */
export interface Runtime {
  fs: FileSystem;
  /** An absolute, normalized path for `path`. */
  resolve(path: string): string;
  tempPath(): string;
}

/** Options of `open`. */
export interface MyceliteOptions {
  /** Old page content held in memory per transaction before spilling to disk (bytes, default 32 MiB). */
  memoryBudget?: number;
  /** Called after each committed snapshot. */
  onSnapshot?: (snapshot: SnapshotInfo) => void;
}

/** A connection to a database replicated by Mycelite: a Database plus its journal. */
export interface MyceliteDatabase extends Database {
  /** Path of the journal file. */
  readonly journalPath: string;
  /** The journal's position: last txid and the database checksum after it. */
  position(): Position;
}

/** Errors a user can act on when opening. */
export class OpenError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'OpenError';
  }
}

const VFS_NAME = 'mycelite';

/** Opens (creating if missing) the database at `path` through Mycelite. */
export async function openWith(
  rt: Runtime,
  path: string,
  options: MyceliteOptions = {},
): Promise<MyceliteDatabase> {
  const [sqlite3] = await Promise.all([loadSqlite(), loadHash()]);
  const { fs } = rt;
  const dbPath = rt.resolve(path);
  const p = journalPaths(dbPath);
  fs.mkdir(p.dir);
  const writerLock = fs.tryLockExclusive?.(p.lock);
  if (fs.tryLockExclusive && !writerLock) {
    throw new OpenError(
      `${path} is open for writing by another process (it holds ${p.lock}); Mycelite allows one writer per database`,
    );
  }
  let journal: JournalWriter | undefined;
  let db: Database | undefined;
  let inflight: FileHandle | undefined;
  try {
    journal = JournalWriter.open(fs, p.journal);
    const dbSize = fs.exists(dbPath) ? (fs.fileSize?.(dbPath) ?? 1) : 0;
    if (dbSize === 0 && journal.position.txid > 0n) {
      throw new OpenError(
        `${path} is missing or empty but its journal holds ${journal.position.txid} snapshots: ` +
          `restore it with \`mycelite restore ${path} --output ${path}\` or move ${p.dir} away`,
      );
    }
    if (dbSize > 0) refuseWal(fs, dbPath, path);
    const hot = recoverHotJournal(fs, dbPath, journal);
    inflight = fs.open(p.inflight, { create: true });
    const rebuilt = rebuildIfInflight(fs, dbPath, journal, inflight);

    const vfs = installMyceliteVfs(sqlite3, VFS_NAME, { fs, tempPath: rt.tempPath });
    const capture = new Capture(journal, {
      fs,
      spillPath: p.spill,
      memoryBudget: options.memoryBudget,
      onSnapshot: options.onSnapshot,
      inflight,
    });
    capture.suspended = true;
    vfs.expect(dbPath, capture);
    db = Database.open(sqlite3, dbPath, { vfs: VFS_NAME });
    // The first read rolls back a hot journal left by a crash; it must not be captured.
    db.pragma('schema_version');
    capture.reset();
    capture.suspended = false;

    if (journal.position.txid === 0n && fs.fileSize!(dbPath) > 0) capture.bootstrap();
    checkAgreement(fs, dbPath, journal, hot || rebuilt || journal.tornBytes > 0, path);
    return decorate(db, journal, p.journal, () => {
      vfs.forget(dbPath);
      journal?.close();
      inflight?.close();
      writerLock?.release();
    });
  } catch (e) {
    db?.close();
    journal?.close();
    inflight?.close();
    writerLock?.release();
    if (e instanceof OpenError) throw e;
    throw new OpenError(`open ${path}: ${(e as Error).message}`, { cause: e });
  }
}

function refuseWal(fs: FileSystem, dbPath: string, path: string): void {
  const f = fs.open(dbPath, { readonly: true });
  try {
    if (f.size() >= 100 && isWalDatabase(f)) {
      throw new OpenError(
        `${path} is in WAL mode, which Mycelite does not support yet: convert it with ` +
          `\`sqlite3 ${path} "PRAGMA journal_mode=DELETE"\``,
      );
    }
  } finally {
    f.close();
  }
}

/**
 * A hot rollback journal means SQLite crashed inside a transaction and will roll it back. If our last
 * snapshot carries that journal's nonce, it was appended for the transaction being rolled back: cut it.
 */
function recoverHotJournal(fs: FileSystem, dbPath: string, journal: JournalWriter): boolean {
  const rj = `${dbPath}-journal`;
  if (!fs.exists(rj) || (fs.fileSize?.(rj) ?? 0) < 28) return false;
  const f = fs.open(rj, { readonly: true });
  const head = new Uint8Array(28);
  try {
    f.read(head, 0);
  } finally {
    f.close();
  }
  if (head[0] === 0) return false;
  const nonce = ((head[12]! << 24) | (head[13]! << 16) | (head[14]! << 8) | head[15]!) >>> 0;
  const last = journal.last;
  if (last && nonce !== 0 && last.commitTag === nonce) journal.dropLast(last);
  return true;
}

/**
 * The inflight marker is set while a transaction without a rollback journal (journal_mode=MEMORY) writes
 * the database. Set at open means a crash left the database possibly half-written, and nothing on disk
 * can roll it back: rebuild it from the journal, which holds every committed transaction.
 */
function rebuildIfInflight(
  fs: FileSystem,
  dbPath: string,
  journal: JournalWriter,
  inflight: FileHandle,
): boolean {
  const flag = new Uint8Array(1);
  inflight.read(flag, 0);
  if (flag[0] !== 1) return false;
  const tmp = `${dbPath}.rebuild`;
  const out = fs.open(tmp, { create: true });
  try {
    replay(fileSource(journal.handle), out);
    out.sync();
  } finally {
    out.close();
  }
  fs.rename(tmp, dbPath);
  fs.syncDir(dbPath);
  inflight.write(new Uint8Array([0]), 0);
  inflight.sync();
  return true;
}

/** After a crash the database must equal the journal's last state; otherwise at least the sizes must. */
function checkAgreement(
  fs: FileSystem,
  dbPath: string,
  journal: JournalWriter,
  full: boolean,
  path: string,
): void {
  const last = journal.last;
  if (!last) return;
  const f = fs.open(dbPath);
  try {
    let size = f.size();
    const want = last.dbPages * last.pageSize;
    if (size > want && size >= 100 && readDbPages(f, last.pageSize) === last.dbPages) {
      // A crash between SQLite's commit point and its truncation of a shrunk file: finish the truncation.
      f.truncate(want);
      f.sync();
      size = want;
    }
    if (size !== want) {
      throw new OpenError(
        `${path} (${size} bytes) does not match its journal (snapshot ${last.txid}: ${want} bytes): it was ` +
          `changed without Mycelite. Run \`mycelite verify ${path}\`; \`mycelite restore\` rebuilds it from the journal`,
      );
    }
    if (full && size > 0) {
      const sum = databaseChecksum(f, readPageSize(f));
      if (sum !== last.postChecksum) {
        throw new OpenError(
          `${path} does not match its journal after crash recovery (checksum ${hex(sum)}, journal ` +
            `${hex(last.postChecksum)} at snapshot ${last.txid}); rebuild it with \`mycelite restore\``,
        );
      }
    }
  } finally {
    f.close();
  }
}

function decorate(
  db: Database,
  journal: JournalWriter,
  journalPath: string,
  cleanup: () => void,
): MyceliteDatabase {
  const engineClose = db.close.bind(db);
  let closed = false;
  return Object.defineProperties(db, {
    journalPath: { value: journalPath, enumerable: true },
    position: { value: () => journal.position },
    close: {
      value: () => {
        engineClose();
        if (!closed) {
          closed = true;
          cleanup();
        }
        return db;
      },
    },
  }) as MyceliteDatabase;
}
