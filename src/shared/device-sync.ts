/**
 * The network side of a shared database's device (docs/ARCHITECTURE.md, "Shared databases"): follows the
 * hub live while nothing is pending, and when local changes are pending takes the write lease, brings the
 * hub's new snapshots in (a rebase, src/shared/device.ts), pushes the local ones and releases the lease
 * at once. Offline it waits with backoff while local commits go on. Runtime-neutral.
 */

import { Emitter } from '../client/emitter.js';
import { type HubClient, type Lease, troubleState } from '../client/hub-client.js';
import { describeHubUrls } from '../client/hub-urls.js';
import { fatalFromHub, isTransient, SyncError } from '../client/push-errors.js';
import type {
  Conflict,
  ConflictChoice,
  SyncEvents,
  SyncState,
  SyncStatus,
  WriterSync,
} from '../client/writer-sync.js';
import { FlushWaiters } from '../client/writer-sync.js';
import { type Position, sameBytes } from '../format/index.js';
import { type DbMode, HubError, otherModeAdvice, StreamParser, toJsonPosition } from '../protocol/index.js';
import { type Device, DeviceBusyError, type IncomingSnapshot, type RebaseReport } from './device.js';

export interface DeviceSyncOptions {
  client: HubClient;
  device: Device<Conflict, ConflictChoice>;
  /** Lease holder id (default random). */
  holder?: string;
  /** Lease time-to-live asked of the hub (ms, default 30 s). */
  leaseTtlMs?: number;
  /** Largest push body (bytes, default 16 MiB). */
  maxBatch?: number;
  /** Backoff bounds while offline or while another device holds the lease (ms). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });

export class DeviceSync implements WriterSync {
  private readonly emitter = new Emitter<SyncEvents>();
  private state: SyncState = 'connecting';
  private lastError: string | undefined;
  private stopped = false;
  private wake: AbortController = new AbortController();
  private loop: Promise<void> | undefined;
  private readonly holder: string;
  private readonly at: string;
  /** Pending `flush()` calls, each waiting for the records up to its sequence number to be pushed. */
  private readonly waiters = new FlushWaiters();
  private fatal: SyncError | undefined;

  constructor(private readonly o: DeviceSyncOptions) {
    this.holder = o.holder ?? `device-${o.device.queue.device}`;
    const t = o.client.target;
    this.at = `database ${t.db} on ${describeHubUrls(t.url)}`;
    o.device.onRecorded = () => {
      this.emitStatus();
      this.wake.abort();
    };
  }

  start(): void {
    this.loop = this.run();
  }

  status(): SyncStatus {
    const s: SyncStatus = {
      state: this.state,
      localTxid: this.o.device.localTxid,
      pending: this.o.device.queue.records.length,
      hubTxid: this.o.device.queue.base.txid,
    };
    if (this.lastError !== undefined) s.lastError = this.lastError;
    return s;
  }

  /** Local changes not in the hub's history yet (each one local transaction). */
  pending(): number {
    return this.o.device.queue.records.length;
  }

  on<K extends keyof SyncEvents>(event: K, fn: (arg: SyncEvents[K]) => void): () => void {
    return this.emitter.on(event, fn);
  }

  /**
   * Resolves once every local change committed before the call is in the hub's history or was reported
   * rejected; rejects with the error that stopped syncing, or after `timeoutMs`.
   */
  flush(timeoutMs?: number): Promise<void> {
    if (this.fatal) return Promise.reject(this.fatal);
    const records = this.o.device.queue.records;
    if (records.length === 0) return Promise.resolve();
    const seq = records[records.length - 1]!.seq;
    this.wake.abort();
    return this.waiters.add(
      seq,
      timeoutMs,
      () => `${this.at}: local changes still pending after ${timeoutMs} ms (${this.lastError ?? this.state})`,
    );
  }

  /**
   * Resolves the next time the device holds the hub's head with nothing pending (it caught up and
   * follows); rejects with the error that stopped syncing.
   */
  whenIdle(): Promise<void> {
    if (this.fatal) return Promise.reject(this.fatal);
    this.wake.abort();
    return new Promise((resolve, reject) => this.idle.add({ resolve, reject }));
  }

  private idle = new Set<{ resolve(): void; reject(e: Error): void }>();

  /** Stops syncing (a lease held is released by the round in progress). */
  async close(): Promise<void> {
    this.stopped = true;
    this.wake.abort();
    await this.loop?.catch(() => undefined);
    this.update('closed');
    this.waiters.failAll(new Error(`${this.at}: the database was closed before its changes synced`));
  }

  private async run(): Promise<void> {
    let backoff = this.o.minBackoffMs ?? 100;
    const max = this.o.maxBackoffMs ?? 5_000;
    // Rejections a crash kept from being reported: once the application could add its listeners.
    await sleep(0);
    try {
      this.reportRejections();
    } catch (e) {
      this.update('error', (e as Error).message);
    }
    while (!this.stopped) {
      this.wake = new AbortController();
      try {
        const next = await this.round();
        backoff = this.o.minBackoffMs ?? 100;
        if (this.stopped) break;
        this.settle();
        if (next === 'follow') await this.follow();
        else if (next === 'again') {
          // Let another device that waits for the lease take it before this one takes it again.
          await sleep(5 + Math.random() * 20, this.wake.signal);
        } else if (next === 'wait') {
          this.update('synced');
          for (const w of this.idle) w.resolve();
          this.idle.clear();
          await sleep(5_000, this.wake.signal);
        }
      } catch (e) {
        if (this.stopped) break;
        if (e instanceof DeviceBusyError) {
          await sleep(20, this.wake.signal);
          continue;
        }
        if (e instanceof HubError && ['lease_held', 'stale_epoch', 'head_mismatch'].includes(e.code)) {
          // Another device is syncing, or took the lease over and pushed while this round ran slowly (its
          // push was refused, nothing stored): let it finish, then a new round takes the lease again.
          await sleep(Math.min(backoff, 500) * (0.5 + Math.random()), this.wake.signal);
          backoff = Math.min(backoff * 2, max);
          continue;
        }
        if (!isTransient(e)) {
          this.fatal =
            e instanceof SyncError
              ? e
              : e instanceof HubError
                ? fatalFromHub(e, this.o.client.target)
                : new SyncError(`${this.at}: ${(e as Error).message}`, 'internal', { cause: e });
          this.update('error', this.fatal.message);
          this.waiters.failAll(this.fatal);
          for (const w of this.idle) w.reject(this.fatal);
          return;
        }
        this.update(troubleState(e), (e as Error).message);
        await sleep(backoff, this.wake.signal);
        backoff = Math.min(backoff * 2, max);
      }
    }
  }

  /**
   * One round: bring the hub's history in and push what is pending. Then: 'follow' the hub live,
   * 'wait' for a local change (the hub has no such database yet), or go 'again'.
   */
  private async round(): Promise<'follow' | 'wait' | 'again'> {
    const { client, device } = this.o;
    const q = device.queue;
    if (q.records.length > 0) return this.pushRound();
    const hub = await client.state();
    if (hub) this.checkMode(hub.mode);
    if (!hub) {
      if (device.localTxid === 0n) return 'wait';
      // The hub has no such database: this device's history creates it.
      const lease = await client.takeLease(this.holder, this.o.leaseTtlMs ?? 30_000, undefined, true);
      try {
        if (!(await client.state())) await this.pushSuffix(lease, undefined);
      } finally {
        await client.releaseLease(lease.epoch).catch(() => undefined);
      }
      return 'again';
    }
    if (!sameBytes(hub.journalId, device.journalId)) {
      await this.adopt(hub.journalId);
      return 'again';
    }
    if (hub.head.txid > q.base.txid) await this.catchUp();
    return 'follow';
  }

  /** A round with local changes pending: under the lease, bring the hub's history in if it moved, push. */
  private async pushRound(): Promise<'follow' | 'again'> {
    const { client, device } = this.o;
    const q = device.queue;
    // While the hub cannot be reached the device stays 'offline' (with the last error) through its retries.
    const troubled = (): boolean => this.state === 'offline' || this.state === 'storage-unavailable';
    if (!troubled()) this.update('pushing');
    // Refused, this device keeps its place: it gets the lease before one that just released it.
    const lease = await client.takeLease(this.holder, this.o.leaseTtlMs ?? 30_000, undefined, true);
    if (troubled()) this.update('pushing'); // the hub answers again
    try {
      // Most rounds find the hub where this device left it: push at once (one round trip).
      if (q.base.txid > 0n) {
        try {
          await this.pushSuffix(lease, q.base);
          return q.records.length === 0 ? 'follow' : 'again';
        } catch (e) {
          if (!(e instanceof HubError) || (e.code !== 'head_mismatch' && e.code !== 'other_history')) throw e;
        }
      }
      const now = await client.state();
      if (now) this.checkMode(now.mode);
      if (!now) {
        await this.pushSuffix(lease, undefined);
      } else if (!sameBytes(now.journalId, device.journalId)) {
        await this.adopt(now.journalId);
        await this.pushSuffix(lease, now.head);
      } else {
        const local = device.localPoint(now.head);
        if (local === 'ahead') {
          await this.catchUp();
        } else if (local === 'in') {
          if (this.stopped) return 'again';
          device.pushed(now.head); // an earlier push whose answer was lost
        } else {
          throw new SyncError(
            `${this.at} has at txid ${now.head.txid} a state this device does not know, behind its own: the hub's copy was replaced by an older one; restore the hub or start this device afresh`,
            'other_history',
          );
        }
        // From the base, which is now the hub's head as this round read it: asking the hub again could
        // name a head another device pushed after this device's lease ran out, which is no point of its
        // history (the push from the base is then refused, and a new round rebases on it).
        await this.pushSuffix(lease, device.queue.base);
      }
    } finally {
      await client.releaseLease(lease.epoch).catch(() => undefined);
    }
    return q.records.length === 0 ? 'follow' : 'again';
  }

  /** A device writes only into a shared database: a single writer's is its writer's alone. */
  private checkMode(mode: DbMode): void {
    if (mode === 'shared') return;
    throw new SyncError(
      `${this.at} is a single-writer database (one writer pushes to it; its mode was set when it was created): a shared device cannot write to it; ${otherModeAdvice('single')}`,
      'other_mode',
    );
  }

  /** Reads the hub's snapshots after the base (up to its head now) and takes them in. */
  private async catchUp(): Promise<void> {
    const { device } = this.o;
    const base = device.queue.base;
    const incoming = await this.readAll({ after: base, journalId: device.journalId });
    this.takeIn(incoming);
  }

  /** The hub holds another history: take its image and everything after it; pending changes go on top. */
  private async adopt(journalId: Uint8Array): Promise<void> {
    if (!this.o.device.canAdopt()) {
      throw new SyncError(
        `${this.at} holds another history than this device's database, whose content from before it was shared cannot be merged: open an empty file to join it, or push this database under a new name`,
        'other_history',
      );
    }
    const incoming = await this.readAll({});
    this.takeIn(incoming, { journalId });
  }

  private takeIn(incoming: IncomingSnapshot[], other?: { journalId: Uint8Array }): void {
    // close() may have closed the files while the snapshots were on their way.
    if (incoming.length === 0 || this.stopped) return;
    const started = performance.now();
    const report = this.o.device.takeIn(incoming, other);
    const ms = performance.now() - started;
    this.report(report);
    const base = this.o.device.queue.base;
    this.emitter.emit('received', {
      hubTxid: base.txid,
      count: report.incoming,
      reapplied: report.applied,
      ms,
    });
  }

  private report(r: RebaseReport<Conflict, ConflictChoice>): void {
    for (const c of r.conflicts)
      this.emitter.emit('conflict', { seq: c.seq, conflict: c.conflict, choice: c.choice });
    this.reportRejections();
  }

  /**
   * Emits 'rejected' for every rejection the device kept (this rebase's, and any a crash kept from being
   * reported), then lets the device forget them.
   */
  private reportRejections(): void {
    for (const x of this.o.device.rejections()) this.emitter.emit('rejected', x);
    this.o.device.rejectionsReported();
  }

  /** Pushes the local snapshots after the hub's `head` (a point of the local history). */
  private async pushSuffix(lease: Lease, head: Position | undefined): Promise<void> {
    const { client, device } = this.o;
    // What was committed when the round began: later commits wait for the next round, so that a device
    // that keeps writing does not keep the lease from the others.
    const upTo = device.localTxid;
    for (;;) {
      const batch = device.pushBatch(head, this.o.maxBatch ?? 16 << 20, upTo);
      if (!batch) {
        if (head) device.pushed(head);
        return;
      }
      const r = await client.push(batch.bytes, {
        journalId: device.journalId,
        base: batch.base,
        epoch: lease.epoch,
        mode: 'shared',
      });
      if (this.stopped) return;
      if (r.head.txid !== batch.last.txid || r.head.checksum !== batch.last.checksum) {
        // The hub held the whole batch already (an earlier push whose answer was lost) and has another
        // device's snapshots after it: they are pushed, and a new round takes the others in.
        device.pushed(batch.last);
        throw new HubError({
          error: 'head_mismatch',
          message: `${this.at} holds this device's snapshots up to txid ${batch.last.txid} and more after them`,
          head: toJsonPosition(r.head),
        });
      }
      device.pushed(r.head);
      this.emitter.emit('pushed', { hubTxid: r.head.txid, count: r.appended });
      head = r.head;
      this.settle();
    }
  }

  /** Follows the hub live until a local change wants pushing (or the stream ends). */
  private async follow(): Promise<void> {
    const { client, device } = this.o;
    if (device.queue.records.length > 0 || this.stopped) return;
    this.update('synced');
    for (const w of this.idle) w.resolve();
    this.idle.clear();
    const signal = this.wake.signal;
    let stream: ReadableStream<Uint8Array>;
    try {
      stream = await client.read({
        after: device.queue.base,
        journalId: device.journalId,
        follow: true,
        signal,
      });
    } catch (e) {
      if (signal.aborted) return;
      throw e;
    }
    const parser = new StreamParser({ stream: true });
    const reader = stream.getReader();
    let batch: IncomingSnapshot[] = [];
    try {
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (e) {
          if (signal.aborted) return;
          throw e;
        }
        if (chunk.done) return;
        for (const item of parser.push(chunk.value)) {
          if (item.kind === 'snapshot') batch.push({ bytes: item.bytes.slice(), header: item.header });
        }
        if (batch.length > 0) {
          if (device.queue.records.length > 0) return; // a local change: a round takes these in
          try {
            this.takeIn(batch);
            batch = [];
          } catch (e) {
            if (!(e instanceof DeviceBusyError)) throw e;
            await sleep(20);
          }
        }
      }
    } finally {
      await reader.cancel().catch(() => undefined);
    }
  }

  /** Reads a stream to its end (no follow): the snapshots it holds. */
  private async readAll(o: { after?: Position; journalId?: Uint8Array }): Promise<IncomingSnapshot[]> {
    const stream = await this.o.client.read({ ...o, follow: false });
    const parser = new StreamParser({ stream: true });
    const out: IncomingSnapshot[] = [];
    const reader = stream.getReader();
    for (;;) {
      const chunk = await reader.read();
      if (chunk.done) break;
      for (const item of parser.push(chunk.value)) {
        if (item.kind === 'snapshot') out.push({ bytes: item.bytes.slice(), header: item.header });
      }
    }
    parser.end();
    return out;
  }

  /** Resolves flush() calls whose changes are all synced (or rejected). */
  private settle(): void {
    const records = this.o.device.queue.records;
    const first = records[0]?.seq;
    if (first === undefined) this.waiters.resolveAll();
    else this.waiters.reached(first - 1n);
    this.update(records.length === 0 ? 'synced' : 'pushing');
  }

  private update(state: SyncState, error?: string): void {
    this.state = state;
    this.lastError = error;
    this.emitStatus();
  }

  private emitStatus(): void {
    this.emitter.emit('status', this.status());
  }
}
