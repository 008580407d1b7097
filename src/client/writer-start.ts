/**
 * Starting a writer's sync: check the hub options, index the journal, take the lease. What `open(path,
 * {hub})` calls once the database is recovered. Runtime-neutral (files through the storage interface).
 */

import { type FileSystem, readAt } from '../files/file-system.js';
import type { Position } from '../format/index.js';
import { fileSource } from '../journal/file-source.js';
import { checkDbName } from '../protocol/index.js';
import { HubClient, type HubTarget } from './hub-client.js';
import { describeHubUrls, parseHubUrls } from './hub-urls.js';
import { JournalIndex } from './journal-index.js';
import { type JournalBytes, Pusher } from './pusher.js';

/** Which hub database to push to, and how. */
export interface HubOptions extends HubTarget {
  /** Largest push body (bytes, default 16 MiB). */
  maxBatch?: number;
  /** Write lease time-to-live asked of the hub (ms, default 30 s). */
  leaseTtlMs?: number;
  /** How long open() waits for the hub before going on offline (ms, default 5 s). */
  connectTimeoutMs?: number;
  /** Lease holder id (default random; see PusherOptions.holder). */
  holder?: string;
  /**
   * How long the hub may take to answer a request (ms, default 60 s); after it, and after a read stream
   * went silent for 30 s, the request counts as a network failure and is retried.
   */
  requestTimeoutMs?: number;
}

/** Why `hub` cannot be used, or undefined when it looks right. */
export function checkHubOptions(hub: HubOptions, role: 'writer' | 'reader' = 'writer'): string | undefined {
  try {
    parseHubUrls(hub.url);
  } catch (e) {
    return (e as Error).message;
  }
  const at = describeHubUrls(hub.url);
  const bad = checkDbName(hub.db);
  if (bad) return `hub ${at}: ${bad}`;
  if (!hub.token)
    return `hub ${at}: no token (a ${role} token: mycelite token --db ${hub.db} --role ${role})`;
  return undefined;
}

/**
 * Opens the journal at `journalPath` for pushing and indexes its first `end` bytes: with `from` (the
 * journal's head snapshot, typically), only what follows it; the pusher indexes the rest if the hub turns
 * out to be behind it.
 */
export function reopenJournal(
  fs: FileSystem,
  journalPath: string,
  end: number,
  from?: { offset: number } & Position,
): { journal: JournalBytes; index: JournalIndex } {
  const file = fs.open(journalPath, { readonly: true });
  try {
    const index = JournalIndex.scan(fileSource(file), end, from);
    return {
      journal: { read: (offset, length) => readAt(file, offset, length), close: () => file.close() },
      index,
    };
  } catch (e) {
    file.close();
    throw e;
  }
}

/**
 * Indexes the journal at `journalPath` (its first `end` bytes: the committed snapshots) and starts
 * pushing it. Throws SyncError when the hub refuses this writer (lease held, token refused); an
 * unreachable hub is not an error (the pusher starts offline).
 */
export async function startWriterSync(
  fs: FileSystem,
  journalPath: string,
  end: number,
  hub: HubOptions,
  from?: { offset: number } & Position,
): Promise<Pusher> {
  const { journal, index } = reopenJournal(fs, journalPath, end, from);
  const pusher = new Pusher({
    client: new HubClient(hub),
    journal,
    index,
    maxBatch: hub.maxBatch,
    leaseTtlMs: hub.leaseTtlMs,
    startTimeoutMs: hub.connectTimeoutMs,
    holder: hub.holder,
    requestTimeoutMs: hub.requestTimeoutMs,
  });
  await pusher.start();
  return pusher;
}
