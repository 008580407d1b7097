/**
 * The sidecar (`mycelite replicate DB`): follows a database that other processes write with native
 * SQLite in WAL mode and turns every committed transaction into one snapshot of DB's journal
 * (docs/ARCHITECTURE.md, "WAL capture"). Node only.
 *
 * Two native connections (better-sqlite3) keep the WAL's frames from being overwritten before they are
 * copied. `reader` always holds a read transaction: while it does, SQLite never restarts the WAL over
 * frames the sidecar has not read (a restart needs every reader off the WAL, and a reader on the
 * database file alone blocks every checkpoint). The read transaction moves forward only in a **swap**,
 * done while `writer` holds SQLite's write lock (BEGIN IMMEDIATE, nothing written): every committed
 * frame is copied first, then `reader` ends its transaction, runs a PASSIVE checkpoint and begins a new
 * one, then `writer` commits its empty transaction. The database file is written only by SQLite's own
 * checkpoints.
 *
 * The code, in layers (each a class over the one before): sidecar-state.ts (the state, reads of the
 * database), wal-capture.ts (WAL transactions into snapshots), checks.ts (the checks at start and stop),
 * swap.ts (the swap, the yield to a blocking checkpoint), startup.ts (startup and resume), sidecar.ts
 * (the running sidecar). replicator.ts: the public types; native.ts: better-sqlite3.
 */
import * as path from 'node:path';
import { checkHubOptions, startWriterSync } from '../client/writer-start.js';
import { loadHash } from '../format/index.js';
import { nodeRuntime } from '../node/runtime.js';
import { checkDatabase } from './checks.js';
import { loadNative } from './native.js';
import { ReplicateError, type ReplicateOptions, type Replicator } from './replicator.js';
import { Sidecar } from './sidecar.js';

export {
  ReplicateError,
  type ReplicateOptions,
  type Replicator,
  type ReplicatorEvents,
} from './replicator.js';

/** Starts the sidecar on `dbPath`. Resolves once the journal holds every transaction committed so far. */
export async function replicate(dbPath: string, options: ReplicateOptions = {}): Promise<Replicator> {
  await loadHash();
  await loadNative();
  const file = path.resolve(dbPath);
  checkDatabase(file, dbPath);
  if (options.hub) {
    const bad = checkHubOptions(options.hub);
    if (bad) throw new ReplicateError(bad);
  }
  const s = new Sidecar(file, options);
  try {
    s.start();
  } catch (e) {
    s.release();
    throw e;
  }
  if (options.hub) {
    try {
      // One lease holder per history: a sidecar restarted after a crash takes over its own lease.
      const holder = options.hub.holder ?? `replicate-${hex(s.journal.journalId)}`;
      s.pusher = await startWriterSync(nodeRuntime.fs, s.paths.journal, s.journal.end, {
        ...options.hub,
        holder,
      });
    } catch (e) {
      s.release();
      throw e;
    }
  }
  s.watch();
  return s.api();
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}
