/** The sidecar's public face: its options, events, the `Replicator` it returns, its error. */

import type { Pusher } from '../client/pusher.js';
import type { HubOptions } from '../client/writer-start.js';
import type { SnapshotInfo } from '../format/index.js';

export interface ReplicateOptions {
  /** Push every snapshot to this hub database as well. */
  hub?: HubOptions;
  /** How often to look at the WAL besides file-change events (ms, default 50). */
  pollMs?: number;
  /** Swap (and checkpoint) once this many frames were copied since the last one (default 1000). */
  checkpointFrames?: number;
  /** Swap at least this often while frames come in (ms, default 1000). */
  checkpointMs?: number;
  /** While transactions keep coming, wait this long before looking again (ms, default 2; one fsync for more). */
  coalesceMs?: number;
  /** How long startup waits for SQLite's write lock (ms, default 30 s). */
  startTimeoutMs?: number;
  /** Messages for the user (default: none). */
  onMessage?: (line: string) => void;
}

export type ReplicatorEvents = {
  /** A snapshot is durable in the journal (fsynced). */
  snapshot: SnapshotInfo;
  /** The sidecar stopped because of this error (close() was not called). */
  error: Error;
};

export interface Replicator {
  readonly dbPath: string;
  readonly journalPath: string;
  /** The journal's head. */
  position(): { txid: bigint; checksum: bigint };
  /** Committed WAL frames not yet in the journal (the capture lag, in frames; 0 when caught up). */
  pendingFrames(): number;
  /** The hub push, when `hub` was given. */
  readonly sync: Pusher | undefined;
  on<K extends keyof ReplicatorEvents>(event: K, fn: (arg: ReplicatorEvents[K]) => void): () => void;
  /** Copies every transaction committed so far (taking SQLite's write lock for a moment). */
  catchUp(): Promise<void>;
  /** Copies what is committed, stops, releases everything (the hub lease in the background). */
  close(): Promise<void>;
}

/** Errors the user can act on (bad input, refused start): one line, exit 1. */
export class ReplicateError extends Error {
  override name = 'ReplicateError';
}
