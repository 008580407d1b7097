/**
 * User-defined SQL functions and aggregates, as better-sqlite3's `db.function()` and `db.aggregate()`.
 *
 * One set of trampolines per loaded module, installed in the WASM function table once: every function
 * registered with SQLite gets them and an id as its user data (`sqlite3_user_data`), which names the
 * JavaScript side here. SQLite's `xDestroy` (a function replaced, or its connection closed) forgets the id,
 * so nothing leaks however often functions are registered.
 *
 * This file must not import any `node:` module: it also runs in browsers.
 * @module
 */

import type { ConnectionState } from './database.js';
import { sqliteError } from './errors.js';
import { type Binding, type SqlValue, TRANSIENT } from './sqlite.js';

/** Options of `db.function()`. */
export interface FunctionOptions {
  /** Same result for the same arguments (`SQLITE_DETERMINISTIC`): usable in indexes and CHECKs. */
  deterministic?: boolean;
  /** Any number of arguments (default: the JavaScript function's `length`). */
  varargs?: boolean;
  /** Only from top-level SQL, not from triggers, views or schema (`SQLITE_DIRECTONLY`). */
  directOnly?: boolean;
  /** INTEGER arguments as `bigint` (default: the connection's `defaultSafeIntegers`). */
  safeIntegers?: boolean;
}

/** Options of `db.aggregate()`: what to do with each row, and the result. */
export interface AggregateOptions extends FunctionOptions {
  /** The accumulator's first value, or a function returning it for each group (default null). */
  start?: unknown;
  /** Takes the accumulator and a row's arguments; what it returns (unless undefined) is the new one. */
  step: (total: never, ...args: never[]) => unknown;
  /** Takes a row out of a window (makes it a window function); returns the new accumulator. */
  inverse?: (total: never, ...args: never[]) => unknown;
  /** Turns the accumulator into the result (default: the accumulator itself). */
  result?: (total: never) => unknown;
}

interface ValueExports {
  sqlite3_create_function_v2(
    db: number,
    name: number,
    nArg: number,
    flags: number,
    app: number,
    xFunc: number,
    xStep: number,
    xFinal: number,
    xDestroy: number,
  ): number;
  sqlite3_create_window_function(
    db: number,
    name: number,
    nArg: number,
    flags: number,
    app: number,
    xStep: number,
    xFinal: number,
    xValue: number,
    xInverse: number,
    xDestroy: number,
  ): number;
  sqlite3_user_data(ctx: number): number;
  sqlite3_aggregate_context(ctx: number, n: number): number;
  sqlite3_value_type(v: number): number;
  sqlite3_value_int64(v: number): bigint;
  sqlite3_value_double(v: number): number;
  sqlite3_value_text(v: number): number;
  sqlite3_value_blob(v: number): number;
  sqlite3_value_bytes(v: number): number;
  sqlite3_result_null(ctx: number): void;
  sqlite3_result_int64(ctx: number, v: bigint): void;
  sqlite3_result_double(ctx: number, v: number): void;
  sqlite3_result_text(ctx: number, p: number, n: number, destructor: number): void;
  sqlite3_result_blob(ctx: number, p: number, n: number, destructor: number): void;
  sqlite3_result_error(ctx: number, p: number, n: number): void;
}

interface Entry {
  name: string;
  state: ConnectionState;
  safe: boolean;
  call?: (...args: unknown[]) => unknown;
  aggregate?: AggregateOptions;
  /** Accumulators of the groups in progress, by aggregate context pointer. */
  groups: Map<number, { total: unknown }>;
}

interface Trampolines {
  xFunc: number;
  xStep: number;
  xFinal: number;
  xValue: number;
  xInverse: number;
  xDestroy: number;
  entries: Map<number, Entry>;
  nextId: number;
}

const SQLITE_UTF8 = 1;
const SQLITE_DETERMINISTIC = 0x800;
const SQLITE_DIRECTONLY = 0x80000;
const modules = new WeakMap<Binding, Trampolines>();

/** Registers a scalar function on connection `db`. */
export function createFunction(
  b: Binding,
  state: ConnectionState,
  name: string,
  options: FunctionOptions,
  fn: (...args: never[]) => unknown,
): void {
  if (typeof fn !== 'function') throw new TypeError('Expected a function');
  register(b, state, name, options, fn.length, { call: fn as (...args: unknown[]) => unknown }, false);
}

/** Registers an aggregate (a window function when it has `inverse`) on connection `db`. */
export function createAggregate(
  b: Binding,
  state: ConnectionState,
  name: string,
  options: AggregateOptions,
): void {
  if (typeof options?.step !== 'function') throw new TypeError('Expected options.step to be a function');
  if (options.inverse !== undefined && typeof options.inverse !== 'function') {
    throw new TypeError('Expected options.inverse to be a function');
  }
  if (options.result !== undefined && typeof options.result !== 'function') {
    throw new TypeError('Expected options.result to be a function');
  }
  const arity = Math.max(0, options.step.length - 1);
  register(b, state, name, options, arity, { aggregate: options }, options.inverse !== undefined);
}

function register(
  b: Binding,
  state: ConnectionState,
  name: string,
  options: FunctionOptions,
  arity: number,
  body: Pick<Entry, 'call' | 'aggregate'>,
  window: boolean,
): void {
  if (typeof name !== 'string' || name === '') throw new TypeError('Expected a function name');
  if (state.handle === 0) throw new TypeError('The database connection is not open');
  if (state.iterators !== 0) throw new TypeError('This database connection is busy executing a query');
  const t = trampolines(b);
  const x = b.sqlite3.wasm.exports as unknown as ValueExports;
  const id = t.nextId++;
  const safe = options.safeIntegers ?? state.safeIntegers;
  t.entries.set(id, { name, state, safe, groups: new Map(), ...body });
  let flags = SQLITE_UTF8;
  if (options.deterministic === true) flags |= SQLITE_DETERMINISTIC;
  if (options.directOnly === true) flags |= SQLITE_DIRECTONLY;
  const nArg = options.varargs === true ? -1 : arity;
  const pName = b.allocString(name);
  let rc: number;
  try {
    rc = window
      ? x.sqlite3_create_window_function(
          state.handle,
          pName,
          nArg,
          flags,
          id,
          t.xStep,
          t.xFinal,
          t.xValue,
          t.xInverse,
          t.xDestroy,
        )
      : body.call
        ? x.sqlite3_create_function_v2(state.handle, pName, nArg, flags, id, t.xFunc, 0, 0, t.xDestroy)
        : x.sqlite3_create_function_v2(
            state.handle,
            pName,
            nArg,
            flags,
            id,
            0,
            t.xStep,
            t.xFinal,
            t.xDestroy,
          );
  } finally {
    b.x.sqlite3_free(pName);
  }
  // SQLite calls xDestroy when registration fails too.
  if (rc !== 0) throw sqliteError(b.sqlite3, state.handle, rc, `create function ${name}()`);
}

function trampolines(b: Binding): Trampolines {
  const known = modules.get(b);
  if (known) return known;
  const wasm = b.sqlite3.wasm;
  const x = wasm.exports as unknown as ValueExports;
  const entries = new Map<number, Entry>();
  const entryOf = (ctx: number): Entry => entries.get(x.sqlite3_user_data(ctx))!;
  const args = (e: Entry, argc: number, argv: number): unknown[] => {
    const out = new Array<unknown>(argc);
    for (let i = 0; i < argc; i++) out[i] = value(b, x, b.peekPtr(argv + 4 * i), e.safe);
    return out;
  };
  const guarded = (ctx: number, run: (e: Entry) => void): void => {
    const e = entryOf(ctx);
    try {
      run(e);
    } catch (err) {
      e.state.thrown = err;
      const message = err instanceof Error ? err.message : String(err);
      const p = b.allocString(`${e.name}(): ${message}`);
      x.sqlite3_result_error(ctx, p, -1);
      b.x.sqlite3_free(p);
    }
  };
  const group = (e: Entry, ctx: number, create: boolean): { total: unknown } | undefined => {
    const key = x.sqlite3_aggregate_context(ctx, create ? 8 : 0);
    if (key === 0) return create ? undefined : { total: start(e.aggregate!) };
    let g = e.groups.get(key);
    if (g === undefined) {
      g = { total: start(e.aggregate!) };
      e.groups.set(key, g);
    }
    return g;
  };
  const step = (ctx: number, argc: number, argv: number, inverse: boolean): void =>
    guarded(ctx, (e) => {
      const g = group(e, ctx, true);
      if (g === undefined) throw new RangeError('out of WASM memory');
      const a = e.aggregate!;
      const f = (inverse ? a.inverse! : a.step) as (...v: unknown[]) => unknown;
      const next = f(g.total, ...args(e, argc, argv));
      if (next !== undefined) g.total = next;
    });
  const finish = (ctx: number, final: boolean): void =>
    guarded(ctx, (e) => {
      const key = x.sqlite3_aggregate_context(ctx, 0);
      const g = group(e, ctx, false)!;
      if (final) e.groups.delete(key);
      const a = e.aggregate!;
      result(b, x, ctx, a.result ? (a.result as (t: unknown) => unknown)(g.total) : g.total);
    });
  const t: Trampolines = {
    xFunc: wasm.installFunction('v(pip)', (ctx: number, argc: number, argv: number) =>
      guarded(ctx, (e) => result(b, x, ctx, e.call!(...args(e, argc, argv)))),
    ),
    xStep: wasm.installFunction('v(pip)', (ctx: number, argc: number, argv: number) =>
      step(ctx, argc, argv, false),
    ),
    xInverse: wasm.installFunction('v(pip)', (ctx: number, argc: number, argv: number) =>
      step(ctx, argc, argv, true),
    ),
    xFinal: wasm.installFunction('v(p)', (ctx: number) => finish(ctx, true)),
    xValue: wasm.installFunction('v(p)', (ctx: number) => finish(ctx, false)),
    xDestroy: wasm.installFunction('v(p)', (id: number) => {
      entries.delete(id);
    }),
    entries,
    nextId: 1,
  };
  modules.set(b, t);
  return t;
}

function start(a: AggregateOptions): unknown {
  return typeof a.start === 'function' ? (a.start as () => unknown)() : (a.start ?? null);
}

/** An argument, read as a statement reads a column (INTEGER as `bigint` when `safe`). */
function value(b: Binding, x: ValueExports, v: number, safe: boolean): SqlValue {
  switch (x.sqlite3_value_type(v)) {
    case 1: {
      const n = x.sqlite3_value_int64(v);
      return safe ? n : Number(n);
    }
    case 2:
      return x.sqlite3_value_double(v);
    case 3: {
      const p = x.sqlite3_value_text(v);
      return b.text(p, x.sqlite3_value_bytes(v));
    }
    case 4: {
      const p = x.sqlite3_value_blob(v) >>> 0;
      const n = x.sqlite3_value_bytes(v);
      return n === 0 ? new Uint8Array(0) : b.heap().slice(p, p + n);
    }
    default:
      return null;
  }
}

/** Sets the function's result as a bound value is stored (integral numbers as INTEGER). */
function result(b: Binding, x: ValueExports, ctx: number, v: unknown): void {
  switch (typeof v) {
    case 'number':
      if (Number.isInteger(v) && v >= -(2 ** 63) && v < 2 ** 63) x.sqlite3_result_int64(ctx, BigInt(v));
      else x.sqlite3_result_double(ctx, v);
      return;
    case 'bigint':
      if (v < -(2n ** 63n) || v >= 2n ** 63n) throw new RangeError('BigInt value is out of the 64-bit range');
      x.sqlite3_result_int64(ctx, v);
      return;
    case 'boolean':
      x.sqlite3_result_int64(ctx, v ? 1n : 0n);
      return;
    case 'string': {
      const n = b.putString(v);
      x.sqlite3_result_text(ctx, b.buf, n, TRANSIENT);
      return;
    }
    case 'undefined':
      x.sqlite3_result_null(ctx);
      return;
  }
  if (v === null) {
    x.sqlite3_result_null(ctx);
    return;
  }
  if (ArrayBuffer.isView(v) || v instanceof ArrayBuffer) {
    const bytes =
      v instanceof ArrayBuffer ? new Uint8Array(v) : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    const n = b.putBytes(bytes);
    x.sqlite3_result_blob(ctx, b.buf, n, TRANSIENT);
    return;
  }
  throw new TypeError(
    'the function returned a value SQLite cannot store (numbers, strings, bigints, byte arrays and null)',
  );
}
