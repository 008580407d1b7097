/**
 * The error type thrown for failed SQLite calls.
 * @module
 */
import type { Sqlite3 } from './sqlite.js';

/**
 * An error reported by SQLite. `code` is the name of the extended result code
 * (e.g. `'SQLITE_CONSTRAINT_UNIQUE'`), `errcode` its numeric value.
 */
export class SqliteError extends Error {
  /** Extended result code name, e.g. `'SQLITE_CONSTRAINT_UNIQUE'` or `'SQLITE_BUSY'`. */
  readonly code: string;
  /** Extended result code number, e.g. `2067` for `SQLITE_CONSTRAINT_UNIQUE`. */
  readonly errcode: number;

  /** Creates an error; `message` should already contain the operation context. */
  constructor(message: string, code: string, errcode: number) {
    super(message);
    this.name = 'SqliteError';
    this.code = code;
    this.errcode = errcode;
  }
}

let ioDetail: (() => string | undefined) | undefined;

/**
 * Registers where the cause of an SQLITE_IOERR comes from (the VFS keeps the error behind the code it
 * returned): its message is added to the SqliteError's, taken once.
 */
export function setIoErrorDetail(take: () => string | undefined): void {
  ioDetail = take;
}

/** Returns the name of a (possibly extended) result code, e.g. `SQLITE_CONSTRAINT_UNIQUE`. */
export function resultCodeName(sqlite3: Sqlite3, rc: number): string {
  return sqlite3.capi.sqlite3_js_rc_str(rc) ?? `SQLITE_UNKNOWN_${rc}`;
}

/**
 * Builds a {@link SqliteError} for result code `rc`. When `db` (an `sqlite3*`, or 0) holds an error
 * for the same primary code, its extended code and `sqlite3_errmsg()` text are used; otherwise the
 * generic `sqlite3_errstr()` text. `context` is prefixed, e.g. `step "INSERT INTO t ..."`.
 */
export function sqliteError(sqlite3: Sqlite3, db: number, rc: number, context: string): SqliteError {
  const capi = sqlite3.capi;
  let errcode = rc;
  let message: string;
  const ext = db !== 0 ? (capi.sqlite3_extended_errcode(db) as number) : 0;
  if (db !== 0 && (ext & 0xff) === (rc & 0xff)) {
    errcode = ext;
    message = capi.sqlite3_errmsg(db);
  } else {
    message = capi.sqlite3_errstr(rc);
  }
  const detail = (rc & 0xff) === 10 ? ioDetail?.() : undefined;
  if (detail) message = `${message}: ${detail}`;
  return new SqliteError(`${context}: ${message}`, resultCodeName(sqlite3, errcode), errcode);
}

/** Formats an operation and (abbreviated, single-line) SQL text for error messages. */
export function describeSql(operation: string, sql: string): string {
  let text = sql.replace(/\s+/g, ' ').trim();
  if (text.length > 80) text = `${text.slice(0, 77)}...`;
  return `${operation} "${text}"`;
}

/**
 * The error of a failed call: what a user-defined function threw during it (kept in `state.thrown`, see
 * functions.ts), as better-sqlite3 does, else SQLite's.
 */
export function takeError(state: { thrown?: unknown }, rc: number, sqliteErr: () => Error): unknown {
  const thrown = state.thrown;
  state.thrown = undefined;
  return thrown !== undefined && (rc & 0xff) === 1 ? thrown : sqliteErr();
}
