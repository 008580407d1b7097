/** Where Mycelite keeps a database's files (docs/FORMAT.md). */

/** Why the database at `dbPath` cannot be created (its directory is missing), or undefined. */
export function missingDirectory(exists: (path: string) => boolean, dbPath: string): string | undefined {
  const parent = dbPath.slice(0, Math.max(1, dbPath.lastIndexOf('/')));
  return exists(parent) ? undefined : `directory ${parent} does not exist (create it first)`;
}

/** The journal directory of a database and the files in it (see journalPaths). */
export type JournalPaths = Record<
  | 'dir'
  | 'journal'
  | 'lock'
  | 'spill'
  | 'inflight'
  | 'synced'
  | 'rollback'
  | 'replica'
  | 'history'
  | 'scratch'
  | 'compactLock'
  | 'shared'
  | 'rebase'
  | 'rejected'
  | 'wal',
  string
>;

/** The journal directory and its files for the database at `dbPath`. */
export function journalPaths(dbPath: string): JournalPaths {
  const dir = `${dbPath}-mycelite`;
  return {
    dir,
    journal: `${dir}/journal`,
    lock: `${dir}/lock`,
    spill: `${dir}/spill`,
    inflight: `${dir}/inflight`,
    /** Journal durability: the journal position the database file is durable at (synced-marker.ts). */
    synced: `${dir}/synced`,
    /** Journal durability: SQLite's rollback journal, moved out of the way (never hot, never fsynced). */
    rollback: `${dir}/rollback`,
    /** Present when the database is a replica (written by a hub's history, never by open()). */
    replica: `${dir}/replica`,
    /** Compacted history: the points before the journal's first snapshot that retention keeps. */
    history: `${dir}/history`,
    /** Scratch database of a compaction in progress (deleted when it ends). */
    scratch: `${dir}/compact-scratch`,
    /** Held (exclusive file lock) by the one compaction of this database running. */
    compactLock: `${dir}/compact-lock`,
    /** A shared database's device state: its id, base and pending changes (src/shared/pending.ts). */
    shared: `${dir}/shared`,
    /** A shared device's rebase in progress: what its journal and state become (src/shared/suffix.ts). */
    rebase: `${dir}/rebase`,
    /** A shared device's rejections not yet reported to the application (src/shared/rejections.ts). */
    rejected: `${dir}/rejected`,
    /** The WAL sidecar's position: where in DB-wal the journal's head came from (src/sidecar/wal-state.ts). */
    wal: `${dir}/wal`,
  };
}
