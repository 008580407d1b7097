/**
 * Time-travel views for Node.js.
 *
 * @example
 * ```ts
 * import { openAt } from 'mycelite';
 * const then = await openAt('app.db', new Date('2026-11-27T09:00:00Z')); // or a txid: 1234n
 * console.log(then.prepare('select count(*) from t').pluck().get());
 * then.close();
 * ```
 */
import type { Database } from '../engine/database.js';
import { openView, type ViewTarget } from '../timetravel/view.js';
import { nodeRuntime } from './runtime.js';

/**
 * Opens a read-only view of the database at `file` as it was at txid `at`, or at the last snapshot at or
 * before the Date `at`, read from its journal without writing a restored file. Throws ViewRangeError
 * naming the restorable range when the journal holds no such point.
 */
export function openAt(file: string, at: ViewTarget): Promise<Database> {
  return openView(nodeRuntime, file, at);
}
