/** What a writer's `db.sync` offers, and the bookkeeping of its `flush()` calls. Runtime-neutral. */
import type { Lease } from './hub-client.js';

/**
 * `offline`: the hub cannot be reached; `storage-unavailable`: the hub answers but its storage does not
 * (NATS down), so nothing can be pushed through it.
 */
export type SyncState =
  | 'connecting'
  | 'pushing'
  | 'synced'
  | 'offline'
  | 'storage-unavailable'
  | 'error'
  | 'closed';

/** Where pushing stands. */
export interface SyncStatus {
  state: SyncState;
  /** Last txid committed locally. */
  localTxid: bigint;
  /** Last txid the hub is known to hold; undefined until the hub has been asked. */
  hubTxid: bigint | undefined;
  /** The last error (why the state is 'offline', 'storage-unavailable' or 'error'). */
  lastError?: string;
  /** The write lease, as last granted or renewed. */
  lease?: Lease;
  /** Shared databases: local changes not in the hub's history yet. */
  pending?: number;
}

export type SyncEvents = {
  status: SyncStatus;
  /** The hub's head moved forward by `count` snapshots, to `hubTxid`. */
  pushed: { hubTxid: bigint; count: number };
  /**
   * Shared databases: other devices' snapshots were taken in (the database changed under the app):
   * `count` of them, `reapplied` pending local changes applied again on top (a rebase), in `ms`.
   */
  received: { hubTxid: bigint; count: number; reapplied: number; ms: number };
  /** Shared databases: a local change met another device's when applied again (and what was chosen). */
  conflict: ConflictEvent;
  /** Shared databases: a local change was rejected as a whole (nothing of it stays). */
  rejected: { seq: bigint; reason: string };
};

/** What a conflict is about (shared databases, src/shared/apply.ts). */
export type ConflictKind = 'data' | 'notfound' | 'conflict' | 'constraint' | 'foreign_key';

/** A conflict met while a local change is applied again on the hub's newer state. */
export interface Conflict {
  kind: ConflictKind;
  table: string;
  op: 'insert' | 'update' | 'delete';
  /** The row's primary key values. */
  key: unknown[];
  /** The local change's old and new values (undefined where the operation has none, or unchanged). */
  old?: unknown[];
  new?: unknown[];
  /** The row as it is in the database now, for 'data' and 'conflict'. */
  current?: unknown[];
}

/** 'local': the local change wins; 'hub': the row stays as it is (the local change is dropped); 'reject': the whole local transaction is rejected. */
export type ConflictChoice = 'local' | 'hub' | 'reject';

/** A conflict and its outcome, for the local change `seq` (the device's sequence number). */
export interface ConflictEvent {
  seq: bigint;
  conflict: Conflict;
  choice: ConflictChoice;
}

/** What a writer's `db.sync` offers. */
export interface WriterSync {
  status(): SyncStatus;
  on<K extends keyof SyncEvents>(event: K, fn: (arg: SyncEvents[K]) => void): () => void;
  /** Resolves when the hub holds every snapshot committed before the call; rejects on error or timeout. */
  flush(timeoutMs?: number): Promise<void>;
  /** Stops pushing and releases the write lease (best effort). */
  close(): Promise<void>;
  /** Local transactions not in the hub's history yet. */
  pending(): number;
}

/** Bytes of the local journal. */
export interface JournalBytes {
  read(offset: number, length: number): Uint8Array;
  close?(): void;
}

/**
 * Pending `flush()` calls: each waits until the hub holds its target (a txid; for a shared device, the
 * sequence number of its last pending record).
 */
export class FlushWaiters {
  private readonly waiters = new Set<{ target: bigint; resolve(): void; reject(e: Error): void }>();

  /** A promise settled by `reached` (target reached), `failAll`, or after `timeoutMs` (message from `why`). */
  add(target: bigint, timeoutMs: number | undefined, why: (target: bigint) => string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const w = {
        target,
        resolve: () => {
          clearTimeout(timer);
          this.waiters.delete(w);
          resolve();
        },
        reject: (e: Error) => {
          clearTimeout(timer);
          this.waiters.delete(w);
          reject(e);
        },
      };
      this.waiters.add(w);
      if (timeoutMs !== undefined) timer = setTimeout(() => w.reject(new Error(why(target))), timeoutMs);
    });
  }

  /** The hub holds everything up to `txid`. */
  reached(txid: bigint): void {
    for (const w of this.waiters) if (txid >= w.target) w.resolve();
  }

  resolveAll(): void {
    for (const w of this.waiters) w.resolve();
  }

  failAll(e: Error): void {
    for (const w of this.waiters) w.reject(e);
  }
}
