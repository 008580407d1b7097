/**
 * A live replica for Node.js: `openReplica(path, {hub})` follows a hub and gives a read-only database
 * that can be queried while it follows.
 *
 * @example
 * ```ts
 * import { openReplica } from 'mycelite';
 * const db = await openReplica('replica.db', { hub: { url: 'http://127.0.0.1:8080', db: 'app', token } });
 * await db.ready();
 * db.on('snapshot', (s) => console.log('applied', s.txid, `${s.lagMs} ms after commit`));
 * console.log(db.prepare('select count(*) from t').pluck().get());
 * await db.close();
 * ```
 */

import * as path from 'node:path';
import { checkHubOptions } from '../client/writer-start.js';
import { Database } from '../engine/database.js';
import { loadSqlite } from '../engine/sqlite.js';
import type { Position } from '../format/index.js';
import { Follower, type FollowOptions, type ReplicaEvents, type ReplicaStatus } from '../replica/follower.js';
import { dropPageCache, ReplicaOpenError, ReplicaStore } from '../replica/replica.js';
import { MYCELITE_VFS } from '../vfs/vfs.js';
import { nodeRuntime } from './runtime.js';

export type { AppliedSnapshot, ReplicaEvents, ReplicaState, ReplicaStatus } from '../replica/follower.js';
export type { ReplicaReset } from '../replica/replica.js';

/** Options of `openReplica`. */
export interface ReplicaOptions extends FollowOptions {
  /** Called after each applied snapshot. */
  onSnapshot?: (snapshot: ReplicaEvents['snapshot']) => void;
}

/** A read-only connection to a replica that follows its hub. */
export interface ReplicaDatabase extends Omit<Database, 'close'> {
  /** The replica's position (undefined until its first snapshot). */
  position(): Position | undefined;
  status(): ReplicaStatus;
  on<K extends 'snapshot' | 'status' | 'reset'>(event: K, fn: (arg: ReplicaEvents[K]) => void): () => void;
  /** Resolves once the replica has caught up with the hub's head for the first time. */
  ready(): Promise<void>;
  /** Resolves once the replica has applied `txid`. */
  waitFor(txid: bigint, timeoutMs?: number): Promise<void>;
  /** Stops following and closes the database. */
  close(): Promise<void>;
}

/**
 * Opens the replica at `file` (creating it if missing) and follows the hub in the background: a new
 * replica starts from the hub's full image, an existing one from its own position. Resolves once the
 * files are open and any crash is recovered; `ready()` resolves once it has caught up. A hub that now
 * holds another history than the replica's is refused (OtherHistoryError) unless `options.reset`.
 */
export async function openReplica(file: string, options: ReplicaOptions): Promise<ReplicaDatabase> {
  const bad = options?.hub
    ? checkHubOptions(options.hub, 'reader')
    : 'the hub option ({ url, db, token }) is required';
  if (bad) throw new ReplicaOpenError(`cannot open replica ${file}: ${bad}`);
  const store = await ReplicaStore.open(nodeRuntime, file);
  const sqlite3 = await loadSqlite();
  const dbPath = path.resolve(file);
  let reader: Database;
  try {
    reader = Database.open(sqlite3, dbPath, { readonly: true, vfs: MYCELITE_VFS });
  } catch (e) {
    store.close(); // gives the replica's lock back
    throw e;
  }
  store.onReplaced = () => {
    // A rebuild renamed a new file over the database: read the new one.
    reader.close();
    reader = Database.open(sqlite3, dbPath, { readonly: true, vfs: MYCELITE_VFS });
  };
  // Applied pages are read from the file, not from the reader's cache (ReplicaStore.onApplied).
  store.onApplied = () => dropPageCache(reader);
  const follower = new Follower(store, options);
  if (options.onSnapshot) follower.events.on('snapshot', options.onSnapshot);
  let closing: Promise<void> | undefined;
  const extra: Record<string, unknown> = {
    position: () => follower.position(),
    status: () => follower.status(),
    on: (event: 'snapshot', fn: (arg: ReplicaEvents['snapshot']) => void) => follower.events.on(event, fn),
    ready: () => follower.ready(),
    waitFor: (txid: bigint, timeoutMs?: number) => follower.waitFor(txid, timeoutMs),
    close: () => {
      closing ??= (async () => {
        await follower.close();
        reader.close();
        store.close();
      })();
      return closing;
    },
  };
  const handle = new Proxy(reader, {
    get(_target, prop) {
      if (typeof prop === 'string' && prop in extra) return extra[prop];
      const v = Reflect.get(reader, prop, reader) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(reader) : v;
    },
  }) as unknown as ReplicaDatabase;
  follower.start();
  return handle;
}
