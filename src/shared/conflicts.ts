/**
 * Conflicts met while re-applying a local change, the default policy, and which choices SQLite
 * allows for which kind. Runtime-neutral.
 * @module
 */
import type { SqlValue } from '../engine/sqlite.js';
import type { ChangeOp, RowChange } from './changeset.js';

/**
 * What a local row change met: `data` (the row is there but its recorded old values differ),
 * `notfound` (the row is gone), `conflict` (an INSERT whose key exists), `constraint` (a UNIQUE,
 * CHECK or NOT NULL constraint fails), `foreign_key` (foreign keys fail at the end).
 */
export type ConflictKind = 'data' | 'notfound' | 'conflict' | 'constraint' | 'foreign_key';

/** One conflict, as the handler of {@link applyLocalChange} sees it. */
export interface Conflict {
  kind: ConflictKind;
  table: string;
  op: ChangeOp;
  /**
   * The row's primary key values (from the changeset); `[rowid]` for a table without PRIMARY KEY.
   * For a `foreign_key` conflict on a row this change did not write: the referenced values.
   */
  key: SqlValue[];
  /** The local change's old and new values (undefined where the op has none; unchanged columns undefined). */
  old?: (SqlValue | undefined)[];
  new?: (SqlValue | undefined)[];
  /** The row as it is now in the database, for 'data' and 'conflict' (and a violating 'foreign_key' row). */
  current?: SqlValue[];
}

/**
 * 'local': the local change wins (REPLACE); 'hub': the database's row stays (OMIT, the local change
 * is dropped); 'reject': the whole local transaction is rejected.
 *
 * Allowed per kind: `data` and `conflict` all three; `notfound` 'hub' and 'reject', and 'local' for
 * a DELETE (the row is gone either way, so it is the same as 'hub'); `constraint` 'hub' and
 * 'reject'; `foreign_key` only 'reject'. Any other answer throws (nothing is applied).
 */
export type ConflictChoice = 'local' | 'hub' | 'reject';

/** `SQLITE_CHANGESET_*` conflict kinds by number. */
export const KINDS: Record<number, ConflictKind> = {
  1: 'data',
  2: 'notfound',
  3: 'conflict',
  4: 'constraint',
  5: 'foreign_key',
};

const OMIT = 0;
const REPLACE = 1;
/** `SQLITE_CHANGESET_ABORT`. */
export const ABORT = 2;

/** Whether two values are the same SQL value (type and content). */
export function sameValue(a: SqlValue | undefined, b: SqlValue | undefined): boolean {
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    if (!(a instanceof Uint8Array && b instanceof Uint8Array) || a.length !== b.length) return false;
    return a.every((v, i) => v === b[i]);
  }
  if (typeof a === 'bigint' || typeof b === 'bigint') {
    return (typeof a === 'bigint' || typeof a === 'number') &&
      (typeof b === 'bigint' || typeof b === 'number')
      ? BigInt(a) === BigInt(b)
      : false;
  }
  return Object.is(a, b) || a === b;
}

/**
 * The default policy, "the change that reaches the hub later wins": `data` → 'local' (the local
 * change's columns overwrite); `notfound` → 'hub' (dropped, reported); `conflict` → 'hub' when the
 * existing row equals the inserted one, else 'reject'; `constraint` and `foreign_key` → 'reject'.
 */
export function defaultChoice(c: Conflict): ConflictChoice {
  switch (c.kind) {
    case 'data':
      return 'local';
    case 'notfound':
      return 'hub';
    case 'conflict': {
      const row = c.new ?? [];
      const same = c.current !== undefined && row.length === c.current.length;
      return same && row.every((v, i) => sameValue(v, c.current![i])) ? 'hub' : 'reject';
    }
    default:
      return 'reject';
  }
}

/** The `SQLITE_CHANGESET_*` answer for `choice`; throws for a choice the kind does not allow. */
export function answerFor(c: Conflict, choice: ConflictChoice): number {
  if (choice === 'reject') return ABORT;
  if (choice === 'hub' && c.kind !== 'foreign_key') return OMIT;
  if (choice === 'local' && (c.kind === 'data' || c.kind === 'conflict')) return REPLACE;
  if (choice === 'local' && c.kind === 'notfound' && c.op === 'delete') return OMIT;
  const allowed = c.kind === 'foreign_key' ? "'reject'" : "'hub' or 'reject'";
  throw new Error(
    `the conflict handler chose '${choice}' for a ${c.kind} conflict (${c.op} of "${c.table}" ${show(c.key)}), ` +
      `which cannot be done: choose ${allowed}`,
  );
}

/** A key or row as short text for messages, e.g. `[1, 'a']`. */
export function show(values: readonly (SqlValue | undefined)[]): string {
  const one = (v: SqlValue | undefined): string => {
    if (v === undefined) return '?';
    if (v === null) return 'NULL';
    if (typeof v === 'string') return `'${v.length > 40 ? `${v.slice(0, 37)}...` : v}'`;
    if (v instanceof Uint8Array)
      return `x'${[...v.subarray(0, 16)].map((n) => n.toString(16).padStart(2, '0')).join('')}'`;
    return String(v);
  };
  return `[${values.map(one).join(', ')}]`;
}

/**
 * The {@link Conflict} for a row change. `rowidKey`: the table has no PRIMARY KEY, so the changeset's
 * first column is its rowid (the key), left out of old/new/current.
 */
export function conflictOf(
  kind: ConflictKind,
  change: RowChange & { current?: SqlValue[] },
  rowidKey: boolean,
): Conflict {
  const keyFrom = (change.op === 'insert' ? change.new : change.old) ?? [];
  const key = change.pk.flatMap((p, i) => (p !== 0 ? [keyFrom[i] ?? null] : []));
  const cut = <T>(values: T[] | undefined): T[] | undefined => (rowidKey ? values?.slice(1) : values);
  const c: Conflict = { kind, table: change.table, op: change.op, key };
  if (change.old !== undefined) c.old = cut(change.old)!;
  if (change.new !== undefined) c.new = cut(change.new)!;
  if (change.current !== undefined) c.current = cut(change.current)!;
  return c;
}

/**
 * Why a conflict rejects the local transaction, in one line. `handlerChose`: the application's conflict
 * handler rejected it; `rowidKey`: the table has no PRIMARY KEY (its rows are keyed by rowid, which
 * devices mint offline like an INTEGER PRIMARY KEY).
 */
export function rejection(
  c: Conflict,
  { handlerChose = false, rowidKey = false }: { handlerChose?: boolean; rowidKey?: boolean } = {},
): string {
  const what = `${c.op} of "${c.table}" ${show(c.key)}`;
  if (handlerChose) return `the conflict handler rejected it at a ${c.kind} conflict: ${what}`;
  switch (c.kind) {
    case 'conflict':
      return (
        `${what}: another row with this key was added meanwhile (two devices made the same key offline${rowidKey ? '; a table without PRIMARY KEY is keyed by rowid' : ''}); ` +
        'use random keys (e.g. UUID text) rather than INTEGER PRIMARY KEY or AUTOINCREMENT for shared tables'
      );
    case 'data':
      return `${what}: the row was changed meanwhile`;
    case 'notfound':
      return `${what}: the row was deleted meanwhile`;
    default:
      return `${what}: ${c.kind} conflict`;
  }
}
