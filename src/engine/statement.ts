/**
 * Prepared statements, modelled on better-sqlite3's `Statement`.
 * @module
 */
import type { ConnectionState, Database } from './database.js';
import { describeSql, sqliteError, takeError } from './errors.js';
import type { Binding, BindValue, SqlValue, WasmExports } from './sqlite.js';

export type { BindValue, SqlValue } from './sqlite.js';

/** One argument of `run/get/all/iterate/bind`: a value, an array of values, or an object of named values. */
export type BindArg = BindValue | readonly BindValue[] | { readonly [name: string]: BindValue };
/** The default shape of a result row (object mode). */
export type Row = Record<string, SqlValue>;

/**
 * Result of {@link Statement.run}: rows changed (0 if the statement changed nothing) and
 * `sqlite3_last_insert_rowid()` afterwards (`bigint` with safeIntegers).
 */
export interface RunResult {
  changes: number;
  lastInsertRowid: number | bigint;
}

/**
 * A result column as described by {@link Statement.columns}: its name, the originating table
 * column, table and schema (null for expressions), and the column's declared type.
 */
export interface ColumnDefinition {
  name: string;
  column: string | null;
  table: string | null;
  database: string | null;
  type: string | null;
}

const ROW = 100;
const DONE = 101;
const OBJECT = 0;
const PLUCK = 1;
const RAW = 2;
const EXPAND = 3;
const DATA = { writable: true, enumerable: true, configurable: true };

/** Finalizes statements that were garbage-collected while their connection is still open. */
const registry = new FinalizationRegistry<{ state: ConnectionState; x: WasmExports; p: number }>((h) => {
  if (h.state.handle !== 0 && h.state.statements.delete(h.p)) h.x.sqlite3_finalize(h.p);
});

const isPlainObject = (v: object): boolean => {
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
};

/** A prepared statement. Create with {@link Database.prepare}. */
export class Statement {
  /** The connection the statement belongs to. */
  readonly database: Database;
  /** The SQL text the statement was prepared from. */
  readonly source: string;
  /** True if the statement returns data (has result columns). */
  readonly reader: boolean;
  /** True if the statement does not write to the database (`sqlite3_stmt_readonly`). */
  readonly readonly: boolean;
  private readonly b: Binding;
  private readonly x: WasmExports;
  private readonly state: ConnectionState;
  private readonly p: number;
  private readonly returnsData: boolean;
  private readonly nParams: number;
  /** Parameter names without their prefix (null entries are positional), or null if all are positional. */
  private readonly names: (string | null)[] | null;
  private columnNames: string[] = [];
  private protoKey = false;
  private mode = OBJECT;
  private safe: boolean;
  private locked = false;
  private bound = false;

  /** @internal Use {@link Database.prepare}. */
  constructor(db: Database, b: Binding, state: ConnectionState, p: number, source: string, pragma: boolean) {
    const x = b.x;
    this.database = db;
    this.b = b;
    this.x = x;
    this.state = state;
    this.p = p;
    this.source = source;
    this.reader = x.sqlite3_column_count(p) > 0;
    this.readonly = x.sqlite3_stmt_readonly(p) !== 0;
    this.returnsData = this.reader || pragma;
    this.safe = state.safeIntegers;
    const n = x.sqlite3_bind_parameter_count(p);
    this.nParams = n;
    let names: (string | null)[] | null = null;
    for (let i = 1; i <= n; i++) {
      const name = b.cstr(x.sqlite3_bind_parameter_name(p, i));
      if (name !== null && name[0] !== '?') {
        names ??= new Array<string | null>(n).fill(null);
        names[i - 1] = name.slice(1);
      }
    }
    this.names = names;
    state.statements.add(p);
    registry.register(this, { state, x, p }, this);
  }

  /** True while an iterator from {@link iterate} is open on this statement. */
  get busy(): boolean {
    return this.locked;
  }

  /** Executes the statement once (first step) and reports the changes it made. */
  run(...params: BindArg[]): RunResult {
    const p = this.enter(params, false);
    const x = this.x;
    const db = this.state.handle;
    try {
      const before = x.sqlite3_total_changes(db);
      const rc = x.sqlite3_step(p);
      if (rc !== ROW && rc !== DONE) throw this.fail(rc, 'step');
      x.sqlite3_reset(p);
      const changes = x.sqlite3_total_changes(db) === before ? 0 : x.sqlite3_changes(db);
      const id = x.sqlite3_last_insert_rowid(db);
      return { changes, lastInsertRowid: this.safe ? id : Number(id) };
    } finally {
      this.state.afterStatement?.();
    }
  }

  /** Returns the first result row, or `undefined` if there is none. */
  get<R = unknown>(...params: BindArg[]): R | undefined {
    const p = this.enter(params, true);
    const x = this.x;
    try {
      const rc = x.sqlite3_step(p);
      if (rc === ROW) {
        try {
          return this.row(p) as R;
        } finally {
          x.sqlite3_reset(p);
        }
      }
      if (rc !== DONE) throw this.fail(rc, 'step');
      x.sqlite3_reset(p);
      return undefined;
    } finally {
      this.state.afterStatement?.();
    }
  }

  /** Returns all result rows. */
  all<R = unknown>(...params: BindArg[]): R[] {
    const p = this.enter(params, true);
    const x = this.x;
    const rows: R[] = [];
    try {
      let rc = x.sqlite3_step(p);
      try {
        for (; rc === ROW; rc = x.sqlite3_step(p)) rows.push(this.row(p) as R);
      } catch (e) {
        x.sqlite3_reset(p);
        throw e;
      }
      if (rc !== DONE) throw this.fail(rc, 'step');
      x.sqlite3_reset(p);
      return rows;
    } finally {
      this.state.afterStatement?.();
    }
  }

  /**
   * Returns an iterator over the result rows. The statement is reset when the iterator finishes,
   * throws, or is closed early (`break` / `return()`). While it is open, the statement is busy and
   * the connection rejects writing statements.
   */
  iterate<R = unknown>(...params: BindArg[]): Generator<R, void, undefined> {
    const p = this.enter(params, true);
    this.locked = true;
    this.state.iterators++;
    const rows = this.rows<R>(p);
    rows.next(); // run up to the priming yield, so that return() always reaches the finally block
    return rows;
  }

  private *rows<R>(p: number): Generator<R, void, undefined> {
    const x = this.x;
    try {
      yield undefined as R; // priming yield, consumed by iterate()
      let rc = x.sqlite3_step(p);
      for (; rc === ROW; rc = x.sqlite3_step(p)) yield this.row(p) as R;
      if (rc !== DONE) throw this.fail(rc, 'step');
    } finally {
      x.sqlite3_reset(p);
      this.locked = false;
      this.state.iterators--;
      this.state.afterStatement?.();
    }
  }

  /** Return only the first column of each row (turns raw and expand mode off). */
  pluck(on = true): this {
    this.affirmIdle('pluck');
    this.mode = on ? PLUCK : this.mode === PLUCK ? OBJECT : this.mode;
    return this;
  }

  /** Return rows as arrays of values instead of objects (turns pluck and expand mode off). */
  raw(on = true): this {
    this.affirmIdle('raw');
    this.mode = on ? RAW : this.mode === RAW ? OBJECT : this.mode;
    return this;
  }

  /**
   * Return each row as an object per table (`{ user: { id, name }, post: { id, title } }`), expressions
   * under `$`, as better-sqlite3's `expand()` (turns pluck and raw mode off).
   */
  expand(on = true): this {
    this.affirmIdle('expand');
    this.mode = on ? EXPAND : this.mode === EXPAND ? OBJECT : this.mode;
    return this;
  }

  /** Return INTEGER values (and `lastInsertRowid`) as `bigint` instead of `number`. */
  safeIntegers(on = true): this {
    this.affirmIdle();
    this.safe = on;
    return this;
  }

  /** Binds parameters permanently; later calls must then pass no parameters. Allowed once. */
  bind(...params: BindArg[]): this {
    this.affirmIdle();
    if (this.bound) throw new TypeError('The bind() method can only be invoked once per statement object');
    this.bindAll(params);
    this.bound = true;
    return this;
  }

  /** Describes the result columns (name, origin column/table/schema, declared type). */
  columns(): ColumnDefinition[] {
    this.affirmIdle('columns');
    const capi = this.b.sqlite3.capi;
    const p = this.p;
    const out: ColumnDefinition[] = [];
    for (let i = 0, n = this.x.sqlite3_column_count(p); i < n; i++) {
      out.push({
        name: capi.sqlite3_column_name(p, i),
        column: capi.sqlite3_column_origin_name(p, i),
        table: capi.sqlite3_column_table_name(p, i),
        database: capi.sqlite3_column_database_name(p, i),
        type: capi.sqlite3_column_decltype(p, i),
      });
    }
    return out;
  }

  /** @internal Finalizes the statement now (used for internal one-shot statements). */
  _finalize(): void {
    registry.unregister(this);
    if (this.state.handle !== 0 && this.state.statements.delete(this.p)) this.x.sqlite3_finalize(this.p);
  }

  /** Throws unless the connection is open and the statement idle (and, given a method, a reader). */
  private affirmIdle(readerMethod?: string): void {
    if (this.state.handle === 0) throw new TypeError('The database connection is not open');
    if (this.locked) throw new TypeError('This statement is busy executing a query');
    if (readerMethod !== undefined && !this.returnsData) {
      throw new TypeError(`The ${readerMethod}() method is only for statements that return data`);
    }
  }

  /** Checks that the statement may run now and binds `params`; returns the statement pointer. */
  private enter(params: BindArg[], data: boolean): number {
    const state = this.state;
    this.affirmIdle();
    if (data && !this.returnsData)
      throw new TypeError('This statement does not return data. Use run() instead');
    if (state.iterators !== 0 && !this.readonly) {
      throw new TypeError('This database connection is busy executing a query');
    }
    if (this.bound) {
      if (params.length !== 0) throw new TypeError('This statement already has bound parameters');
    } else if (params.length !== 0 || this.nParams !== 0) {
      this.bindAll(params);
    }
    return this.p;
  }

  /** Builds a SqliteError for `rc` and resets the statement so it can be reused. */
  private fail(rc: number, operation: string): unknown {
    const err = takeError(this.state, rc, () =>
      sqliteError(this.b.sqlite3, this.state.handle, rc, describeSql(operation, this.source)),
    );
    this.x.sqlite3_reset(this.p);
    return err;
  }

  private bindAll(params: BindArg[]): void {
    const n = this.nParams;
    if (this.names === null && params.length === n) {
      // Fast path: exactly one positional value per parameter.
      for (let i = 0; i < n; i++) {
        const v = params[i];
        if (typeof v === 'object' && v !== null && (Array.isArray(v) || isPlainObject(v))) {
          this.bindMixed(params);
          return;
        }
        this.bindValue(i + 1, v as BindValue);
      }
    } else {
      this.bindMixed(params);
    }
    this.b.trim();
  }

  private bindMixed(params: BindArg[]): void {
    const positional: BindValue[] = [];
    let named: { readonly [name: string]: BindValue } | undefined;
    for (const arg of params) {
      if (Array.isArray(arg)) positional.push(...(arg as BindValue[]));
      else if (typeof arg === 'object' && arg !== null && isPlainObject(arg)) {
        if (named !== undefined)
          throw new TypeError('You cannot specify named parameters in two different objects');
        named = arg as { readonly [name: string]: BindValue };
      } else positional.push(arg as BindValue);
    }
    let k = 0;
    for (let i = 0; i < this.nParams; i++) {
      const name = this.names?.[i] ?? null;
      if (name === null) {
        if (k >= positional.length) throw new RangeError('Too few parameter values were provided');
        this.bindValue(i + 1, positional[k++]);
      } else {
        if (named === undefined)
          throw new TypeError('Named parameters can only be passed within plain objects');
        if (!Object.hasOwn(named, name)) throw new RangeError(`Missing named parameter "${name}"`);
        this.bindValue(i + 1, named[name]);
      }
    }
    if (k < positional.length) throw new RangeError('Too many parameter values were provided');
    this.b.trim();
  }

  private bindValue(i: number, v: BindValue): void {
    const rc = this.b.bindValue(this.p, i, v);
    if (rc !== 0) throw this.fail(rc, 'bind');
  }

  /** Reads the current row in the statement's mode. */
  private row(p: number): unknown {
    if (this.mode === PLUCK) return this.b.column(p, this.safe, 0);
    const n = this.x.sqlite3_column_count(p);
    if (this.mode === RAW) {
      const values = new Array<SqlValue>(n);
      for (let i = 0; i < n; i++) values[i] = this.b.column(p, this.safe, i);
      return values;
    }
    let names = this.columnNames;
    if (names.length !== n) names = this.loadColumnNames(p, n);
    if (this.mode === EXPAND) return this.expanded(p, n, names);
    const row: Row = {};
    if (this.protoKey) {
      for (let i = 0; i < n; i++) {
        Object.defineProperty(row, names[i]!, { value: this.b.column(p, this.safe, i), ...DATA });
      }
    } else {
      for (let i = 0; i < n; i++) row[names[i]!] = this.b.column(p, this.safe, i);
    }
    return row;
  }

  private expanded(p: number, n: number, names: string[]): Record<string, Row> {
    const capi = this.b.sqlite3.capi;
    const row: Record<string, Row> = Object.create(null);
    for (let i = 0; i < n; i++) {
      const table = capi.sqlite3_column_table_name(p, i) ?? '$';
      row[table] ??= {};
      Object.defineProperty(row[table], names[i]!, { value: this.b.column(p, this.safe, i), ...DATA });
    }
    return { ...row };
  }

  private loadColumnNames(p: number, n: number): string[] {
    const names: string[] = [];
    for (let i = 0; i < n; i++) names.push(this.b.cstr(this.x.sqlite3_column_name(p, i)) ?? '');
    this.protoKey = names.includes('__proto__');
    this.columnNames = names;
    return names;
  }
}
