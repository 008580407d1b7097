/**
 * Re-applying a recorded local change on another state of the database, in one transaction, with
 * conflict rules. Runtime-neutral.
 * @module
 */
import type { Database } from '../engine/database.js';
import { SqliteError, sqliteError } from '../engine/errors.js';
import type { Sqlite3 } from '../engine/sqlite.js';
import type { Statement } from '../engine/statement.js';
import type { LocalChange } from './changes.js';
import { forEachTable, readChange, sessionApi, withBytes } from './changeset.js';
import {
  ABORT,
  answerFor,
  type Conflict,
  type ConflictChoice,
  conflictOf,
  defaultChoice,
  KINDS,
  rejection,
} from './conflicts.js';
import { constraintMessage, foreignKeyConflicts, type TableShape } from './violations.js';

export type { Conflict, ConflictChoice, ConflictKind } from './conflicts.js';

/** What became of one local change. */
export interface ApplyOutcome {
  /** True when the transaction committed (possibly with some changes dropped by conflicts). */
  applied: boolean;
  /** Every conflict met and what was chosen (reported to the app by the caller). */
  conflicts: { conflict: Conflict; choice: ConflictChoice }[];
  /** Why it was rejected (nothing of it was applied), when not applied. */
  rejected?: string;
}

/** Chooses per conflict; `undefined` means the default policy ({@link defaultChoice}). */
export type ConflictHandler = (c: Conflict) => ConflictChoice | undefined;

/** `SQLITE_CHANGESETAPPLY_NOSAVEPOINT`: this function holds its own transaction. */
const NOSAVEPOINT = 0x1;
/** `SQLITE_CHANGESETAPPLY_FKNOACTION`: cascades were recorded as rows; running them again would double them. */
const FKNOACTION = 0x8;
const SQLITE_ABORT = 4;
const SQLITE_CONSTRAINT = 19;
const DBCONFIG_ENABLE_TRIGGER = 1003;

/** The statements applying needs, prepared once per connection. */
interface Queries {
  /** The columns of a table. */
  info: Statement;
  /** `table` for a table (not a view or a virtual table), of the main database. */
  kind: Statement;
  /** Whether an object with this exact SQL exists. */
  same: Statement;
  /** `PRAGMA foreign_keys`. */
  foreignKeys: Statement;
  /** Whether the connection has triggers. */
  hasTriggers: Statement;
}

const prepared = new WeakMap<Database, Queries>();

/** The conflict handler of the apply running now (applies nest only through a handler). */
let active: ((eConflict: number, iter: number) => number) | undefined;
/** Per module, the one xConflict function installed in the WASM table: it calls {@link active}. */
const installed = new WeakMap<Sqlite3, number>();

function conflictFunction(sqlite3: Sqlite3): number {
  let p = installed.get(sqlite3);
  if (p === undefined) {
    p = sqlite3.wasm.installFunction('i(pip)', (_ctx: number, eConflict: number, iter: number) =>
      active === undefined ? ABORT : active(eConflict, iter),
    );
    installed.set(sqlite3, p);
  }
  return p;
}

function queriesOf(db: Database): Queries {
  let q = prepared.get(db);
  if (q === undefined) {
    q = {
      info: db.prepare("SELECT name, pk, hidden FROM pragma_table_xinfo(?, 'main')"),
      kind: db.prepare("SELECT type FROM pragma_table_list(?) WHERE schema = 'main'").pluck(),
      same: db.prepare('SELECT 1 FROM main.sqlite_schema WHERE sql = ?').pluck(),
      foreignKeys: db.prepare('PRAGMA foreign_keys').pluck(),
      hasTriggers: db
        .prepare(
          "SELECT EXISTS (SELECT 1 FROM main.sqlite_schema WHERE type = 'trigger') OR " +
            "EXISTS (SELECT 1 FROM temp.sqlite_schema WHERE type = 'trigger')",
        )
        .pluck(),
    };
    prepared.set(db, q);
  }
  return q;
}

/**
 * Re-applies `change` on `db` in one transaction of its own (BEGIN IMMEDIATE … COMMIT): its
 * `ddl.create` (an object already there with the same SQL is skipped), its changeset with the
 * conflict rules, then its `ddl.drop`. Rejected (nothing of it stays) when unmergeable, when a
 * created object clashes with one of another definition, when a table of the changeset does not
 * match the database (SQLite would skip its rows silently), or when a conflict is answered 'reject'.
 *
 * Foreign key actions and triggers do not run while the changeset is applied: what they did on the
 * device was recorded as rows of the change. Foreign keys are checked only if `PRAGMA foreign_keys`
 * is on. Throws (after rolling back) if SQLite fails otherwise or the handler chooses what its
 * conflict's kind does not allow (see {@link ConflictChoice}); must be called outside a transaction.
 */
export function applyLocalChange(db: Database, change: LocalChange, handler?: ConflictHandler): ApplyOutcome {
  if (change.unmergeable !== undefined)
    return { applied: false, conflicts: [], rejected: change.unmergeable };
  if (db.inTransaction) throw new Error('applyLocalChange runs its own transaction: call it outside one');
  const conflicts: ApplyOutcome['conflicts'] = [];
  db.exec('BEGIN IMMEDIATE');
  try {
    const rejected =
      createObjects(db, change.ddl.create) ??
      applyChangeset(db, change.changeset, handler ?? (() => undefined), conflicts);
    if (rejected !== undefined) {
      db.exec('ROLLBACK');
      return { applied: false, conflicts, rejected };
    }
    for (const sql of change.ddl.drop) db.exec(sql);
    db.exec('COMMIT');
    return { applied: true, conflicts };
  } catch (e) {
    if (db.inTransaction) db.exec('ROLLBACK');
    throw e;
  }
}

/** Runs the CREATE statements, skipping objects already there with the same SQL; a reason if one clashes. */
function createObjects(db: Database, create: string[]): string | undefined {
  if (create.length === 0) return undefined;
  const same = queriesOf(db).same;
  for (const sql of create) {
    if (same.get(sql) !== undefined) continue;
    try {
      db.exec(sql);
    } catch (e) {
      if (!(e instanceof SqliteError)) throw e;
      const message = e.message.replace(/^[^:]*"[^"]*": /, '');
      return `its schema change cannot be made here (${message}; another device made a different one?): ${oneLine(sql)}`;
    }
  }
  return undefined;
}

function oneLine(sql: string): string {
  const text = sql.replace(/\s+/g, ' ').trim();
  return text.length > 100 ? `${text.slice(0, 97)}...` : text;
}

/**
 * The database's tables as the changeset needs them, or why one does not fit: SQLite applies a
 * table's rows only if it exists, has at least the changeset's columns and the same primary key.
 */
function tableShapes(db: Database, changeset: Uint8Array): Map<string, TableShape> | string {
  const shapes = new Map<string, TableShape>();
  const { info, kind } = queriesOf(db);
  let misfit: string | undefined;
  forEachTable(db.sqlite3, changeset, (table, changePk) => {
    const key = table.toLowerCase();
    if (misfit !== undefined || shapes.has(key)) return;
    if (kind.get(table) !== 'table') {
      misfit = `table "${table}" does not exist here`;
      return;
    }
    const rows = (info.all(table) as { name: string; pk: number; hidden: number }[]).filter(
      (r) => r.hidden === 0,
    );
    const rowidKey = rows.every((r) => r.pk === 0);
    const columns = rows.map((r) => r.name);
    const pk = rows.map((r) => r.pk);
    if (rowidKey) {
      columns.unshift('_rowid_');
      pk.unshift(1);
    }
    if (columns.length < changePk.length) {
      misfit = `table "${table}" has ${columns.length} columns here, the change has ${changePk.length}`;
    } else if (changePk.some((p, i) => p !== pk[i]) || pk.slice(changePk.length).some((p) => p !== 0)) {
      misfit = `table "${table}" has another primary key here`;
    }
    shapes.set(key, { columns, rowidKey });
  });
  return misfit === undefined ? shapes : `${misfit}, so its rows cannot be applied`;
}

/** Applies the changeset with the handler's choices; a reason if the transaction must be rejected. */
function applyChangeset(
  db: Database,
  changeset: Uint8Array,
  handler: ConflictHandler,
  conflicts: ApplyOutcome['conflicts'],
): string | undefined {
  if (changeset.byteLength === 0) return undefined;
  const shapes = tableShapes(db, changeset);
  if (typeof shapes === 'string') return shapes;
  const { x, b } = sessionApi(db.sqlite3);
  let reason: string | undefined;
  let failure: unknown;
  const decide = (conflict: Conflict, whyRejected: () => string): number => {
    const chosen = handler(conflict);
    const choice = chosen ?? defaultChoice(conflict);
    const answer = answerFor(conflict, choice);
    conflicts.push({ conflict, choice });
    if (answer === ABORT)
      reason ??= chosen === undefined ? whyRejected() : rejection(conflict, { handlerChose: true });
    return answer;
  };
  const onConflict = (eConflict: number, iter: number): number => {
    try {
      const kind = KINDS[eConflict]!;
      if (kind === 'foreign_key') {
        for (const v of foreignKeyConflicts(db, changeset, shapes)) decide(v.conflict, () => v.reason);
        reason ??= 'a foreign key constraint fails';
        return ABORT;
      }
      const change = readChange(x, b, iter, kind === 'data' || kind === 'conflict');
      const shape = shapes.get(change.table.toLowerCase())!;
      const conflict = conflictOf(kind, change, shape.rowidKey);
      return decide(conflict, () => {
        const why = rejection(conflict, { rowidKey: shape.rowidKey });
        if (kind !== 'constraint') return why;
        const message = constraintMessage(db, change, shape);
        return message === undefined
          ? `${why} (a UNIQUE, CHECK or NOT NULL constraint)`
          : `${why}: ${message}`;
      });
    } catch (e) {
      failure ??= e;
      return ABORT;
    }
  };
  const xConflict = conflictFunction(db.sqlite3);
  const q = queriesOf(db);
  // Both are asked only when needed: FKNOACTION makes SQLite re-read the schema, switching triggers
  // makes it prepare every statement again.
  const flags = NOSAVEPOINT | (q.foreignKeys.get() === 1 ? FKNOACTION : 0);
  const fired = q.hasTriggers.get() === 1 ? triggers(db, -1) : 0;
  if (fired) triggers(db, 0);
  const outer = active;
  active = onConflict;
  let rc: number;
  try {
    rc = withBytes(b, changeset, (p) =>
      x.sqlite3changeset_apply_v2(db.handle, changeset.byteLength, p, 0, xConflict, 0, 0, 0, flags),
    );
  } finally {
    active = outer;
    if (fired) triggers(db, 1);
  }
  if (failure !== undefined) throw failure;
  if (rc === 0) return undefined;
  if (reason !== undefined && (rc === SQLITE_ABORT || rc === SQLITE_CONSTRAINT)) return reason;
  throw sqliteError(db.sqlite3, db.handle, rc, 'apply the local change');
}

/**
 * Sets whether triggers fire on the connection (`SQLITE_DBCONFIG_ENABLE_TRIGGER`; -1 leaves it) and
 * returns the setting after the call.
 */
function triggers(db: Database, on: -1 | 0 | 1): 0 | 1 {
  const { b } = sessionApi(db.sqlite3);
  const slot = b.malloc(4);
  try {
    const rc = db.sqlite3.capi.sqlite3_db_config(db.handle, DBCONFIG_ENABLE_TRIGGER, on, slot);
    if (rc !== 0) throw sqliteError(db.sqlite3, db.handle, rc, 'switch triggers for applying a change');
    return b.peekPtr(slot) !== 0 ? 1 : 0;
  } finally {
    b.x.sqlite3_free(slot);
  }
}
