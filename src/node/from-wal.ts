/**
 * A database that native SQLite left in WAL mode (bytes 18–19 of its header are 2), opened for writing:
 * Mycelite's engine writes rollback mode only (its WebAssembly build has no shared memory for a WAL
 * index across processes), so open() first has native SQLite (better-sqlite3, an optional dependency)
 * fold the WAL into the file and switch the file to rollback mode — `PRAGMA journal_mode=DELETE`, which
 * changes no data and which SQLite refuses while another connection has the database open. Node only.
 */
import * as fs from 'node:fs';
import type BetterSqlite3 from 'better-sqlite3';
import { journalPaths } from '../journal/paths.js';
import { isWalDatabase } from '../journal/sqlite-header.js';
import { OpenError } from '../writer/errors.js';
import type { OpenWarning } from '../writer/recovery.js';
import { nodeRuntime } from './runtime.js';

/** True when the file's header says WAL mode: the same test as refuseWal's, so what open() would refuse is what is switched. */
function isWalFile(file: string): boolean {
  const fsys = nodeRuntime.fs;
  if (!fsys.exists(file)) return false;
  const f = fsys.open(file, { readonly: true });
  try {
    return f.size() >= 100 && isWalDatabase(f);
  } finally {
    f.close();
  }
}

/**
 * Switches the database at `file` (shown as `shown`) from WAL to rollback mode when it is in WAL mode;
 * returns the warning to report, or undefined when there was nothing to do. Throws an OpenError saying
 * what to do when it cannot: another process has the database open, the sidecar follows it, or
 * better-sqlite3 is not installed.
 */
export async function leaveWal(file: string, shown: string): Promise<OpenWarning | undefined> {
  if (!isWalFile(file)) return undefined;
  if (fs.existsSync(journalPaths(file).wal)) {
    throw new OpenError(
      `cannot open ${shown}: it is a WAL database that \`mycelite replicate\` follows (${journalPaths(file).wal}); keep writing it with the application's own SQLite, or read it with \`mycelite query\``,
    );
  }
  let Native: typeof BetterSqlite3;
  try {
    Native = (await import('better-sqlite3')).default;
  } catch {
    throw new OpenError(
      `cannot open ${shown}: it is in WAL mode, and Mycelite writes rollback mode; it switches the file with native SQLite (better-sqlite3, an optional dependency not installed here): run \`npm install better-sqlite3\`, or switch it yourself with \`sqlite3 ${shown} "PRAGMA journal_mode=DELETE"\``,
    );
  }
  const walPath = `${file}-wal`;
  const walBytes = fs.existsSync(walPath) ? fs.statSync(walPath).size : 0;
  let db: BetterSqlite3.Database | undefined;
  try {
    db = new Native(file, { fileMustExist: true, timeout: 0 });
    const mode = String(db.pragma('journal_mode = DELETE', { simple: true }));
    if (mode !== 'delete') throw new Error(`journal_mode stayed ${mode}`);
  } catch (e) {
    const code = (e as { code?: string }).code ?? '';
    throw new OpenError(
      code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')
        ? `cannot open ${shown}: it is in WAL mode and another process has it open; Mycelite writes rollback mode and switches the file only when no other connection uses it: close the application first, or follow it while it runs with \`mycelite replicate ${shown}\``
        : `cannot open ${shown}: switching it from WAL to rollback mode failed: ${(e as Error).message}`,
    );
  } finally {
    db?.close();
  }
  return {
    code: 'left_wal',
    message: `${shown} was in WAL mode: native SQLite folded its WAL (${walBytes} bytes) into the file and switched it to rollback mode (journal_mode=DELETE), which Mycelite writes; the data is unchanged. An application that sets journal_mode=WAL again switches it back, and Mycelite records what it writes as an outside change`,
  };
}
