/**
 * Loading of the SQLite WebAssembly module and the low-level memory helpers shared by
 * {@link Database} and {@link Statement}.
 *
 * This file must not import any `node:` module: it also runs in browsers.
 * @module
 */
import type { Sqlite3Static } from '@sqlite.org/sqlite-wasm';

/** The initialised `@sqlite.org/sqlite-wasm` module object (`capi`, `wasm`, `oo1`, ...). */
export type Sqlite3 = Sqlite3Static;

type InitModule = (options: {
  print: (text: string) => void;
  printErr: (text: string) => void;
  /** Emscripten's hook: instantiate the module with `imports` and hand the instance to `done`. */
  instantiateWasm?: (
    imports: WebAssembly.Imports,
    done: (instance: WebAssembly.Instance, module: WebAssembly.Module) => void,
  ) => object;
}) => Promise<Sqlite3>;

let loading: Promise<Sqlite3> | undefined;
const quiet = (): void => {};

/**
 * Loads and initialises `@sqlite.org/sqlite-wasm` once; later calls return the same promise.
 * The module's stdout/stderr chatter is silenced. A failed load is not cached, so it can be retried.
 *
 * `wasm`: sqlite3.wasm already compiled (or being compiled) elsewhere, e.g. by the page while its
 * worker starts; without it, the module fetches and compiles its own. It only counts on the first call.
 */
export function loadSqlite(wasm?: Promise<WebAssembly.Module>): Promise<Sqlite3> {
  if (loading === undefined) {
    let failed: (e: unknown) => void = () => {};
    const failure = new Promise<never>((_, reject) => {
      failed = reject;
    });
    failure.catch(() => {});
    const instantiateWasm = wasm
      ? (imports: WebAssembly.Imports, done: (i: WebAssembly.Instance, m: WebAssembly.Module) => void) => {
          wasm
            .then(async (m) => done(await WebAssembly.instantiate(m, imports), m))
            .catch((e: unknown) => failed(e));
          return {};
        }
      : undefined;
    // Imported here, not at the top: the module is large (parsing it is a good part of a command line
    // call that never opens a database, e.g. `mycelite --help`). The published typings omit init()'s
    // options parameter on purpose, but Emscripten honours it.
    const init = import('@sqlite.org/sqlite-wasm').then((m) =>
      (m.default as unknown as InitModule)({
        print: quiet,
        printErr: quiet,
        ...(instantiateWasm ? { instantiateWasm } : {}),
      }),
    );
    const promise = Promise.race([init, failure]);
    loading = promise;
    promise.catch(() => {
      if (loading === promise) loading = undefined;
    });
  }
  return loading;
}

/**
 * The raw WASM exports used by the engine. They do no argument conversion at all: pointers are
 * plain (32-bit) numbers and every `sqlite3_int64` crosses the boundary as a `bigint`
 * (WASM BigInt integration), both as argument and as result.
 */
export interface WasmExports {
  sqlite3_open_v2(filename: number, ppDb: number, flags: number, vfs: number): number;
  sqlite3_file_control(db: number, dbName: number, op: number, arg: number): number;
  sqlite3_close_v2(db: number): number;
  sqlite3_exec(db: number, sql: number, callback: number, arg: number, errmsg: number): number;
  sqlite3_prepare_v3(
    db: number,
    sql: number,
    nByte: number,
    flags: number,
    ppStmt: number,
    pzTail: number,
  ): number;
  sqlite3_finalize(stmt: number): number;
  sqlite3_next_stmt(db: number, stmt: number): number;
  sqlite3_step(stmt: number): number;
  sqlite3_reset(stmt: number): number;
  sqlite3_clear_bindings(stmt: number): number;
  sqlite3_stmt_readonly(stmt: number): number;
  sqlite3_bind_parameter_count(stmt: number): number;
  sqlite3_bind_parameter_name(stmt: number, index: number): number;
  sqlite3_bind_null(stmt: number, index: number): number;
  sqlite3_bind_int(stmt: number, index: number, value: number): number;
  sqlite3_bind_int64(stmt: number, index: number, value: bigint): number;
  sqlite3_bind_double(stmt: number, index: number, value: number): number;
  sqlite3_bind_text(stmt: number, index: number, text: number, nByte: number, destructor: number): number;
  sqlite3_bind_blob(stmt: number, index: number, blob: number, nByte: number, destructor: number): number;
  sqlite3_column_count(stmt: number): number;
  sqlite3_column_name(stmt: number, col: number): number;
  sqlite3_column_type(stmt: number, col: number): number;
  sqlite3_column_int64(stmt: number, col: number): bigint;
  sqlite3_column_double(stmt: number, col: number): number;
  sqlite3_column_text(stmt: number, col: number): number;
  sqlite3_column_blob(stmt: number, col: number): number;
  sqlite3_column_bytes(stmt: number, col: number): number;
  sqlite3_changes(db: number): number;
  sqlite3_total_changes(db: number): number;
  sqlite3_last_insert_rowid(db: number): bigint;
  sqlite3_get_autocommit(db: number): number;
  sqlite3_malloc(n: number): number;
  sqlite3_free(p: number): void;
}

/** A value that can be bound to a parameter. Integer-valued numbers bind as INTEGER, others as REAL. */
export type BindValue = null | undefined | number | bigint | string | boolean | ArrayBuffer | ArrayBufferView;
/** A value read from a result column. INTEGER is `number`, or `bigint` with safeIntegers. */
export type SqlValue = null | number | bigint | string | Uint8Array;

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
/** Scratch buffers larger than this are released after use instead of being kept. */
const KEEP_BYTES = 64 * 1024;
/** `SQLITE_TRANSIENT`: SQLite copies the bound text/blob before the bind call returns. */
export const TRANSIENT = -1;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Per-module state shared by all connections of one {@link Sqlite3} instance: typed raw exports
 * and a reusable scratch allocation for passing strings and blobs into WASM memory.
 *
 * Heap views are fetched with `wasm.heap8u()` in every call and never kept, because growing the
 * WASM memory detaches previously created views.
 */
export class Binding {
  /** The raw WASM exports (no argument conversion). */
  readonly x: WasmExports;
  /** The module this binding belongs to. */
  readonly sqlite3: Sqlite3;
  /** Pointer to the scratch buffer; only valid until the next `reserve`/`put*` call. */
  buf = 0;
  /** Capacity of the scratch buffer in bytes. */
  private cap = 0;
  /** Pointer to 16 bytes reserved for out-parameters (`sqlite3**`, `sqlite3_stmt**`, tails). */
  readonly out: number;

  /** Creates the binding for a module; use {@link bindingFor} to get the shared instance. */
  constructor(sqlite3: Sqlite3) {
    this.sqlite3 = sqlite3;
    this.x = sqlite3.wasm.exports as WasmExports;
    this.out = this.malloc(16);
    this.reserve(256);
  }

  /** A fresh byte view of the whole WASM heap; do not keep it across calls into WASM. */
  heap(): Uint8Array {
    return this.sqlite3.wasm.heap8u();
  }

  /** Ensures the scratch buffer holds at least `n` bytes and returns its pointer. */
  reserve(n: number): number {
    if (n > this.cap) {
      const size = Math.max(n, this.cap * 2);
      const p = this.malloc(size);
      if (this.buf !== 0) this.x.sqlite3_free(this.buf);
      this.buf = p;
      this.cap = size;
    }
    return this.buf;
  }

  /** Releases an oversized scratch buffer (after a large string or blob was passed in). */
  trim(): void {
    if (this.cap > KEEP_BYTES) {
      this.x.sqlite3_free(this.buf);
      this.buf = 0;
      this.cap = 0;
      this.reserve(256);
    }
  }

  /** Writes `s` as NUL-terminated UTF-8 at {@link buf}; returns the byte length without the NUL. */
  putString(s: string): number {
    const len = s.length;
    const p = this.reserve(len * 3 + 1);
    const heap = this.heap();
    if (len <= 64) {
      let i = 0;
      for (; i < len; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) break;
        heap[p + i] = c;
      }
      if (i === len) {
        heap[p + len] = 0;
        return len;
      }
    }
    const written = encoder.encodeInto(s, heap.subarray(p, p + len * 3)).written;
    heap[p + written] = 0;
    return written;
  }

  /** Copies `bytes` to {@link buf}; returns the byte length. */
  putBytes(bytes: Uint8Array): number {
    const n = bytes.byteLength;
    const p = this.reserve(n + 1);
    this.heap().set(bytes, p);
    return n;
  }

  /** Decodes `n` bytes of UTF-8 at pointer `p`. */
  text(p: number, n: number): string {
    if (n === 0) return '';
    const heap = this.heap();
    p >>>= 0;
    if (n <= 24) {
      // Short ASCII strings are decoded faster by hand than by TextDecoder.
      let s = '';
      for (let i = 0; i < n; i++) {
        const c = heap[p + i]!;
        if (c >= 0x80) return decoder.decode(heap.subarray(p, p + n));
        s += String.fromCharCode(c);
      }
      return s;
    }
    return decoder.decode(heap.subarray(p, p + n));
  }

  /** Decodes the NUL-terminated UTF-8 string at `p` (`null` for a NULL pointer). */
  cstr(p: number): string | null {
    if (p === 0) return null;
    p >>>= 0;
    const heap = this.heap();
    return this.text(p, heap.indexOf(0, p) - p);
  }

  /** Reads the 32-bit pointer stored at address `p`. */
  peekPtr(p: number): number {
    const h = this.heap();
    return (h[p]! | (h[p + 1]! << 8) | (h[p + 2]! << 16) | (h[p + 3]! << 24)) >>> 0;
  }

  /**
   * Binds `v` to parameter `i` of statement `stmt`; returns the SQLite result code. Throws
   * TypeError/RangeError for values SQLite cannot store.
   */
  bindValue(stmt: number, i: number, v: BindValue): number {
    const x = this.x;
    switch (typeof v) {
      case 'number':
        if ((v | 0) === v && (v !== 0 || 1 / v > 0)) return x.sqlite3_bind_int(stmt, i, v);
        if (Number.isInteger(v) && v !== 0 && v >= -(2 ** 63) && v < 2 ** 63) {
          return x.sqlite3_bind_int64(stmt, i, BigInt(v));
        }
        return x.sqlite3_bind_double(stmt, i, v); // also -0, NaN (stored as NULL) and ±Infinity
      case 'string': {
        const n = this.putString(v); // may move this.buf
        return x.sqlite3_bind_text(stmt, i, this.buf, n, TRANSIENT);
      }
      case 'bigint':
        if (v < INT64_MIN || v > INT64_MAX) throw new RangeError('BigInt value is out of the 64-bit range');
        return x.sqlite3_bind_int64(stmt, i, v);
      case 'boolean':
        return x.sqlite3_bind_int(stmt, i, v ? 1 : 0);
      case 'undefined':
        return x.sqlite3_bind_null(stmt, i);
    }
    if (v === null) return x.sqlite3_bind_null(stmt, i);
    let bytes: Uint8Array;
    if (v instanceof Uint8Array) bytes = v;
    else if (v instanceof ArrayBuffer) bytes = new Uint8Array(v);
    else if (ArrayBuffer.isView(v)) bytes = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    else
      throw new TypeError('SQLite can only bind numbers, strings, bigints, booleans, byte arrays and null');
    const n = this.putBytes(bytes);
    return x.sqlite3_bind_blob(stmt, i, this.buf, n, TRANSIENT);
  }

  /** Reads column `i` of the current row of `stmt`; INTEGER as `bigint` when `safe`. */
  column(stmt: number, safe: boolean, i: number): SqlValue {
    const x = this.x;
    switch (x.sqlite3_column_type(stmt, i)) {
      case 1: // SQLITE_INTEGER: column_double gives the same (double) cast better-sqlite3 uses.
        return safe ? x.sqlite3_column_int64(stmt, i) : x.sqlite3_column_double(stmt, i);
      case 2: // SQLITE_FLOAT
        return x.sqlite3_column_double(stmt, i);
      case 3: {
        const p = x.sqlite3_column_text(stmt, i);
        return this.text(p, x.sqlite3_column_bytes(stmt, i));
      }
      case 4: {
        const p = x.sqlite3_column_blob(stmt, i) >>> 0;
        const n = x.sqlite3_column_bytes(stmt, i);
        return n === 0 ? new Uint8Array(0) : this.heap().slice(p, p + n);
      }
      default:
        return null;
    }
  }

  /** Allocates `n` bytes with sqlite3_malloc, throwing on failure. */
  malloc(n: number): number {
    const p = this.x.sqlite3_malloc(n);
    if (p === 0) throw new RangeError(`sqlite3_malloc(${n}) failed: out of WASM memory`);
    return p;
  }

  /**
   * Allocates a NUL-terminated UTF-8 copy of `s` (free it with `x.sqlite3_free`). Used instead of
   * the scratch buffer when SQLite may call back into JS (e.g. a JS VFS) while it reads the text.
   */
  allocString(s: string): number {
    const cap = s.length * 3 + 1;
    const p = this.malloc(cap);
    const heap = this.heap();
    heap[p + encoder.encodeInto(s, heap.subarray(p, p + cap - 1)).written] = 0;
    return p;
  }
}

const bindings = new WeakMap<Sqlite3, Binding>();

/** Returns the (cached) {@link Binding} of a loaded module. */
export function bindingFor(sqlite3: Sqlite3): Binding {
  let b = bindings.get(sqlite3);
  if (b === undefined) {
    b = new Binding(sqlite3);
    bindings.set(sqlite3, b);
  }
  return b;
}
