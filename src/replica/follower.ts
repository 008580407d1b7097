/**
 * Following a hub: read the snapshots after the replica's position (or a full image, for a new
 * replica or a reset) and apply each as it arrives, reconnecting after network drops and dead streams
 * (docs/PROTOCOL.md, "Replica behaviour"). Runtime-neutral.
 */

import { Emitter } from '../client/emitter.js';
import { HubClient, type HubTarget, troubleState } from '../client/hub-client.js';
import { isTransient } from '../client/push-errors.js';
import {
  type FileHeader,
  JournalFormatError,
  type Position,
  type SnapshotInfo,
  sameBytes,
  samePosition,
  toHex,
} from '../format/index.js';
import { DEAD_STREAM_MS, type EncodedSnapshot, HubError, StreamParser } from '../protocol/index.js';
import { ChecksumMismatchError } from './apply.js';
import { BATCH_BYTES, batchCost } from './batch.js';
import type { ReplicaReset, ReplicaStore } from './replica.js';

/**
 * `offline`: the hub cannot be reached; `storage-unavailable`: the hub answers but its storage does not
 * (NATS down), so nothing flows.
 */
export type ReplicaState =
  | 'connecting'
  | 'catching-up'
  | 'live'
  | 'offline'
  | 'storage-unavailable'
  | 'error'
  | 'closed';

export interface ReplicaStatus {
  state: ReplicaState;
  /** The replica's txid (0 before its first snapshot). */
  txid: bigint;
  /** The hub's head txid, as last seen. */
  hubTxid?: bigint;
  lastError?: string;
  lastSnapshotAt?: Date;
}

/** An applied snapshot, with how long after its commit it was applied. */
export interface AppliedSnapshot extends SnapshotInfo {
  lagMs: number;
}

export interface ReplicaEvents {
  [event: string]: unknown;
  snapshot: AppliedSnapshot;
  status: ReplicaStatus;
  /**
   * The replica started a history from the hub's image: a new replica, a reset within its history (its
   * position is no longer on the hub), or another history adopted with the `reset` option. The old
   * history is kept at `keptAt` (see ReplicaReset).
   */
  reset: ReplicaReset;
}

export interface FollowOptions {
  hub: HubTarget;
  /** No byte for this long: the connection is dead, reconnect (ms; default 30 s). */
  deadStreamMs?: number;
  /**
   * How long the hub may take to answer a state request or a read from the replica's position before it
   * counts as down (the next connection goes to the next hub of the list) (ms; default 10 s).
   */
  answerMs?: number;
  /** Reconnect backoff: first and longest wait (ms; default 100 and 5000). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Wait before asking again for a database the hub does not have yet (ms; default 1000). */
  notFoundRetryMs?: number;
  /**
   * Adopt the history the hub holds when the replica connects, even when it is another one than the
   * replica's (another journal id: the hub's database was replaced or recreated). The replica then starts
   * from the hub's image and keeps its old database and journal aside (event `reset`, `keptAt`). Without
   * it such a hub is refused (OtherHistoryError, state `error`), and so is any later change of history.
   */
  reset?: boolean;
  /**
   * A replica more than this many snapshots behind the hub's head takes the hub's image (of the head)
   * instead of the snapshots after its position, like a reset within its history: its old journal is
   * kept aside (event `reset`, `keptAt`). Default: the larger of 10,000 and 4 × the database's pages
   * (each snapshot writes one page or more, so past that replaying costs more than the image). `false`:
   * always replay.
   */
  imageBehind?: number | false;
}

/** Default of FollowOptions.imageBehind: the floor, and the multiple of the database's pages. */
export const IMAGE_BEHIND_MIN = 10_000;
export const IMAGE_BEHIND_PAGES = 4;

/** How many snapshots behind a replica of `dbPages` pages takes the image (undefined: never). */
export function imageBehindLimit(option: number | false | undefined, dbPages: number): bigint | undefined {
  if (option === false) return undefined;
  return BigInt(option ?? Math.max(IMAGE_BEHIND_MIN, IMAGE_BEHIND_PAGES * dbPages));
}

/**
 * The hub holds another history of the database (another journal id) than the one the replica follows:
 * the replica was left as it is. Opening it with `reset: true` (`mycelite follow --reset`) adopts it.
 */
export class OtherHistoryError extends Error {
  constructor(
    readonly hub: { journalId: Uint8Array; txid: bigint },
    readonly replica: { journalId: Uint8Array; txid: bigint },
    db: string,
  ) {
    super(
      `the hub holds another history of ${db} (journal ${toHex(hub.journalId).slice(0, 8)}…, head txid ${hub.txid}) ` +
        `than this replica (journal ${toHex(replica.journalId).slice(0, 8)}…, txid ${replica.txid}): its ` +
        'database was replaced or recreated. The replica was left as it is; to follow the new history, ' +
        'open it with { reset: true } (mycelite follow --reset), which keeps its database and journal aside',
    );
    this.name = 'OtherHistoryError';
  }
}

const yes = (): boolean => true;
const defer: (f: () => void) => void =
  (globalThis as { setImmediate?: (f: () => void) => void }).setImmediate ?? ((f) => setTimeout(f, 0));
/** Resolves after the I/O already due has been handled (a macrotask). */
const soon = (): Promise<void> => new Promise((r) => defer(r));

/** Default of FollowOptions.answerMs. */
const ANSWER_MS = 10_000;

/** Errors that waiting will not fix: the follower stops. */
const FATAL = new Set(['unauthorized', 'forbidden', 'bad_name', 'bad_request']);

class DeadStreamError extends Error {
  constructor(ms: number) {
    super(`no byte from the hub for ${ms} ms: reconnecting`);
    this.name = 'DeadStreamError';
  }
}

/** Keeps one replica in step with its hub. */
export class Follower {
  readonly events = new Emitter<ReplicaEvents>();
  private readonly client: HubClient;
  private current: ReplicaStatus;
  private abort: AbortController | undefined;
  private running: Promise<void> | undefined;
  private closed = false;
  private wantReset = false;
  /** The `reset` option, until the replica has accepted the hub's history once. */
  private mayAdopt: boolean;
  private readyWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private isReady = false;
  private fatal: Error | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly store: ReplicaStore,
    private readonly options: FollowOptions,
  ) {
    this.client = new HubClient(options.hub);
    this.mayAdopt = options.reset ?? false;
    this.current = { state: 'connecting', txid: store.position?.txid ?? 0n };
  }

  status(): ReplicaStatus {
    return { ...this.current };
  }

  position(): Position | undefined {
    return this.store.position;
  }

  /** The error that stopped the follower (state `error`), if it stopped. */
  get failure(): Error | undefined {
    return this.fatal;
  }

  /** Starts following live in the background. */
  start(): void {
    this.running ??= this.loop(true).catch((e) => this.stop(e as Error));
  }

  /** Catches up to the hub's head once (no live stream); resolves with the txid reached. */
  async catchUp(): Promise<bigint> {
    // A hub that fails is tried no more: the next connection goes to the next hub of the list.
    let hubsLeft = this.client.hubs - 1;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.connect(false);
        return this.store.position?.txid ?? 0n;
      } catch (e) {
        if (isTransient(e) && hubsLeft-- > 0) continue;
        if (!this.isResetError(e) || attempt > 2) throw e;
        this.wantReset = true;
      }
    }
  }

  /** Resolves once the replica has caught up with the hub's head for the first time. */
  ready(): Promise<void> {
    if (this.isReady) return Promise.resolve();
    if (this.fatal) return Promise.reject(this.fatal);
    if (this.closed) return Promise.reject(new Error('the replica is closed'));
    return new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
  }

  /** Resolves once the replica has applied `txid` (rejects after `timeoutMs`, or when it stops). */
  waitFor(txid: bigint, timeoutMs = 30_000): Promise<void> {
    if ((this.store.position?.txid ?? 0n) >= txid) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = (e?: Error): void => {
        clearTimeout(timer);
        offSnap();
        offStatus();
        if (e) reject(e);
        else resolve();
      };
      const timer = setTimeout(
        () =>
          done(
            new Error(
              `replica did not reach txid ${txid} within ${timeoutMs} ms (it is at ${this.current.txid})`,
            ),
          ),
        timeoutMs,
      );
      const offSnap = this.events.on('snapshot', (s) => {
        if (s.txid >= txid) done();
      });
      const offStatus = this.events.on('status', (s) => {
        if (s.state === 'error' || s.state === 'closed')
          done(new Error(`replica stopped (${s.state}): ${s.lastError ?? ''}`));
      });
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.store.interrupt();
    this.abort?.abort();
    this.wake?.();
    await this.running;
    this.setStatus({ state: 'closed' });
    for (const w of this.readyWaiters.splice(0)) w.reject(new Error('the replica was closed'));
  }

  private async loop(follow: boolean): Promise<void> {
    const min = this.options.minBackoffMs ?? 100;
    const max = this.options.maxBackoffMs ?? 5000;
    let backoff = min;
    while (!this.closed) {
      try {
        await this.connect(follow, () => {
          backoff = min;
        });
        // The hub ended the stream (it is shutting down): reconnect.
        this.setStatus({ state: 'offline', lastError: 'the hub closed the stream' });
      } catch (e) {
        if (this.closed) return;
        const err = e as Error;
        if (this.isResetError(e)) {
          this.wantReset = true;
          continue;
        }
        if ((err instanceof HubError && FATAL.has(err.code)) || err instanceof OtherHistoryError) throw err;
        if (err instanceof HubError && err.code === 'not_found') {
          this.setStatus({ state: 'connecting', lastError: err.message });
          await this.pause(this.options.notFoundRetryMs ?? 1000);
          continue;
        }
        this.setStatus({ state: troubleState(err), lastError: err.message });
      }
      await this.pause(backoff);
      backoff = Math.min(max, backoff * 2);
    }
  }

  private isResetError(e: unknown): boolean {
    if (e instanceof ChecksumMismatchError) return true;
    return e instanceof HubError && (e.code === 'reset' || e.code === 'other_history');
  }

  /** One connection: read, apply every snapshot, until the stream ends (or fails). */
  private async connect(follow: boolean, onData?: () => void): Promise<void> {
    const abort = new AbortController();
    this.abort = abort;
    if (this.closed) return;
    // An apply that failed half-way (readers kept the database busy, an I/O error) is finished first.
    if (this.store.dirty) await this.store.recover();
    const finished = this.store.takeFinishedReset();
    if (finished) this.events.emit('reset', finished);
    this.setStatus({ state: this.current.state === 'live' ? 'connecting' : this.current.state });
    // A hub that takes the connection and never answers is down too (a full image may take long: no limit).
    const answerMs = this.options.answerMs ?? ANSWER_MS;
    const answer = setTimeout(
      () => abort.abort(new DOMException(`the hub did not answer within ${answerMs} ms`, 'TimeoutError')),
      answerMs,
    );
    let state: Awaited<ReturnType<HubClient['state']>>;
    try {
      state = await this.client.state(abort.signal);
    } finally {
      clearTimeout(answer);
    }
    if (!state) {
      throw new HubError({
        error: 'not_found',
        message: `the hub has no database ${this.options.hub.db} yet`,
      });
    }
    this.noteHub(state.head.txid);
    const pos = this.store.position;
    const other = this.otherHistory(state.journalId, state.head.txid);
    // Far behind the head, the image is cheaper than the snapshots since (the history stays on the hub).
    const limit = pos && !other ? imageBehindLimit(this.options.imageBehind, this.store.dbPages) : undefined;
    const far = limit !== undefined && state.head.txid - pos!.txid > limit;
    // A reset is asked for once: if its image fails, the next connection asks from the position again.
    const image = this.wantReset || !pos || other || far;
    this.wantReset = false;
    const answerRead = image
      ? undefined
      : setTimeout(
          () => abort.abort(new DOMException(`the hub did not answer within ${answerMs} ms`, 'TimeoutError')),
          answerMs,
        );
    let body: ReadableStream<Uint8Array>;
    try {
      body = await this.client.read(
        image
          ? { follow, signal: abort.signal }
          : { after: pos, journalId: this.store.journalId, follow, signal: abort.signal },
      );
    } finally {
      clearTimeout(answerRead);
    }
    this.setStatus({ state: 'catching-up', lastError: undefined });
    this.checkCaughtUp();
    const parser = new StreamParser({ stream: true, keepInflated: true });
    const reader = body.getReader();
    const deadMs = this.options.deadStreamMs ?? DEAD_STREAM_MS;
    let dead = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        dead = true;
        abort.abort();
      }, deadMs);
    };
    let header: FileHeader | undefined;
    let first = image;
    // Snapshots received and not applied yet: applied together when no more data is waiting, or when
    // they reach the memory bound (catching up, or a burst, costs one apply per batch).
    let batch: EncodedSnapshot[] = [];
    let batchBytes = 0;
    const applyBatch = async (): Promise<void> => {
      if (batch.length === 0) return;
      const items = batch;
      batch = [];
      batchBytes = 0;
      const infos = await this.store.appendBatch(items);
      onData?.();
      this.applied(infos);
    };
    const read = (): Promise<ReadableStreamReadResult<Uint8Array>> =>
      reader.read().catch((e) => {
        throw dead ? new DeadStreamError(deadMs) : e;
      });
    try {
      arm();
      for (;;) {
        const next = read();
        // Behind the hub's head (catching up), more is on its way: the batch waits for it. Otherwise
        // data already received comes first, and if none came by the next turn, the batch is applied.
        const behind =
          batch.length > 0 && batch[batch.length - 1]!.header.txid < (this.current.hubTxid ?? 0n);
        if (batch.length > 0 && !behind) {
          // Handled below, or dropped when the apply fails (the stream is released then).
          next.catch(() => {});
          const waiting = await Promise.race([next.then(yes, yes), soon().then(() => false)]);
          if (!waiting) await applyBatch();
        }
        const chunk = await next;
        if (chunk.done) break;
        arm();
        for (const item of parser.push(chunk.value)) {
          if (item.kind === 'beat') continue;
          if (item.kind === 'header') {
            header = item.header;
            if (image) this.otherHistory(header.journalId, header.baseTxid + 1n);
            else {
              this.checkHeader(header, pos!);
              this.mayAdopt = false;
            }
            continue;
          }
          if (this.closed) return;
          const h = item.header;
          if (first) {
            const { snapshot, reset } = await this.store.reset(header!, item.bytes, h);
            first = false;
            this.mayAdopt = false;
            this.events.emit('reset', reset);
            onData?.();
            this.applied([snapshot]);
            continue;
          }
          const cost = batchCost({ bytes: item.bytes, header: h });
          if (batch.length > 0 && batchBytes + cost > BATCH_BYTES) await applyBatch();
          batch.push({ bytes: item.bytes, header: h, raw: item.raw });
          batchBytes += cost;
        }
      }
      parser.end();
      if (this.closed) return;
      await applyBatch();
      if (image && first) throw new JournalFormatError('the hub sent no image', 0);
    } finally {
      clearTimeout(timer);
      reader.releaseLock();
      if (!dead) abort.abort();
    }
  }

  /** Reports applied snapshots: status, and one `snapshot` event each. */
  private applied(infos: readonly SnapshotInfo[]): void {
    const now = Date.now();
    for (const s of infos) {
      this.noteHub(s.txid);
      this.current = { ...this.current, txid: s.txid, lastSnapshotAt: new Date(now) };
      this.events.emit('snapshot', { ...s, lagMs: Math.max(0, now - s.timestamp) });
    }
    this.checkCaughtUp();
  }

  /**
   * True when the hub's history `journalId` (at `txid`) is another one than the replica's and the user
   * allowed adopting it; throws OtherHistoryError when they did not. False for the same history, and
   * for a replica without one yet.
   */
  private otherHistory(journalId: Uint8Array, txid: bigint): boolean {
    const ours = this.store.journalId;
    const pos = this.store.position;
    if (!ours || !pos || sameBytes(ours, journalId)) return false;
    if (this.mayAdopt) return true;
    throw new OtherHistoryError(
      { journalId, txid },
      { journalId: ours, txid: pos.txid },
      this.options.hub.db,
    );
  }

  /** The stream must continue our own history from our exact position. */
  private checkHeader(h: FileHeader, pos: Position): void {
    if (
      !sameBytes(h.journalId, this.store.journalId!) ||
      !samePosition({ txid: h.baseTxid, checksum: h.baseChecksum }, pos)
    ) {
      throw new HubError({
        error: 'reset',
        message: `the hub's stream starts at ${h.baseTxid} of another history than the replica's ${pos.txid}`,
      });
    }
  }

  private noteHub(txid: bigint): void {
    if (this.current.hubTxid === undefined || txid > this.current.hubTxid) this.current.hubTxid = txid;
  }

  private checkCaughtUp(): void {
    const txid = this.store.position?.txid ?? 0n;
    this.current.txid = txid;
    if (this.store.position && txid >= (this.current.hubTxid ?? 0n)) {
      if (this.current.state !== 'live') this.setStatus({ state: 'live' });
      if (!this.isReady) {
        this.isReady = true;
        for (const w of this.readyWaiters.splice(0)) w.resolve();
      }
    }
  }

  private setStatus(change: Partial<ReplicaStatus>): void {
    const next = { ...this.current, ...change, txid: this.store.position?.txid ?? 0n };
    if ('lastError' in change && change.lastError === undefined) delete next.lastError;
    const changed = next.state !== this.current.state || next.lastError !== this.current.lastError;
    this.current = next;
    if (changed) this.events.emit('status', this.status());
  }

  private stop(e: Error): void {
    this.fatal = e;
    this.setStatus({ state: 'error', lastError: e.message });
    for (const w of this.readyWaiters.splice(0)) w.reject(e);
  }

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done(): void {
        clearTimeout(t);
        resolve();
      }
      this.wake = done;
    });
  }
}
