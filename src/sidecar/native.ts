/** better-sqlite3, loaded on first use: the sidecar's two native connections. */
import type BetterSqlite3 from 'better-sqlite3';
import { ReplicateError } from './replicator.js';

export type Native = BetterSqlite3.Database;

/** better-sqlite3, an optional dependency (it needs a prebuilt binary or a compiler to install). */
export let NativeDatabase: typeof BetterSqlite3 | undefined;

export async function loadNative(): Promise<typeof BetterSqlite3> {
  if (NativeDatabase) return NativeDatabase;
  try {
    NativeDatabase = (await import('better-sqlite3')).default;
  } catch (e) {
    throw new ReplicateError(
      `mycelite replicate reads the database through better-sqlite3, which is not installed here (${(e as Error).message.split('\n')[0]}): run \`npm install better-sqlite3\` (an optional dependency of mycelite: it did not install, e.g. without a compiler or a prebuilt binary for this platform)`,
    );
  }
  return NativeDatabase;
}
