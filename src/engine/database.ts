/**
 * Database connections, modelled on better-sqlite3's `Database`.
 * @module
 */
import { describeSql, SqliteError, sqliteError, takeError } from './errors.js';
import { type AggregateOptions, createAggregate, createFunction, type FunctionOptions } from './functions.js';
import { type Binding, bindingFor, type Sqlite3 } from './sqlite.js';
import { Statement } from './statement.js';

/** Options for {@link Database.open}. */
export interface OpenOptions {
  /** Name of a registered VFS; the default VFS when omitted. */
  vfs?: string;
  /** Open read-only (`SQLITE_OPEN_READONLY`). */
  readonly?: boolean;
  /** Create the database if it does not exist (default true; ignored when read-only). */
  create?: boolean;
}

/** Options for {@link Database.pragma}. */
export interface PragmaOptions {
  /** Return only the first column of the first row. */
  simple?: boolean;
}

/** A function wrapped by {@link Database.transaction}, with its begin-mode variants. */
export interface Transaction<F extends (...args: never[]) => unknown> {
  /** Runs the wrapped function inside a transaction (or a savepoint when nested). */
  (...args: Parameters<F>): ReturnType<F>;
  /** Variant using `BEGIN` (same as calling the function itself). */
  readonly default: Transaction<F>;
  /** Variant using `BEGIN DEFERRED`. */
  readonly deferred: Transaction<F>;
  /** Variant using `BEGIN IMMEDIATE`. */
  readonly immediate: Transaction<F>;
  /** Variant using `BEGIN EXCLUSIVE`. */
  readonly exclusive: Transaction<F>;
  /** The connection the transaction runs on. */
  readonly database: Database;
}

/**
 * @internal Connection state shared between a {@link Database} and its statements: the `sqlite3*`
 * handle (0 once closed), the number of open iterators, the default safeIntegers setting, and the
 * statements this binding prepared and has not finalized (close() finalizes those only: statements a
 * virtual table such as FTS5 prepared are its own, finalized when SQLite disconnects it).
 */
export interface ConnectionState {
  handle: number;
  iterators: number;
  safeIntegers: boolean;
  statements: Set<number>;
  /** Called after every statement and exec() (see Database.setAfterStatement). */
  afterStatement?: () => void;
  /** What a user-defined function threw, rethrown as the statement's error (see functions.ts). */
  thrown?: unknown;
}

interface Controller {
  begin: Record<'default' | 'deferred' | 'immediate' | 'exclusive', Statement>;
  commit: Statement;
  rollback: Statement;
  savepoint: Statement;
  release: Statement;
  rollbackTo: Statement;
}

const SQLITE_OPEN_READONLY = 0x1;
const SQLITE_OPEN_READWRITE = 0x2;
const SQLITE_OPEN_CREATE = 0x4;
const SQLITE_OPEN_EXRESCODE = 0x02000000;
const SQLITE_PREPARE_PERSISTENT = 0x1;
/** sqlite3_file_control op: drop the connection's page cache (SQLite 3.42+). */
const SQLITE_FCNTL_RESET_CACHE = 42;

/** Whether the C string at `p` holds only whitespace, semicolons and SQL comments. */
function isTrivia(heap: Uint8Array, p: number): boolean {
  for (let c = heap[p]; c !== 0; c = heap[p]) {
    if (c === 0x20 || c === 0x3b || (c! >= 0x09 && c! <= 0x0d)) p++;
    else if (c === 0x2f && heap[p + 1] === 0x2a) {
      p += 2;
      while (heap[p] !== 0 && !(heap[p] === 0x2a && heap[p + 1] === 0x2f)) p++;
      if (heap[p] !== 0) p += 2;
    } else if (c === 0x2d && heap[p + 1] === 0x2d) {
      while (heap[p] !== 0 && heap[p] !== 0x0a) p++;
    } else return false;
  }
  return true;
}

/** A connection to an SQLite database. Create with {@link Database.open}. */
export class Database {
  /** The loaded sqlite-wasm module this connection uses. */
  readonly sqlite3: Sqlite3;
  /** The filename the database was opened with. */
  readonly name: string;
  /** Whether the database was opened read-only. */
  readonly readonly: boolean;
  /** Whether this is an in-memory database (`:memory:` or empty filename). */
  readonly memory: boolean;
  private readonly b: Binding;
  private readonly state: ConnectionState;
  private controller: Controller | undefined;

  private constructor(sqlite3: Sqlite3, handle: number, name: string, readonly: boolean) {
    this.sqlite3 = sqlite3;
    this.b = bindingFor(sqlite3);
    this.state = { handle, iterators: 0, safeIntegers: false, statements: new Set() };
    this.name = name;
    this.readonly = readonly;
    this.memory = name === ':memory:' || name === '';
  }

  /**
   * Opens a connection with `sqlite3_open_v2` (extended result codes on). Throws a
   * {@link SqliteError} (after closing the half-opened handle) if it fails.
   */
  static open(sqlite3: Sqlite3, filename: string, options: OpenOptions = {}): Database {
    const b = bindingFor(sqlite3);
    const x = b.x;
    const readonly = options.readonly === true;
    let flags = SQLITE_OPEN_EXRESCODE;
    if (readonly) flags |= SQLITE_OPEN_READONLY;
    else flags |= SQLITE_OPEN_READWRITE | (options.create === false ? 0 : SQLITE_OPEN_CREATE);
    const pName = b.allocString(filename);
    const pVfs = options.vfs === undefined ? 0 : b.allocString(options.vfs);
    let rc: number;
    let handle: number;
    try {
      rc = x.sqlite3_open_v2(pName, b.out, flags, pVfs);
      handle = b.peekPtr(b.out);
    } finally {
      x.sqlite3_free(pName);
      if (pVfs !== 0) x.sqlite3_free(pVfs);
    }
    if (rc !== 0) {
      const err = sqliteError(sqlite3, handle, rc, `open "${filename}"`);
      if (handle !== 0) x.sqlite3_close_v2(handle);
      throw err;
    }
    return new Database(sqlite3, handle, filename, readonly);
  }

  /** True until {@link close} is called. */
  get open(): boolean {
    return this.state.handle !== 0;
  }

  /** True while a transaction is open (`sqlite3_get_autocommit() == 0`). */
  get inTransaction(): boolean {
    const h = this.state.handle;
    return h !== 0 && this.b.x.sqlite3_get_autocommit(h) === 0;
  }

  /** The `sqlite3*` pointer (0 once closed). For internal use by other engine code. */
  get handle(): number {
    return this.state.handle;
  }

  /** Executes one or more SQL statements (no parameters, results discarded). */
  exec(sql: string): this {
    const h = this.affirmOpen();
    if (this.state.iterators !== 0) throw new TypeError('This database connection is busy executing a query');
    const x = this.b.x;
    const text = this.b.allocString(sql);
    try {
      const rc = x.sqlite3_exec(h, text, 0, 0, 0);
      x.sqlite3_free(text);
      if (rc !== 0)
        throw takeError(this.state, rc, () => sqliteError(this.sqlite3, h, rc, describeSql('exec', sql)));
      return this;
    } finally {
      this.state.afterStatement?.();
    }
  }

  /**
   * Forgets every page and the schema this connection keeps in memory, so that the next statement reads
   * the file again: for after the file was written by other means than this connection while it held
   * SQLite's lock (SQLITE_FCNTL_RESET_CACHE, then `PRAGMA writable_schema=RESET`, which reloads the
   * schema). Between transactions only.
   */
  resetCache(): void {
    const h = this.affirmOpen();
    const x = this.b.x;
    const main = this.b.allocString('main');
    const rc = x.sqlite3_file_control(h, main, SQLITE_FCNTL_RESET_CACHE, 0);
    x.sqlite3_free(main);
    if (rc !== 0) throw sqliteError(this.sqlite3, h, rc, 'reset the page cache');
    this.exec('PRAGMA writable_schema = RESET');
  }

  /**
   * @internal Calls `fn` after every statement this connection runs (run, get, all, the end of an
   * iteration, exec): where a shared database records each committed transaction's change. `fn` may
   * throw; its error is the statement's.
   */
  setAfterStatement(fn: (() => void) | undefined): void {
    this.state.afterStatement = fn;
  }

  /** Prepares a single SQL statement. Throws RangeError if `sql` holds none or more than one. */
  prepare(sql: string): Statement {
    return this.prepareStatement(sql);
  }

  /**
   * Runs `PRAGMA <source>` and returns all rows, or with `simple` the first column of the first
   * row (`undefined` if there is none).
   */
  pragma(source: string, options: PragmaOptions = {}): unknown {
    if (typeof source !== 'string') throw new TypeError('Expected first argument to be a string');
    const stmt = this.prepareStatement(`PRAGMA ${source}`, { pragma: true });
    try {
      return options.simple === true ? stmt.pluck().get() : stmt.all();
    } finally {
      stmt._finalize();
    }
  }

  /**
   * Defines (or replaces) an SQL function `name` that calls `fn` with its arguments, as better-sqlite3's
   * `db.function()`: INTEGER arguments come as numbers (bigints with `safeIntegers`), BLOBs as byte
   * arrays; the result is stored as a bound value is (an integral number as INTEGER). What `fn` throws is
   * the statement's error.
   */
  function(name: string, fn: (...args: never[]) => unknown): this;
  function(name: string, options: FunctionOptions, fn: (...args: never[]) => unknown): this;
  function(
    name: string,
    options: FunctionOptions | ((...args: never[]) => unknown),
    fn?: (...args: never[]) => unknown,
  ): this {
    const state = this.state;
    if (typeof options === 'function') createFunction(this.b, state, name, {}, options);
    else createFunction(this.b, state, name, options ?? {}, fn as (...args: never[]) => unknown);
    return this;
  }

  /**
   * Defines (or replaces) an aggregate SQL function `name`, as better-sqlite3's `db.aggregate()`:
   * `start` (a value, or a function giving one per group), `step(total, ...args)`, `result(total)`; with
   * `inverse(total, ...args)` it is also a window function.
   */
  aggregate(name: string, options: AggregateOptions): this {
    createAggregate(this.b, this.state, name, options);
    return this;
  }

  /**
   * The database as one byte array (`sqlite3_serialize`), as better-sqlite3's `db.serialize()`: the
   * content of a consistent state, readable by any SQLite (write it to a file, or open it in memory).
   */
  serialize(options: { attached?: string } = {}): Uint8Array {
    const h = this.affirmOpen();
    const schema = options.attached ?? 'main';
    if (typeof schema !== 'string') throw new TypeError('Expected the attached option to be a string');
    try {
      return this.sqlite3.capi.sqlite3_js_db_export(h, schema);
    } catch (e) {
      throw new SqliteError(`serialize "${schema}": ${(e as Error).message}`, 'SQLITE_ERROR', 1);
    }
  }

  /** Makes `.safeIntegers()` the default (or not) for statements prepared from now on. */
  defaultSafeIntegers(on = true): this {
    this.state.safeIntegers = on;
    return this;
  }

  /**
   * Wraps `fn` so that it runs inside `BEGIN`/`COMMIT`, rolling back if it throws. Called while a
   * transaction is already open, it uses `SAVEPOINT`/`RELEASE`/`ROLLBACK TO` instead, so nested
   * calls commit or roll back independently. `fn` must be synchronous.
   */
  transaction<F extends (...args: never[]) => unknown>(fn: F): Transaction<F> {
    if (typeof fn !== 'function') throw new TypeError('Expected first argument to be a function');
    const c = this.getController();
    const wrap = (begin: Statement): Transaction<F> => {
      const db = this;
      return function sqliteTransaction(this: unknown, ...args: Parameters<F>): ReturnType<F> {
        let before: Statement;
        let after: Statement;
        let undo: Statement;
        if (db.inTransaction) {
          before = c.savepoint;
          after = c.release;
          undo = c.rollbackTo;
        } else {
          before = begin;
          after = c.commit;
          undo = c.rollback;
        }
        before.run();
        try {
          const result = fn.apply(this, args) as ReturnType<F>;
          if (result !== null && typeof (result as { then?: unknown })?.then === 'function') {
            throw new TypeError('Transaction function cannot return a promise');
          }
          after.run();
          return result;
        } catch (e) {
          if (db.inTransaction) {
            undo.run();
            if (undo !== c.rollback) after.run();
          }
          throw e;
        }
      } as Transaction<F>;
    };
    const variants = {
      default: wrap(c.begin.default),
      deferred: wrap(c.begin.deferred),
      immediate: wrap(c.begin.immediate),
      exclusive: wrap(c.begin.exclusive),
    };
    const properties: PropertyDescriptorMap = { database: { value: this, enumerable: true } };
    for (const [key, value] of Object.entries(variants)) properties[key] = { value };
    for (const value of Object.values(variants)) Object.defineProperties(value, properties);
    return variants.default;
  }

  /**
   * Closes the connection, finalizing every statement first. Statements of a closed connection
   * throw when used. Calling it again is harmless. Throws while an iterator is open.
   */
  close(): this {
    const state = this.state;
    const h = state.handle;
    if (h === 0) return this;
    if (state.iterators !== 0) throw new TypeError('This database connection is busy executing a query');
    const x = this.b.x;
    // Only our own: finalizing a virtual table's statements (FTS5 keeps some) made SQLite free them
    // twice when it disconnected the table, corrupting the WASM heap.
    for (const p of state.statements) x.sqlite3_finalize(p);
    state.statements.clear();
    const rc = x.sqlite3_close_v2(h);
    state.handle = 0;
    this.controller = undefined;
    if (rc !== 0) throw sqliteError(this.sqlite3, 0, rc, `close "${this.name}"`);
    return this;
  }

  private affirmOpen(): number {
    const h = this.state.handle;
    if (h === 0) throw new TypeError('The database connection is not open');
    return h;
  }

  /** `pragma`: the statement is the `PRAGMA` that `pragma()` runs. */
  private prepareStatement(sql: string, { pragma = false }: { pragma?: boolean } = {}): Statement {
    if (typeof sql !== 'string') throw new TypeError('Expected first argument to be a string');
    const h = this.affirmOpen();
    const b = this.b;
    const x = b.x;
    // Not the scratch buffer: a JS VFS callback may use it while SQLite parses the text.
    const text = b.allocString(sql);
    const rc = x.sqlite3_prepare_v3(h, text, -1, SQLITE_PREPARE_PERSISTENT, b.out, b.out + 4);
    const p = b.peekPtr(b.out);
    const trivia = rc === 0 && isTrivia(b.heap(), b.peekPtr(b.out + 4));
    x.sqlite3_free(text);
    if (rc !== 0) throw sqliteError(this.sqlite3, h, rc, describeSql('prepare', sql));
    if (p === 0) throw new RangeError('The supplied SQL string contains no statements');
    if (!trivia) {
      x.sqlite3_finalize(p);
      throw new RangeError('The supplied SQL string contains more than one statement');
    }
    return new Statement(this, b, this.state, p, sql, pragma);
  }

  private getController(): Controller {
    if (this.controller === undefined) {
      const prep = (sql: string) => this.prepareStatement(sql);
      this.controller = {
        begin: {
          default: prep('BEGIN'),
          deferred: prep('BEGIN DEFERRED'),
          immediate: prep('BEGIN IMMEDIATE'),
          exclusive: prep('BEGIN EXCLUSIVE'),
        },
        commit: prep('COMMIT'),
        rollback: prep('ROLLBACK'),
        savepoint: prep('SAVEPOINT "\t_mycelite.\t"'),
        release: prep('RELEASE "\t_mycelite.\t"'),
        rollbackTo: prep('ROLLBACK TO "\t_mycelite.\t"'),
      };
    }
    return this.controller;
  }
}
