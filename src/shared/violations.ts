/**
 * Describing constraint and foreign key failures of a re-applied change: SQLite tells the conflict
 * handler only that one happened, not which constraint or which rows. Runtime-neutral.
 * @module
 */
import type { Database } from '../engine/database.js';
import type { SqlValue } from '../engine/sqlite.js';
import { forEachChange, type RowChange } from './changeset.js';
import { type Conflict, conflictOf, sameValue, show } from './conflicts.js';
import { quoteName } from './schema.js';

/** A table of the database as the changeset sees it. */
export interface TableShape {
  /** Column names in changeset order (`_rowid_` first for a table without PRIMARY KEY). */
  columns: string[];
  /** The table has no PRIMARY KEY: the changeset keys it by rowid. */
  rowidKey: boolean;
}

/** Most foreign key violations described in one rejection. */
const MAX_VIOLATIONS = 20;

/**
 * SQLite's own message for the constraint `change` breaks, found by running its statement again in a
 * savepoint that is rolled back; undefined if it does not fail now (or is a DELETE).
 */
export function constraintMessage(db: Database, change: RowChange, shape: TableShape): string | undefined {
  const cols = shape.columns;
  let sql: string;
  let args: SqlValue[];
  if (change.op === 'insert') {
    const n = change.new!.length;
    sql = `INSERT INTO main.${quoteName(change.table)}(${cols.slice(0, n).map(quoteName).join(', ')}) VALUES(${'?, '.repeat(n - 1)}?)`;
    args = change.new!.map((v) => v ?? null);
  } else if (change.op === 'update') {
    const set: string[] = [];
    const where: string[] = [];
    const setArgs: SqlValue[] = [];
    const whereArgs: SqlValue[] = [];
    change.new!.forEach((v, i) => {
      if (v !== undefined) {
        set.push(`${quoteName(cols[i]!)} = ?`);
        setArgs.push(v);
      }
      if (change.pk[i] !== 0) {
        where.push(`${quoteName(cols[i]!)} IS ?`);
        whereArgs.push(change.old![i] ?? null);
      }
    });
    if (set.length === 0) return undefined;
    sql = `UPDATE main.${quoteName(change.table)} SET ${set.join(', ')} WHERE ${where.join(' AND ')}`;
    args = [...setArgs, ...whereArgs];
  } else {
    return undefined;
  }
  db.exec('SAVEPOINT "mycelite probe"');
  try {
    db.prepare(sql).run(...args);
    return undefined;
  } catch (e) {
    return (e as Error).message.replace(/^[^:]*"[^"]*": /, '');
  } finally {
    db.exec('ROLLBACK TO "mycelite probe"; RELEASE "mycelite probe"');
  }
}

/** The changes of `tables` in `changeset`. */
function changesOf(db: Database, changeset: Uint8Array, tables: Set<string>): RowChange[] {
  const out: RowChange[] = [];
  forEachChange(db.sqlite3, changeset, (c) => {
    if (tables.has(c.table.toLowerCase())) out.push(c);
  });
  return out;
}

interface Violation {
  table: string;
  parent: string;
  fkid: number;
}

/**
 * The rows of `v.table` that break its foreign key `v.fkid` (found by query: `PRAGMA
 * foreign_key_check` gives no rowid for a WITHOUT ROWID table): per row, its `columns` and the values
 * it references.
 */
function danglingRows(
  db: Database,
  v: Violation,
  columns: string[],
): { row: SqlValue[]; referenced: SqlValue[] }[] {
  const keys = db
    .prepare('SELECT "from", "to" FROM pragma_foreign_key_list(?, \'main\') WHERE id = ? ORDER BY seq')
    .all(v.table, v.fkid) as { from: string; to: string | null }[];
  const from = keys.map((k) => k.from);
  let to = keys.map((k) => k.to);
  if (to.some((t) => t === null)) {
    to = db
      .prepare("SELECT name FROM pragma_table_info(?, 'main') WHERE pk > 0 ORDER BY pk")
      .pluck()
      .all(v.parent) as string[];
  }
  const child = (c: string) => `c.${quoteName(c)}`;
  const sql =
    `SELECT ${[...columns, ...from].map(child).join(', ')} FROM main.${quoteName(v.table)} AS c ` +
    `WHERE ${from.map((f) => `${child(f)} IS NOT NULL`).join(' AND ')} AND NOT EXISTS (SELECT 1 FROM main.${quoteName(v.parent)} AS p ` +
    `WHERE ${from.map((f, i) => `p.${quoteName(to[i] ?? '')} = ${child(f)}`).join(' AND ')})`;
  return (db.prepare(sql).raw().all() as SqlValue[][]).map((r) => ({
    row: r.slice(0, columns.length),
    referenced: r.slice(columns.length),
  }));
}

/**
 * The foreign key violations in the database now (inside the apply's transaction), each as a
 * conflict with a one-line reason: a row this change wrote that references a missing row (the
 * change's own row change), or a row added meanwhile that references a row this change removed
 * (reported on the parent table, `key` being the referenced values).
 */
export function foreignKeyConflicts(
  db: Database,
  changeset: Uint8Array,
  shapes: Map<string, TableShape>,
): { conflict: Conflict; reason: string }[] {
  const seen = new Set<string>();
  const violations = (db.pragma('main.foreign_key_check') as unknown as Violation[]).filter((v) => {
    const key = `${v.table.toLowerCase()}\0${v.fkid}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  const tables = new Set(violations.flatMap((v) => [v.table.toLowerCase(), v.parent.toLowerCase()]));
  const changes = changesOf(db, changeset, tables);
  const out: { conflict: Conflict; reason: string }[] = [];
  for (const v of violations) {
    const shape = shapes.get(v.table.toLowerCase());
    for (const { row, referenced } of danglingRows(db, v, shape?.columns ?? [])) {
      if (out.length === MAX_VIOLATIONS) return out;
      const mine =
        shape === undefined
          ? undefined
          : changes.find(
              (c) =>
                c.table.toLowerCase() === v.table.toLowerCase() &&
                c.op !== 'delete' &&
                c.pk.every((p, i) => p === 0 || sameValue(c.new![i] ?? c.old![i], row[i])),
            );
      if (mine !== undefined) {
        const conflict = conflictOf(
          'foreign_key',
          { ...mine, current: row.slice(0, mine.pk.length) },
          shape!.rowidKey,
        );
        const reason = `${conflict.op} of "${conflict.table}" ${show(conflict.key)} references a row of "${v.parent}" that is not there (deleted meanwhile?)`;
        out.push({ conflict, reason });
        continue;
      }
      const parentChanges = changes.filter((c) => c.table.toLowerCase() === v.parent.toLowerCase());
      const op =
        parentChanges.some((c) => c.op === 'update') && !parentChanges.some((c) => c.op === 'delete')
          ? 'update'
          : 'delete';
      const conflict: Conflict = { kind: 'foreign_key', table: v.parent, op, key: referenced };
      const reason = `the change removes "${v.parent}" ${show(referenced)}, which a row of "${v.table}" added meanwhile still references`;
      out.push({ conflict, reason });
    }
  }
  return out;
}
