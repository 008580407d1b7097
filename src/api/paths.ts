/** Where Mycelite keeps a database's files (docs/FORMAT.md). */

/** The journal directory and its files for the database at `dbPath`. */
export function journalPaths(dbPath: string): {
  dir: string;
  journal: string;
  lock: string;
  spill: string;
  inflight: string;
} {
  const dir = `${dbPath}-mycelite`;
  return {
    dir,
    journal: `${dir}/journal`,
    lock: `${dir}/lock`,
    spill: `${dir}/spill`,
    inflight: `${dir}/inflight`,
  };
}
