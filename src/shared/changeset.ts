/**
 * The SQLite session extension as this folder uses it: the raw WASM exports, reading values out of
 * WASM memory, and walking a changeset's row changes. Runtime-neutral (no `node:` imports).
 * @module
 */
import type { Database } from '../engine/database.js';
import { type Binding, bindingFor, type Sqlite3, type SqlValue } from '../engine/sqlite.js';

/** The session-extension functions of `wasm.exports` used here; pointers are plain numbers, no conversion. */
export interface SessionExports {
  sqlite3session_create(db: number, zDb: number, ppSession: number): number;
  sqlite3session_delete(session: number): void;
  sqlite3session_object_config(session: number, op: number, pArg: number): number;
  sqlite3session_attach(session: number, zTab: number): number;
  sqlite3session_table_filter(session: number, xFilter: number, pCtx: number): void;
  sqlite3session_changeset(session: number, pnChangeset: number, ppChangeset: number): number;
  sqlite3session_isempty(session: number): number;
  sqlite3session_enable(session: number, enable: number): number;
  sqlite3changeset_start(ppIter: number, nChangeset: number, pChangeset: number): number;
  sqlite3changeset_next(iter: number): number;
  sqlite3changeset_op(iter: number, pzTab: number, pnCol: number, pOp: number, pbIndirect: number): number;
  sqlite3changeset_pk(iter: number, pabPK: number, pnCol: number): number;
  sqlite3changeset_old(iter: number, col: number, ppValue: number): number;
  sqlite3changeset_new(iter: number, col: number, ppValue: number): number;
  sqlite3changeset_conflict(iter: number, col: number, ppValue: number): number;
  sqlite3changeset_finalize(iter: number): number;
  sqlite3changeset_apply_v2(
    db: number,
    nChangeset: number,
    pChangeset: number,
    xFilter: number,
    xConflict: number,
    pCtx: number,
    ppRebase: number,
    pnRebase: number,
    flags: number,
  ): number;
  sqlite3_value_type(value: number): number;
  sqlite3_value_int64(value: number): bigint;
  sqlite3_value_double(value: number): number;
  sqlite3_value_text(value: number): number;
  sqlite3_value_blob(value: number): number;
  sqlite3_value_bytes(value: number): number;
}

/** What a row change does. */
export type ChangeOp = 'insert' | 'update' | 'delete';

/** One row change of a changeset, as read by {@link readChangeset} or seen by a conflict handler. */
export interface RowChange {
  table: string;
  op: ChangeOp;
  /** Written by a trigger or a foreign key action rather than by the statement itself. */
  indirect: boolean;
  /** Per changeset column, its primary key position (1, 2, ...) or 0. */
  pk: number[];
  /** Old values per changeset column (`undefined`: not recorded, e.g. an unchanged column of an UPDATE). */
  old?: (SqlValue | undefined)[];
  /** New values per changeset column (`undefined`: not recorded, e.g. an unchanged column of an UPDATE). */
  new?: (SqlValue | undefined)[];
}

const SQLITE_ROW = 100;
const OPS: Record<number, ChangeOp> = { 18: 'insert', 23: 'update', 9: 'delete' };

/** The raw session exports and the engine's memory helpers of one loaded module. */
export function sessionApi(sqlite3: Sqlite3): { x: SessionExports; b: Binding } {
  return { x: sqlite3.wasm.exports as unknown as SessionExports, b: bindingFor(sqlite3) };
}

/** Reads an `sqlite3_value*` (0: `undefined`). INTEGER is a number when exact, else a bigint. */
export function readValue(x: SessionExports, b: Binding, p: number): SqlValue | undefined {
  if (p === 0) return undefined;
  switch (x.sqlite3_value_type(p)) {
    case 1: {
      const v = x.sqlite3_value_int64(p);
      return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
    }
    case 2:
      return x.sqlite3_value_double(p);
    case 3: {
      const text = x.sqlite3_value_text(p);
      return b.text(text, x.sqlite3_value_bytes(p));
    }
    case 4: {
      const blob = x.sqlite3_value_blob(p) >>> 0;
      const n = x.sqlite3_value_bytes(p);
      return n === 0 ? new Uint8Array(0) : b.heap().slice(blob, blob + n);
    }
    default:
      return null;
  }
}

/**
 * Runs `fn` with `n` zeroed 4-byte out-parameter slots allocated with sqlite3_malloc (not a shared
 * scratch buffer: SQLite may call back into JS, which may use that one, while these are live).
 */
export function withSlots<T>(b: Binding, n: number, fn: (p: number) => T): T {
  const p = b.malloc(4 * n);
  b.heap().fill(0, p, p + 4 * n);
  try {
    return fn(p);
  } finally {
    b.x.sqlite3_free(p);
  }
}

/** Reads the change an iterator points at; with `conflict`, also the conflicting row now in the database. */
export function readChange(
  x: SessionExports,
  b: Binding,
  iter: number,
  conflict = false,
): RowChange & { current?: SqlValue[] } {
  return withSlots(b, 4, (s) => {
    x.sqlite3changeset_op(iter, s, s + 4, s + 8, s + 12);
    const table = b.cstr(b.peekPtr(s)) ?? '';
    const n = b.peekPtr(s + 4);
    const op = OPS[b.peekPtr(s + 8)]!;
    const indirect = b.peekPtr(s + 12) !== 0;
    x.sqlite3changeset_pk(iter, s, 0);
    const flags = b.peekPtr(s);
    const pk = Array.from(b.heap().subarray(flags, flags + n));
    const values = (read: (i: number, pp: number) => number): (SqlValue | undefined)[] => {
      const out: (SqlValue | undefined)[] = [];
      for (let i = 0; i < n; i++) {
        b.heap().fill(0, s, s + 4);
        out.push(read(i, s) === 0 ? readValue(x, b, b.peekPtr(s)) : undefined);
      }
      return out;
    };
    const change: RowChange & { current?: SqlValue[] } = { table, op, indirect, pk };
    if (op !== 'insert') change.old = values((i, pp) => x.sqlite3changeset_old(iter, i, pp));
    if (op !== 'delete') change.new = values((i, pp) => x.sqlite3changeset_new(iter, i, pp));
    if (conflict) {
      change.current = values((i, pp) => x.sqlite3changeset_conflict(iter, i, pp)) as SqlValue[];
    }
    return change;
  });
}

/** Copies `bytes` into memory from sqlite3_malloc, runs `fn` with the pointer, then frees it. */
export function withBytes<T>(b: Binding, bytes: Uint8Array, fn: (p: number) => T): T {
  const p = b.malloc(Math.max(1, bytes.byteLength));
  b.heap().set(bytes, p);
  try {
    return fn(p);
  } finally {
    b.x.sqlite3_free(p);
  }
}

/** Calls `fn` with an iterator at each row change of `changeset`, in order. Throws on a corrupt changeset. */
function iterate(
  sqlite3: Sqlite3,
  changeset: Uint8Array,
  fn: (x: SessionExports, b: Binding, iter: number) => void,
): void {
  const { x, b } = sessionApi(sqlite3);
  withBytes(b, changeset, (p) =>
    withSlots(b, 1, (s) => {
      let rc = x.sqlite3changeset_start(s, changeset.byteLength, p);
      if (rc !== 0) throw new Error(`the changeset cannot be read (SQLite code ${rc})`);
      const iter = b.peekPtr(s);
      try {
        while (x.sqlite3changeset_next(iter) === SQLITE_ROW) fn(x, b, iter);
      } finally {
        rc = x.sqlite3changeset_finalize(iter);
      }
      if (rc !== 0) throw new Error(`the changeset is corrupt (SQLite code ${rc})`);
    }),
  );
}

/** Calls `fn` for each row change of `changeset`, in order. Throws on a corrupt changeset. */
export function forEachChange(
  sqlite3: Sqlite3,
  changeset: Uint8Array,
  fn: (change: RowChange) => void,
): void {
  iterate(sqlite3, changeset, (x, b, iter) => fn(readChange(x, b, iter)));
}

/**
 * Calls `fn` once per table of `changeset` (per run of its rows) with the table's name and, per
 * changeset column, its primary key position or 0. Reads no values.
 */
export function forEachTable(
  sqlite3: Sqlite3,
  changeset: Uint8Array,
  fn: (table: string, pk: number[]) => void,
): void {
  let last: string | undefined;
  iterate(sqlite3, changeset, (x, b, iter) =>
    withSlots(b, 3, (s) => {
      x.sqlite3changeset_op(iter, s, s + 4, s + 8, 0);
      const table = b.cstr(b.peekPtr(s)) ?? '';
      if (table === last) return;
      last = table;
      x.sqlite3changeset_pk(iter, s, s + 4);
      const flags = b.peekPtr(s);
      fn(table, Array.from(b.heap().subarray(flags, flags + b.peekPtr(s + 4))));
    }),
  );
}

/** Every row change of `changeset`, in order (for inspection and tests). */
export function readChangeset(db: Database, changeset: Uint8Array): RowChange[] {
  const out: RowChange[] = [];
  forEachChange(db.sqlite3, changeset, (c) => out.push(c));
  return out;
}
