/**
 * Recording each local transaction's logical change: rows through an SQLite session, schema by
 * comparing `sqlite_schema`. Runtime-neutral.
 * @module
 */
import type { Database } from '../engine/database.js';
import type { Statement } from '../engine/statement.js';
import { sessionApi, withSlots } from './changeset.js';
import { diffSchema, readSchema, readShadows, type Schema, schemaQuery, shadowQuery } from './schema.js';
import { unrecordedWrites } from './unrecorded.js';

/** One local transaction's logical change (or several, when one db.exec() ran several). */
export interface LocalChange {
  /** A changeset (sqlite3session_changeset, NOT a patchset: old values are needed for conflict detection). */
  changeset: Uint8Array;
  /** Schema changes made by it, as SQL to re-run, in order: CREATEs first, then DROPs. */
  ddl: { create: string[]; drop: string[] };
  /** Why it cannot be re-applied on another state, if so (e.g. an ALTER of an existing table). */
  unmergeable?: string;
}

/** Options of {@link ChangeRecorder}. */
export interface RecorderOptions {
  /** Tables not to record (e.g. the sync's own bookkeeping). `sqlite_%` tables are never recorded. */
  exclude?: (table: string) => boolean;
}

/** `SQLITE_SESSION_OBJCONFIG_ROWID` (sqlite3session.h; not among the module's `capi` constants). */
const OBJCONFIG_ROWID = 2;

/**
 * Records the logical change of a connection's transactions, for re-applying them on another state
 * with {@link applyLocalChange}. Every table of the main database is recorded (also tables created
 * later), tables without a PRIMARY KEY by rowid. Not recorded: virtual tables, rows with NULL in a
 * PRIMARY KEY column, writes through other connections, `user_version` and other header fields.
 */
export class ChangeRecorder {
  private readonly db: Database;
  private readonly exclude: ((table: string) => boolean) | undefined;
  private readonly filter: number;
  private readonly schemaVersion: Statement;
  private readonly schemaRead: Statement;
  private readonly shadowRead: Statement;
  private session = 0;
  private schema: Schema;
  private shadows: Set<string>;
  private version: number;
  private filterError: unknown;

  /** Starts recording every table of `db`'s main database, except those `exclude` names. */
  constructor(db: Database, options: RecorderOptions = {}) {
    this.db = db;
    this.exclude = options.exclude;
    this.schemaVersion = db.prepare('PRAGMA main.schema_version').pluck();
    this.schemaRead = schemaQuery(db);
    this.version = this.schemaVersion.get() as number;
    this.schema = readSchema(this.schemaRead);
    this.shadowRead = shadowQuery(db);
    this.shadows = readShadows(this.shadowRead);
    const { b } = sessionApi(db.sqlite3);
    this.filter = db.sqlite3.wasm.installFunction('i(pp)', (_ctx: number, zTab: number) =>
      this.records(b.cstr(zTab) ?? '') ? 1 : 0,
    );
    try {
      this.session = this.start();
    } catch (e) {
      db.sqlite3.wasm.uninstallFunction(this.filter);
      throw e;
    }
  }

  /**
   * Whether anything is recorded now (rows, or a schema change). A row changed and changed back (or a
   * rolled-back transaction) still counts, though take() then finds no net change for it.
   */
  get empty(): boolean {
    const { x } = sessionApi(this.db.sqlite3);
    return x.sqlite3session_isempty(this.affirmOpen()) !== 0 && this.schemaVersion.get() === this.version;
  }

  /**
   * The change recorded since the last take()/discard() (an empty changeset if none), then starts
   * afresh. Call it after COMMIT: taken inside a transaction, it holds the changes so far, and a
   * later ROLLBACK does not take them back. (A transaction rolled back before take() leaves nothing:
   * the changeset holds each row's net change from its first recorded state to its current one.)
   */
  take(): LocalChange {
    const { x, b } = sessionApi(this.db.sqlite3);
    const session = this.affirmOpen();
    if (this.filterError !== undefined) {
      const cause = this.filterError;
      this.filterError = undefined;
      throw new Error('the exclude option of ChangeRecorder threw: fix it', { cause });
    }
    const recorded = x.sqlite3session_isempty(session) === 0;
    /** Why it cannot be re-applied, if so. */
    let failed: string | undefined;
    const changeset = !recorded
      ? new Uint8Array(0)
      : withSlots(b, 2, (s) => {
          const rc = x.sqlite3session_changeset(session, s, s + 4);
          const n = b.peekPtr(s);
          const p = b.peekPtr(s + 4);
          const bytes = n === 0 || rc !== 0 ? new Uint8Array(0) : b.heap().slice(p, p + n);
          if (p !== 0) b.x.sqlite3_free(p);
          if (rc !== 0)
            failed = `its rows could not be recorded (SQLite: ${this.db.sqlite3.capi.sqlite3_errstr(rc)})`;
          return bytes;
        });
    const version = this.schemaVersion.get() as number;
    const change: LocalChange = { changeset, ddl: { create: [], drop: [] } };
    let created: string[] = [];
    if (version !== this.version) {
      const schema = readSchema(this.schemaRead);
      const diff = diffSchema(this.schema, schema);
      change.ddl = { create: diff.create, drop: diff.drop };
      created = diff.tables;
      failed ??= diff.unmergeable;
      this.schema = schema;
      this.shadows = readShadows(this.shadowRead);
      this.version = version;
    }
    const unmergeable = failed ?? unrecordedWrites(this.db, changeset, created, this.shadows);
    if (unmergeable !== undefined) change.unmergeable = unmergeable;
    // A session that recorded nothing is as good as a new one.
    if (recorded) this.restart();
    return change;
  }

  /** Forgets what was recorded (a rollback, or changes the caller applies itself and must not record). */
  discard(): void {
    this.affirmOpen();
    this.restart();
    this.version = this.schemaVersion.get() as number;
    this.schema = readSchema(this.schemaRead);
    this.shadows = readShadows(this.shadowRead);
  }

  /** Stops recording. Call it before closing the database. Calling it again is harmless. */
  close(): void {
    if (this.session === 0) return;
    const { x } = sessionApi(this.db.sqlite3);
    // A session belongs to its connection: once that is closed, deleting it would touch freed memory.
    if (this.db.open) x.sqlite3session_delete(this.session);
    this.session = 0;
    this.db.sqlite3.wasm.uninstallFunction(this.filter);
  }

  private records(table: string): boolean {
    if (table.toLowerCase().startsWith('sqlite_')) return false;
    try {
      return this.exclude?.(table) !== true;
    } catch (e) {
      this.filterError ??= e;
      return true;
    }
  }

  private affirmOpen(): number {
    if (this.session === 0) throw new TypeError('The ChangeRecorder is closed');
    return this.session;
  }

  /** There is no reset API: a new session replaces the old one. */
  private restart(): void {
    const { x } = sessionApi(this.db.sqlite3);
    x.sqlite3session_delete(this.session);
    this.session = 0;
    this.session = this.start();
  }

  private start(): number {
    const { x, b } = sessionApi(this.db.sqlite3);
    const db = this.db.handle;
    if (db === 0) throw new TypeError('The database connection is not open');
    const main = b.allocString('main');
    try {
      return withSlots(b, 2, (s) => {
        let rc = x.sqlite3session_create(db, main, s);
        if (rc !== 0)
          throw new Error(`cannot start recording changes (sqlite3session_create: SQLite code ${rc})`);
        const session = b.peekPtr(s);
        b.heap().set([1, 0, 0, 0], s + 4);
        rc = x.sqlite3session_object_config(session, OBJCONFIG_ROWID, s + 4);
        if (rc === 0) {
          x.sqlite3session_table_filter(session, this.filter, 0);
          rc = x.sqlite3session_attach(session, 0);
        }
        if (rc !== 0) {
          x.sqlite3session_delete(session);
          throw new Error(`cannot start recording changes (SQLite code ${rc})`);
        }
        return session;
      });
    } finally {
      b.x.sqlite3_free(main);
    }
  }
}
