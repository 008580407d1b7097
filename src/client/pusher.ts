/**
 * The writer's push side (docs/PROTOCOL.md, "Writer behaviour"): takes the hub's write lease, then pushes
 * every committed snapshot of the local journal as soon as it is noted, in batches, from the hub's head.
 * Offline it retries with backoff while local commits go on; two histories never mix. Runtime-neutral.
 */
import { blockSource, type Position, sameBytes } from '../format/index.js';
import { EMPTY_POSITION, HubError } from '../protocol/index.js';
import { Emitter } from './emitter.js';
import { type HubClient, type Lease, troubleState } from './hub-client.js';
import { describeHubUrls } from './hub-urls.js';
import { type IndexedSnapshot, JournalIndex } from './journal-index.js';
import { fatalFromHub, isTransient, notInHistory, otherMode, SyncError } from './push-errors.js';
import {
  FlushWaiters,
  type JournalBytes,
  type SyncEvents,
  type SyncState,
  type SyncStatus,
  type WriterSync,
} from './writer-sync.js';

export type { JournalBytes, SyncEvents, SyncState, SyncStatus, WriterSync } from './writer-sync.js';

export interface PusherOptions {
  client: HubClient;
  journal: JournalBytes;
  /** Index of the journal's committed snapshots; extend it through `noteSnapshot`. */
  index: JournalIndex;
  /** Largest push body (bytes, default 16 MiB; a larger single snapshot goes alone). */
  maxBatch?: number;
  /** Lease time-to-live asked of the hub (ms, default 30 s). */
  leaseTtlMs?: number;
  /** How long a hub request may take before it counts as a network failure (ms, default 60 s). */
  requestTimeoutMs?: number;
  /** How long `start` waits for the hub before going on offline (ms, default 5 s). */
  startTimeoutMs?: number;
  /** Lease holder id (default: random per Pusher). A browser passes one id per OPFS database, so the
   * tab that takes over a closed tab's database takes over its lease too. */
  holder?: string;
}

const MIN_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 5_000;
/** Head mismatches or stale epochs in a row before giving up (something keeps racing us). */
const MAX_CONFLICTS = 10;

export class Pusher implements WriterSync {
  private readonly emitter = new Emitter<SyncEvents>();
  private readonly holder: string;
  private readonly ttl: number;
  private maxBatch: number;
  private state: SyncState = 'connecting';
  private lastError: string | undefined;
  private fatal: SyncError | undefined;
  /** The hub's head as last known; undefined when it must be read again. */
  private hubHead: Position | undefined;
  private lease: Lease | undefined;
  private leaseAt = 0;
  private stopped = false;
  private readonly stopCtl = new AbortController();
  private wakeup: (() => void) | undefined;
  private wakeOnSnapshot = false;
  private loop: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private readonly waiters = new FlushWaiters();
  private readonly at: string;

  constructor(private readonly options: PusherOptions) {
    this.ttl = options.leaseTtlMs ?? 30_000;
    this.holder = options.holder ?? randomHolder();
    this.maxBatch = options.maxBatch ?? 16 * 1024 * 1024;
    const t = options.client.target;
    this.at = `database ${t.db} on ${describeHubUrls(t.url)}`;
  }

  /** Takes the lease (or goes offline when the hub cannot be reached) and starts pushing. */
  async start(): Promise<void> {
    try {
      await this.acquire(this.options.startTimeoutMs ?? 5_000);
    } catch (e) {
      if (!isTransient(e)) {
        const err = this.toFatal(e);
        this.fail(err);
        this.closeJournal();
        throw err;
      }
      this.update(troubleState(e), describe(e));
    }
    this.loop = this.run();
  }

  status(): SyncStatus {
    const s: SyncStatus = {
      state: this.state,
      localTxid: this.options.index.lastTxid,
      hubTxid: this.hubHead?.txid,
    };
    if (this.lastError !== undefined) s.lastError = this.lastError;
    if (this.lease) s.lease = { ...this.lease };
    return s;
  }

  pending(): number {
    const hub = this.hubHead?.txid ?? this.options.index.base.txid;
    return Number(this.options.index.lastTxid - hub);
  }

  on<K extends keyof SyncEvents>(event: K, fn: (arg: SyncEvents[K]) => void): () => void {
    return this.emitter.on(event, fn);
  }

  /** A snapshot was committed locally: index it and push it. Never throws (it runs inside a commit). */
  noteSnapshot(s: IndexedSnapshot): void {
    try {
      this.options.index.add(s);
    } catch (e) {
      if (!this.fatal) this.fail(new SyncError(`${this.at}: ${describe(e)}`, 'internal', { cause: e }));
      this.wakeup?.();
      return;
    }
    if (this.wakeOnSnapshot) this.wakeup?.();
  }

  /**
   * The local journal was rewritten to start later (a compaction moved its older snapshots into the
   * history file): push from the new file and index from now on. The hub holds everything moved.
   */
  rebase(to: { journal: JournalBytes; index: JournalIndex }): void {
    const old = this.options.journal;
    this.options.journal = to.journal;
    this.options.index = to.index;
    old.close?.();
  }

  flush(timeoutMs?: number): Promise<void> {
    const p = this.waiters.add(this.options.index.lastTxid, timeoutMs, (target) => {
      const s = this.status();
      const why = s.lastError ? `; last error: ${s.lastError}` : '';
      return `flush: after ${timeoutMs} ms the hub holds txid ${s.hubTxid ?? 'unknown'} of ${target} (${this.at}, state ${s.state}${why})`;
    });
    this.settleWaiters();
    return p;
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.stopped = true;
    this.stopCtl.abort();
    this.wakeup?.();
    await this.loop;
    const lease = this.lease;
    this.lease = undefined;
    if (lease && this.fatal?.code !== 'lease_held') {
      const req = this.request(2_000, false);
      try {
        await this.options.client.releaseLease(lease.epoch, req.signal);
      } catch {
        // Best effort: the lease expires on its own.
      } finally {
        req.done();
      }
    }
    this.closeJournal();
    this.update('closed', this.lastError);
  }

  private journalClosed = false;

  private closeJournal(): void {
    if (this.journalClosed) return;
    this.journalClosed = true;
    this.options.journal.close?.();
  }

  private async run(): Promise<void> {
    let backoff = 0;
    let conflicts = 0;
    while (!this.stopped && !this.fatal) {
      try {
        const pushed = await this.step();
        backoff = 0;
        if (pushed) conflicts = 0;
      } catch (e) {
        if (this.stopped) break;
        if (e instanceof HubError && (e.code === 'head_mismatch' || e.code === 'stale_epoch')) {
          if (++conflicts > MAX_CONFLICTS) {
            this.fail(
              new SyncError(`${this.at}: ${e.message} (${MAX_CONFLICTS} times in a row)`, e.code, {
                cause: e,
              }),
            );
            return;
          }
          // Read the head again (it is checked against the local history), or take the lease again.
          if (e.code === 'head_mismatch') this.hubHead = undefined;
          else this.lease = undefined;
          continue;
        }
        if (e instanceof HubError && e.code === 'too_large' && this.lastBatch > 1) {
          // Bodies up to the hub's limit from now on (halve when it does not say).
          const limit = e.body.limit;
          this.maxBatch =
            limit !== undefined && limit < this.maxBatch ? limit : Math.max(1, this.maxBatch >> 1);
          continue;
        }
        if (!isTransient(e)) {
          this.fail(this.toFatal(e));
          return;
        }
        backoff = backoff === 0 ? MIN_BACKOFF_MS : Math.min(backoff * 2, MAX_BACKOFF_MS);
        this.update(troubleState(e), describe(e));
        await this.sleep(backoff, false);
      }
    }
  }

  private lastBatch = 0;

  /** One move: take the lease, read the head, push one batch, renew, or wait. True when it pushed. */
  private async step(): Promise<boolean> {
    if (!this.lease) await this.acquire();
    if (!this.hubHead) await this.readHead();
    if (this.stopped) return false;
    const head = this.hubHead!;
    const index = this.options.index;
    if (head.txid < index.lastTxid) {
      this.update('pushing', undefined);
      await this.pushAfter(head);
      return true;
    }
    this.update('synced', undefined);
    const due = this.leaseAt + this.ttl / 3 - Date.now();
    if (due <= 0) await this.acquire();
    else await this.sleep(due, true);
    return false;
  }

  private async acquire(timeoutMs?: number): Promise<void> {
    const req = this.request(timeoutMs);
    try {
      const lease = await this.options.client.takeLease(this.holder, this.ttl, req.signal);
      // A new epoch: someone may have written in between, so read the head again.
      if (lease.epoch !== this.lease?.epoch) this.hubHead = undefined;
      this.lease = lease;
      this.leaseAt = Date.now();
      this.emitStatus();
    } finally {
      req.done();
    }
  }

  private async readHead(): Promise<void> {
    const req = this.request();
    try {
      const st = await this.options.client.state(req.signal);
      // An index that starts at the head (open() in constant time) is made whole when the hub is behind it.
      if (this.options.index.partial && (!st || st.head.txid < this.options.index.base.txid)) this.indexAll();
      const index = this.options.index;
      if (!st) {
        if (index.base.txid !== 0n) {
          throw new SyncError(
            `${this.at} does not exist, and this journal starts at txid ${index.base.txid}, not from the empty database, so it cannot create it`,
            'not_found',
          );
        }
        this.hubHead = EMPTY_POSITION;
      } else {
        if (st.mode !== 'single') throw otherMode(this.at, st.mode);
        const same = sameBytes(st.journalId, index.journalId);
        if (!same || !index.contains(st.head)) throw notInHistory(st.head, st.journalId, index, this.at);
        this.hubHead = st.head;
      }
      this.emitStatus();
    } finally {
      req.done();
    }
  }

  /** Indexes the whole journal (up to what is committed), in place of an index that starts at a snapshot. */
  private indexAll(): void {
    const { index, journal } = this.options;
    const end = index.end;
    this.options.index = JournalIndex.scan(
      blockSource({ size: () => end, read: (o, n) => journal.read(o, n) }),
      end,
    );
  }

  private async pushAfter(base: Position): Promise<void> {
    const { index, journal, client } = this.options;
    const range = index.rangeAfter(base.txid, this.maxBatch);
    this.lastBatch = range.count;
    const body = journal.read(range.start, range.end - range.start);
    const lease = this.lease!;
    const req = this.request();
    let res: Awaited<ReturnType<HubClient['push']>>;
    try {
      res = await client.push(
        body,
        { journalId: index.journalId, base, epoch: lease.epoch, mode: 'single' },
        req.signal,
      );
    } catch (e) {
      if (e instanceof HubError && e.code === 'too_large' && range.count === 1) {
        throw new SyncError(
          `snapshot ${base.txid + 1n} is ${body.length} bytes, over the hub's limit of ${e.body.limit ?? '?'} bytes (${this.at}): restart the hub with a larger --max-body`,
          'too_large',
          { cause: e },
        );
      }
      throw e;
    } finally {
      req.done();
    }
    // A push renews the lease.
    this.leaseAt = Date.now();
    this.lease = { epoch: lease.epoch, expiresAt: new Date(this.leaseAt + this.ttl) };
    if (!index.contains(res.head)) throw notInHistory(res.head, index.journalId, index, this.at);
    const count = Number(res.head.txid - base.txid);
    this.hubHead = res.head;
    if (res.head.txid >= index.lastTxid) this.state = 'synced';
    this.emitStatus();
    if (count > 0) this.emitter.emit('pushed', { hubTxid: res.head.txid, count });
  }

  private toFatal(e: unknown): SyncError {
    if (e instanceof SyncError) return e;
    if (e instanceof HubError) return fatalFromHub(e, this.options.client.target);
    return new SyncError(`${this.at}: ${describe(e)}`, 'internal', { cause: e });
  }

  private fail(e: SyncError): void {
    this.fatal = e;
    this.update('error', e.message);
    const lease = this.lease;
    if (lease && e.code !== 'lease_held' && e.code !== 'stale_epoch') {
      this.lease = undefined;
      void this.options.client.releaseLease(lease.epoch).catch(() => {});
    }
  }

  private update(state: SyncState, lastError: string | undefined): void {
    const changed = state !== this.state || (lastError !== undefined && lastError !== this.lastError);
    this.state = state;
    if (lastError !== undefined) this.lastError = lastError;
    // Once it works again, the error that stopped it is history.
    else if (state === 'synced' || state === 'pushing') this.lastError = undefined;
    if (changed) this.emitStatus();
  }

  private emitStatus(): void {
    this.settleWaiters();
    this.emitter.emit('status', this.status());
  }

  private settleWaiters(): void {
    if (this.hubHead) this.waiters.reached(this.hubHead.txid);
    if (this.state === 'error')
      this.waiters.failAll(this.fatal ?? new Error(`pushing to ${this.at} stopped`));
    else if (this.state === 'closed')
      this.waiters.failAll(new Error(`flush: pushing to ${this.at} was closed`));
  }

  /** Waits `ms`, or less when stopped (or, if `wakeable`, when a snapshot is noted). */
  private sleep(ms: number, wakeable: boolean): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        this.wakeup = undefined;
        this.wakeOnSnapshot = false;
        resolve();
      };
      const t = setTimeout(done, ms);
      unref(t);
      this.wakeup = done;
      this.wakeOnSnapshot = wakeable;
    });
  }

  /** An abort signal for one request: fires on timeout (a network failure) or when the pusher stops. */
  private request(timeoutMs = this.options.requestTimeoutMs ?? 60_000, stoppable = true) {
    const ctl = new AbortController();
    const t = setTimeout(
      () => ctl.abort(new DOMException(`the hub did not answer within ${timeoutMs} ms`, 'TimeoutError')),
      timeoutMs,
    );
    const onStop = (): void => ctl.abort(new DOMException('closed', 'AbortError'));
    if (stoppable) this.stopCtl.signal.addEventListener('abort', onStop);
    return {
      signal: ctl.signal,
      done: () => {
        clearTimeout(t);
        this.stopCtl.signal.removeEventListener('abort', onStop);
      },
    };
  }
}

/** An error in one line; a hub's failed answer (5xx) says so, so it is not taken for one that cannot be reached. */
function describe(e: unknown): string {
  if (e instanceof HubError && e.status >= 500 && !e.message.includes('the hub failed')) {
    return `the hub failed (HTTP ${e.status} ${e.code}): ${e.message}`;
  }
  return e instanceof Error ? e.message : String(e);
}

function randomHolder(): string {
  const b = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

function unref(t: unknown): void {
  (t as { unref?: () => void }).unref?.();
}
