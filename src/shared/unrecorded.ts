/**
 * Writes a changeset cannot carry faithfully, found when a change is taken: they make it unmergeable
 * rather than lose rows (or corrupt an index) silently on another state. Runtime-neutral.
 * @module
 */
import type { Database } from '../engine/database.js';
import { forEachChange, forEachTable } from './changeset.js';
import { quoteName } from './schema.js';

/**
 * Why `changeset` (with the tables the same change created) cannot be re-applied, if so:
 * - it writes a shadow table of a virtual table (FTS5's `x_data`, …): the virtual table's own
 *   structures, which merged with another device's would be inconsistent;
 * - a table it created holds rows the changeset does not (`CREATE TABLE … AS SELECT`: the session
 *   does not see those rows).
 */
export function unrecordedWrites(
  db: Database,
  changeset: Uint8Array,
  created: string[],
  shadows: Set<string>,
): string | undefined {
  let shadow: string | undefined;
  if (shadows.size > 0 && changeset.byteLength > 0) {
    forEachTable(db.sqlite3, changeset, (table) => {
      if (shadow === undefined && shadows.has(table.toLowerCase())) shadow = table;
    });
  }
  if (shadow !== undefined) {
    return `it writes "${shadow}", a virtual table's own storage (FTS?), which cannot be merged with another device's: exclude it and rebuild the index after syncing`;
  }
  if (created.length === 0) return undefined;
  const inserts = new Map<string, number>(created.map((name) => [name.toLowerCase(), 0]));
  if (changeset.byteLength > 0) {
    forEachChange(db.sqlite3, changeset, (c) => {
      const n = inserts.get(c.table.toLowerCase());
      if (n !== undefined && c.op === 'insert') inserts.set(c.table.toLowerCase(), n + 1);
    });
  }
  for (const name of created) {
    const rows = db
      .prepare(`SELECT count(*) FROM main.${quoteName(name)}`)
      .pluck()
      .get() as number;
    if (rows !== inserts.get(name.toLowerCase())) {
      return `table "${name}" was filled in a way SQLite does not record (CREATE TABLE … AS SELECT?): create it, then INSERT … SELECT`;
    }
  }
  return undefined;
}
