/**
 * Schema changes between two readings of `sqlite_schema`, as SQL to re-run elsewhere. The session
 * extension records rows only; this records what DDL did. Runtime-neutral.
 * @module
 */
import type { Database } from '../engine/database.js';
import type { Statement } from '../engine/statement.js';

/** One user object of `sqlite_schema` (internal `sqlite_%` objects are left out). */
export interface SchemaObject {
  type: string;
  name: string;
  tbl_name: string;
  sql: string;
  rootpage: number;
  /** Its rowid in `sqlite_schema`: creation order. */
  order: number;
}

/** The user objects of a schema, keyed by {@link keyOf}. */
export type Schema = Map<string, SchemaObject>;

/** What changed between two schemas. */
export interface SchemaDiff {
  /** New objects' SQL: tables, then indexes, views, triggers, each in creation order. */
  create: string[];
  /** `DROP … IF EXISTS` for removed objects: triggers, views, indexes, then tables. */
  drop: string[];
  /** The names of the (not virtual) tables created. */
  tables: string[];
  /** Why the change cannot be re-run on another state (an object's definition changed), if so. */
  unmergeable?: string;
}

const RANK: Record<string, number> = { table: 0, index: 1, view: 2, trigger: 3 };

/** Tables, indexes and views share one namespace, triggers have their own; names ignore ASCII case. */
function keyOf(type: string, name: string): string {
  return `${type === 'trigger' ? 'trigger' : 'object'}:${name.toLowerCase()}`;
}

/** Quotes an identifier for SQL (`"a""b"`). */
export function quoteName(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** Prepares the query {@link readSchema} runs (keep it: preparing costs more than running). */
export function schemaQuery(db: Database): Statement {
  return db.prepare(
    "SELECT type, name, tbl_name, sql, rootpage, rowid AS 'order' FROM main.sqlite_schema " +
      "WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND sql IS NOT NULL",
  );
}

/** Reads the user objects of the main database's schema with a {@link schemaQuery}. */
export function readSchema(query: Statement): Schema {
  const rows = query.all() as unknown as SchemaObject[];
  return new Map(rows.map((o) => [keyOf(o.type, o.name), o]));
}

/** The SQL after a table's name, to tell a renamed table (same rest) from another table. */
function body(sql: string): string {
  const i = sql.indexOf('(');
  return i < 0 ? sql : sql.slice(i);
}

/**
 * What turned schema `before` into `after`, as SQL to re-run. An object whose definition changed
 * (ALTER TABLE, or dropped and created again otherwise) makes the change unmergeable, and so does a
 * table renamed (it keeps its rows, which the changeset does not hold: they would be lost elsewhere).
 */
export function diffSchema(before: Schema, after: Schema): SchemaDiff {
  const created: SchemaObject[] = [];
  const dropped: SchemaObject[] = [];
  let unmergeable: string | undefined;
  for (const [key, o] of after) {
    const old = before.get(key);
    if (old === undefined) created.push(o);
    else if (old.type !== o.type || old.sql !== o.sql) {
      unmergeable ??= `${old.type} "${old.name}" was changed (ALTER TABLE, or dropped and created again): the change cannot be re-applied on another state`;
    }
  }
  for (const [key, o] of before) if (!after.has(key)) dropped.push(o);
  for (const o of created) {
    const renamed = dropped.find(
      (d) =>
        d.type === 'table' && o.type === 'table' && d.rootpage === o.rootpage && body(d.sql) === body(o.sql),
    );
    if (renamed !== undefined) {
      unmergeable ??= `table "${renamed.name}" was renamed to "${o.name}": its rows are not in the change, so it cannot be re-applied on another state`;
    }
  }
  created.sort((a, b) => (RANK[a.type] ?? 9) - (RANK[b.type] ?? 9) || a.order - b.order);
  dropped.sort((a, b) => (RANK[b.type] ?? 9) - (RANK[a.type] ?? 9) || b.order - a.order);
  const diff: SchemaDiff = {
    create: created.map((o) => o.sql),
    tables: created
      .filter((o) => o.type === 'table' && !/^CREATE\s+VIRTUAL\b/i.test(o.sql))
      .map((o) => o.name),
    drop: dropped.map((o) => `DROP ${o.type.toUpperCase()} IF EXISTS ${quoteName(o.name)}`),
  };
  if (unmergeable !== undefined) diff.unmergeable = unmergeable;
  return diff;
}

/** Prepares the query {@link readShadows} runs. */
export function shadowQuery(db: Database): Statement {
  return db.prepare("SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'shadow'").pluck();
}

/** The names (lower case) of the shadow tables of virtual tables (e.g. FTS5's `x_data`), with a {@link shadowQuery}. */
export function readShadows(query: Statement): Set<string> {
  return new Set((query.all() as string[]).map((name) => name.toLowerCase()));
}
