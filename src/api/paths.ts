/** Where Mycelite keeps a database's files (docs/FORMAT.md). */

/** The journal directory and its files for the database at `dbPath`. */
export function journalPaths(dbPath: string): {
  dir: string;
  journal: string;
  lock: string;
  spill: string;
  inflight: string;
  replica: string;
} {
  const dir = `${dbPath}-mycelite`;
  return {
    dir,
    journal: `${dir}/journal`,
    lock: `${dir}/lock`,
    spill: `${dir}/spill`,
    inflight: `${dir}/inflight`,
    /** Present when the database is a replica (written by a hub's history, never by open()). */
    replica: `${dir}/replica`,
  };
}
