/**
 * What a hub stores, behind one small async interface: the journals of many databases and their write
 * leases. The filesystem implementation is src/hub/fs-storage.ts; a scale-out backend (NATS JetStream)
 * implements the same interface and passes the same conformance suite (test/helpers/storage-conformance.ts).
 */

import { type Position, type SnapshotHeader, sameBytes, samePosition } from '../format/index.js';
import type { DbMode, EncodedSnapshot } from '../protocol/index.js';
import type { CompactOutcome } from './compact-worker.js';
import type { DamageReport } from './heads.js';

/** What the hub holds of one database. */
export interface DbState {
  /** The history's id (16 bytes). */
  journalId: Uint8Array;
  /** The position before the first stored snapshot (0:0 for a history from the start). */
  base: Position;
  /** The position after the last stored snapshot (= base when none). */
  head: Position;
  /** Timestamp (ms) of the head snapshot; 0 when none. */
  headTimestamp: number;
  /** The mode the database was created with (`single` for one created before modes existed). */
  mode: DbMode;
}

/** A write lease as stored. A lease whose `expiresAt` has passed is free; its epoch still counts. */
export interface StoredLease {
  holder: string;
  /** Fencing token: starts at 1, only ever goes up for a database, across restarts. */
  epoch: number;
  /** ms since the epoch. */
  expiresAt: number;
  /** The time-to-live the holder asked for (ms); pushes renew the lease by it. */
  ttlMs?: number;
}

/** The outcome of a conditional append. */
export type AppendResult =
  | { ok: true; state: DbState }
  /**
   * `head_mismatch`: the head is no longer `expectedHead`; `other_history`: another journal id;
   * `other_mode`: the database was created with another mode.
   */
  | { ok: false; reason: 'head_mismatch' | 'other_history' | 'other_mode'; state: DbState }
  /**
   * `does_not_apply`: snapshot `txid`'s patches, applied to the pages it continues, do not give the
   * database checksum it claims (`message` says how); nothing was appended. No state: a new database.
   */
  | { ok: false; reason: 'does_not_apply'; txid: bigint; message: string; state: DbState | undefined };

/** Called after snapshots were appended to a database (and made durable), in append order. */
export type AppendListener = (snapshots: EncodedSnapshot[], state: DbState) => void;

export interface HubStorage {
  /** Names of the databases that exist (have a journal). */
  list(): Promise<string[]>;
  /** The database's state, or undefined when it does not exist. */
  state(db: string): Promise<DbState | undefined>;
  /**
   * Appends `snapshots` (consecutive, validated, the first continuing `expectedHead`) atomically and
   * durably, but only if the database's head is still `expectedHead` and each snapshot's pages, applied
   * to the database's pages at that head, give the database checksum it claims (src/hub/heads.ts). A database that does not exist is
   * created with `journalId`, base `expectedHead` and `mode`, which is stored durably with (or before)
   * its first snapshots, so that no crash leaves the database without it; an existing database of
   * another mode refuses the append (`other_mode`). All or nothing: on any failure nothing is appended.
   * `precondition` (the pusher's lease check) runs in the same per-database order as `casLease`, just
   * before appending; if it throws, nothing is appended and its error is thrown.
   */
  append(
    db: string,
    expectedHead: Position,
    journalId: Uint8Array,
    snapshots: EncodedSnapshot[],
    precondition?: () => Promise<void>,
    mode?: DbMode,
  ): Promise<AppendResult>;
  /**
   * The bytes of the stored snapshots with `after < txid ≤ upTo`, in order, in chunks of bounded size
   * (a chunk may end inside a snapshot). `after` must be ≥ the base txid and `upTo` ≤ the head.
   */
  read(db: string, after: bigint, upTo: bigint): AsyncIterable<Uint8Array>;
  /** The header of the stored snapshot `txid`, or undefined when the database does not hold it. */
  snapshotAt(db: string, txid: bigint): Promise<SnapshotHeader | undefined>;
  /** The database's lease record (possibly expired), or undefined when none was ever taken. */
  getLease(db: string): Promise<StoredLease | undefined>;
  /**
   * Replaces the lease record with `next` only if it is still `expected` (undefined: none ever taken);
   * durable before it resolves. Refuses (throws) a `next` whose epoch is below the current one.
   */
  casLease(db: string, expected: StoredLease | undefined, next: StoredLease): Promise<boolean>;
  /**
   * Calls `listener` after every append to `db` (including, in a multi-hub backend, appends made by
   * other hubs), until the returned function is called.
   */
  subscribe(db: string, listener: AppendListener): () => void;
  /**
   * Optional, for a storage that keeps each database as files: the paths of its live journal and its
   * compacted history (src/history/source.ts joins them; the history file may not exist), for building
   * images by reading them directly. Readers must open the journal before the history: a compaction
   * replaces the history before the journal.
   */
  historyFiles?(db: string): Promise<{ journal: string; history: string } | undefined>;
  /**
   * Optional, for a storage that compacts: the database's compacted history as it keeps it (the bytes
   * of a history file, docs/FORMAT.md, "History": the points its retention policy kept, ending at or
   * after its base), for `GET /v1/db/NAME/history`. What it returns is whole: a compaction meanwhile
   * does not change it (the reader's next read after its end may then answer `reset`). Undefined when
   * it keeps none for the database (nothing compacted yet). Files: DATA/dbs/NAME/history; NATS: the
   * object the database's checkpoint names (src/hub/nats-history.ts).
   */
  history?(db: string): Promise<AsyncIterable<Uint8Array> | undefined>;
  /**
   * Optional, for a storage that drops what comes before its base (NATS after a compaction): the full
   * image of snapshot `txid` (the base) it keeps instead, or undefined when it holds none for that txid.
   */
  checkpoint?(
    db: string,
    txid: bigint,
  ): Promise<{ header: SnapshotHeader; chunks: AsyncIterable<Uint8Array> } | undefined>;
  /**
   * Optional: copies the database's pages at its head (the head file, src/hub/head-file.ts) to the file
   * `out` and returns the head snapshot's header (the image's txid, checksums and time); undefined when
   * the database does not exist. With `check`, the head file is checked against its checksum first.
   */
  copyHead?(db: string, out: string, check?: boolean): Promise<SnapshotHeader | undefined>;
  /** Optional: calls `listener` when the storage finds damage in what it stores (the hub logs it). */
  watchDamage?(listener: (db: string, report: DamageReport) => void): void;
  /** Optional: calls `listener` after each automatic compaction of a database (or its failure), e.g. to log it. */
  watchCompactions?(listener: (db: string, outcome: CompactOutcome | Error, ms: number) => void): void;
  /**
   * Optional: whether the storage answers now (a storage without it always does), with figures for
   * /metrics. The hub asks every second: readiness (/readyz) and the refusal of database requests with
   * `503 storage_unavailable` while it does not.
   */
  health?(): Promise<StorageHealth>;
  /** Finishes in-flight appends and releases files. */
  close(): Promise<void>;
}

/** What `HubStorage.health()` tells. */
export interface StorageHealth {
  ready: boolean;
  /** Why it is not ready (one line). */
  message?: string;
  /** Named figures for /metrics (gauges; names are Prometheus metric names). */
  figures?: Record<string, { help: string; value: number }>;
}

/**
 * The storage cannot be reached (NATS down, no JetStream quorum): the request is answered
 * `503 storage_unavailable`, which clients retry (on another hub when they know several).
 */
export class StorageUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StorageUnavailableError';
  }
}

/**
 * Thrown by `read` when `after` is before the database's base: a compaction moved that range into the
 * compacted history, which is not served as snapshots (the reader resets from a full image).
 */
export class BeforeBaseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BeforeBaseError';
  }
}

export function sameLease(a: StoredLease | undefined, b: StoredLease | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.epoch === b.epoch && a.holder === b.holder && a.expiresAt === b.expiresAt;
}

/**
 * Why an append of mode `mode` from `expectedHead` in history `journalId` cannot continue what a storage
 * holds of the database (`held`; no journal id yet: a new database, which starts at expectedHead), if it
 * cannot. The mode is checked first: its refusal says what the writer must do instead.
 */
export function appendRefusal(
  held: { journalId?: Uint8Array; head: Position; mode: DbMode } | undefined,
  expectedHead: Position,
  journalId: Uint8Array,
  mode: DbMode,
): 'head_mismatch' | 'other_history' | 'other_mode' | undefined {
  if (!held?.journalId) return undefined;
  if (held.mode !== mode) return 'other_mode';
  if (!sameBytes(held.journalId, journalId)) return 'other_history';
  return samePosition(held.head, expectedHead) ? undefined : 'head_mismatch';
}

/** What every backend's `append` requires of its caller: snapshots that continue `expectedHead`. */
export function checkAppend(expectedHead: Position, snapshots: EncodedSnapshot[]): void {
  if (snapshots.length === 0) throw new Error('append: no snapshots');
  const first = snapshots[0]!.header;
  if (first.txid !== expectedHead.txid + 1n || first.preChecksum !== expectedHead.checksum) {
    throw new Error(`append: snapshot ${first.txid} does not continue ${expectedHead.txid}`);
  }
}
