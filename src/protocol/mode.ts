/** The mode of a hub database (docs/PROTOCOL.md, "Modes"): one writer, or shared by many. */

/**
 * `single`: one writer holds the write lease as long as it runs (the default, and every database
 * created before modes existed). `shared`: every holder of a writer token writes, each taking the lease
 * only for the moment of a sync. Stored on the hub when the database is created; never changes.
 */
export type DbMode = 'single' | 'shared';

/**
 * Parses a mode as it travels (the `Mycelite-Mode` header, the `mode` field of a state): absent is
 * `single` (a client or hub from before modes); undefined when it is anything else.
 */
export function parseMode(text: string | null | undefined): DbMode | undefined {
  if (text === undefined || text === null) return 'single';
  return text === 'single' || text === 'shared' ? text : undefined;
}

/** A mode in words, for messages: `shared (many devices write it)`, `single-writer`. */
export function describeMode(mode: DbMode): string {
  return mode === 'shared' ? 'shared (many devices write it)' : 'single-writer';
}

/** What a writer that opened a database of mode `stored` as the other mode must do (one clause). */
export function otherModeAdvice(stored: DbMode): string {
  return stored === 'shared'
    ? 'open it with { shared: true } or use `mycelite sync --shared`'
    : 'open it without { shared: true } and push with `mycelite push`, or share a new database under another name';
}
