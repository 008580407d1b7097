/** What a writer's `db.sync` offers, and the bookkeeping of its `flush()` calls. Runtime-neutral. */
import type { Lease } from './hub-client.js';

export type SyncState = 'connecting' | 'pushing' | 'synced' | 'offline' | 'error' | 'closed';

/** Where pushing stands. */
export interface SyncStatus {
  state: SyncState;
  /** Last txid committed locally. */
  localTxid: bigint;
  /** Last txid the hub is known to hold; undefined until the hub has been asked. */
  hubTxid: bigint | undefined;
  /** The last error (why the state is 'offline' or 'error'). */
  lastError?: string;
  /** The write lease, as last granted or renewed. */
  lease?: Lease;
}

export type SyncEvents = {
  status: SyncStatus;
  /** The hub's head moved forward by `count` snapshots, to `hubTxid`. */
  pushed: { hubTxid: bigint; count: number };
};

/** What a writer's `db.sync` offers. */
export interface WriterSync {
  status(): SyncStatus;
  on<K extends keyof SyncEvents>(event: K, fn: (arg: SyncEvents[K]) => void): () => void;
  /** Resolves when the hub holds every snapshot committed before the call; rejects on error or timeout. */
  flush(timeoutMs?: number): Promise<void>;
  /** Stops pushing and releases the write lease (best effort). */
  close(): Promise<void>;
}

/** Bytes of the local journal. */
export interface JournalBytes {
  read(offset: number, length: number): Uint8Array;
  close?(): void;
}

/** Pending `flush()` calls: each waits until the hub holds its target txid. */
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

  failAll(e: Error): void {
    for (const w of this.waiters) w.reject(e);
  }
}
