/**
 * Mycelite for Node.js: open a SQLite database whose every committed transaction is captured in a
 * journal beside it.
 *
 * @example
 * ```ts
 * import { open } from 'mycelite';
 * const db = await open('app.db');
 * db.exec('create table if not exists t(a)');
 * db.prepare('insert into t values (?)').run(Math.random());
 * console.log(db.position()); // { txid: 2n, checksum: ... }
 * db.close();
 * ```
 */
import * as path from 'node:path';
import { type MyceliteDatabase, type MyceliteOptions, openWith } from '../writer/open.js';
import { asFound } from './as-found.js';
import { nodeRuntime } from './runtime.js';

export { OpenError } from '../writer/errors.js';
export type { HubOptions, MyceliteDatabase, MyceliteOptions, OpenWarning } from '../writer/open.js';

import { OpenError } from '../writer/errors.js';
import { badTimeout, DEFAULT_TIMEOUT, lagsJournal, type OpenWarning, refuseWal } from '../writer/open.js';
import { leaveWal } from './from-wal.js';

export { SyncError } from '../client/push-errors.js';
export type { SyncEvents, SyncState, SyncStatus, WriterSync } from '../client/pusher.js';

import { Database } from '../engine/database.js';
import { loadSqlite } from '../engine/sqlite.js';
import { installMyceliteVfs, MYCELITE_VFS } from '../vfs/vfs.js';

export { HubClient, type HubTarget, HubUnreachableError } from '../client/hub-client.js';
export { SqliteError } from '../engine/errors.js';
export { Statement } from '../engine/statement.js';
export { JournalFormatError, PositionMismatchError } from '../format/errors.js';
export { HubError } from '../protocol/errors.js';
export { ImageMismatchError } from '../replica/apply.js';
export {
  type AppliedSnapshot,
  OtherHistoryError,
  type ReplicaEvents,
  type ReplicaState,
  type ReplicaStatus,
} from '../replica/follower.js';
export { ReplicaOpenError, type ReplicaReset } from '../replica/replica.js';
export { logDatabase, restoreDatabase, verifyDatabase } from '../restore/restore.js';
export { ViewRangeError, type ViewTarget } from '../timetravel/view.js';
export { openAt } from './open-at.js';
export { openReplica, type ReplicaDatabase, type ReplicaOptions } from './replica.js';
export { nodeRuntime } from './runtime.js';
export { Database };

/** Options of `openReadonly()`. */
export interface ReadonlyOptions {
  /** How long a read waits for a writer's lock, in milliseconds (`PRAGMA busy_timeout`); default 5000. */
  timeout?: number;
}

/**
 * Opens a database file read-only (no capture, no journal), through the Mycelite VFS so that it sees
 * real files and takes SQLite's locks: for reading a restored file, a replica, or a writer's database
 * while it writes. The file must exist; nothing is created.
 */
export async function openReadonly(file: string, options: ReadonlyOptions = {}): Promise<Database> {
  const timeoutError = badTimeout(options.timeout);
  if (timeoutError) throw new OpenError(`cannot open ${file} read-only: ${timeoutError}`);
  const resolved = path.resolve(file);
  if (!nodeRuntime.fs.exists(resolved))
    throw new OpenError(`cannot open ${file} read-only: it does not exist`);
  refuseWal(nodeRuntime.fs, resolved, file);
  const behind = await lagsJournal(nodeRuntime, resolved);
  if (behind) throw new OpenError(`cannot open ${file} read-only: ${behind}`);
  const sqlite3 = await loadSqlite();
  installMyceliteVfs(sqlite3, MYCELITE_VFS, { fs: nodeRuntime.fs, tempPath: nodeRuntime.tempPath });
  const db = Database.open(sqlite3, resolved, { readonly: true, vfs: MYCELITE_VFS });
  db.pragma(`busy_timeout = ${options.timeout ?? DEFAULT_TIMEOUT}`);
  return db;
}

/**
 * Opens (creating if missing) the SQLite database at `file` through Mycelite. The journal lives in
 * `file-mycelite/`. Resolves once the engine is loaded and any crash has been recovered; when it
 * rejects, what it created is removed (the file and its directory, if they did not exist before). With
 * `readonly: true` it is {@link openReadonly} (a plain read-only connection: no journal, nothing created).
 */
export function open(file: string, options: MyceliteOptions & { readonly: true }): Promise<Database>;
export function open(
  file: string,
  options?: MyceliteOptions & { readonly?: false },
): Promise<MyceliteDatabase>;
export function open(
  file: string,
  options?: MyceliteOptions & { readonly?: boolean },
): Promise<MyceliteDatabase | Database> {
  if (options?.readonly === true) return openReadonly(file, { timeout: options.timeout });
  return asFound(file, async () => {
    const left = await leaveWal(path.resolve(file), file);
    if (left) {
      if (options?.onWarning) options.onWarning(left);
      else console.warn(`mycelite: warning: ${left.message}`);
    }
    const db = await openWith(nodeRuntime, file, options);
    if (left) (db.warnings as OpenWarning[]).unshift(left);
    return db;
  });
}
