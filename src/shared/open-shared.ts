import { HubClient, type HubTarget } from '../client/hub-client.js';
import { timedFetch } from '../client/timed-fetch.js';
import type { Conflict, ConflictChoice } from '../client/writer-sync.js';
import type { FileSystem } from '../files/file-system.js';
import type { JournalWriter } from '../journal/journal-writer.js';
import { DEAD_STREAM_MS } from '../protocol/index.js';
import { applyLocalChange } from './apply.js';
import { ChangeRecorder } from './changes.js';
import { Device, type DeviceParts, type DevicePaths } from './device.js';
import { DeviceSync } from './device-sync.js';
import { PendingQueue } from './pending.js';
import { finishInterruptedRewrite, pairPending, undoInterruptedReapply } from './recover.js';

/** Options of a shared database (`open(path, { shared })`). */
export interface SharedOptions {
  /**
   * Decides a conflict met while a local change is applied again on the hub's newer state; return
   * undefined for the default rule (docs/ARCHITECTURE.md, "Shared databases").
   */
  onConflict?: (conflict: Conflict) => ConflictChoice | undefined;
}

/** Before the writer's recovery: a rebase a crash interrupted is finished (or its re-apply undone). */
export function beforeRecovery(fs: FileSystem, paths: DevicePaths): void {
  if (!undoInterruptedReapply(fs, paths)) finishInterruptedRewrite(fs, paths);
}

/**
 * After the writer's recovery: the device state (created with the journal's head as its base when
 * new), its pending changes paired with the journal's tail.
 */
export function openDeviceState(
  fs: FileSystem,
  paths: DevicePaths,
  dbPath: string,
  journal: JournalWriter,
  marker: { checkedTxid: bigint; holdsWrites: boolean },
): PendingQueue {
  const queue = PendingQueue.open(fs, paths.shared, journal.position);
  try {
    pairPending(fs, paths, dbPath, journal, queue, marker);
    return queue;
  } catch (e) {
    queue.close();
    throw e;
  }
}

/** Once SQLite is open: the device, recording every committed transaction, and its sync if a hub is set. */
export function startDevice(
  o: Pick<
    DeviceParts<Conflict, ConflictChoice>,
    'fs' | 'paths' | 'dbPath' | 'db' | 'capture' | 'journal' | 'queue'
  > & {
    options: SharedOptions;
    hub?: HubTarget & { holder?: string; leaseTtlMs?: number; maxBatch?: number; requestTimeoutMs?: number };
  },
): { device: Device<Conflict, ConflictChoice>; sync: DeviceSync | undefined; close(): Promise<void> } {
  const { db, queue, journal } = o;
  // A database that had content before it was shared (bootstrapped): that content is the device's own
  // base, not a change to merge.
  if (queue.records.length === 0 && journal.position.txid > queue.base.txid)
    queue.rewrite(journal.position, []);
  const changes = new ChangeRecorder(db);
  const device = new Device<Conflict, ConflictChoice>({
    fs: o.fs,
    paths: o.paths,
    dbPath: o.dbPath,
    db,
    capture: o.capture,
    journal,
    queue,
    changes,
    apply: applyLocalChange,
    handler: o.options.onConflict,
  });
  db.setAfterStatement(() => device.afterStatement());
  let sync: DeviceSync | undefined;
  if (o.hub) {
    // Every request has deadlines: one the hub (or the network) never answers must not stop syncing.
    const fetch = timedFetch(
      { answerMs: o.hub.requestTimeoutMs ?? 60_000, silenceMs: DEAD_STREAM_MS },
      o.hub.fetch,
    );
    sync = new DeviceSync({
      client: new HubClient({ ...o.hub, fetch }),
      device,
      holder: o.hub.holder,
      leaseTtlMs: o.hub.leaseTtlMs,
      maxBatch: o.hub.maxBatch,
    });
    sync.start();
  }
  return {
    device,
    sync,
    close: async () => {
      await sync?.close();
      db.setAfterStatement(undefined);
      changes.close();
      queue.close();
    },
  };
}
