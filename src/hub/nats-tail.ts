/**
 * One database's view in NatsStorage: an ordered JetStream consumer on the database's stream that reads
 * its whole history once, then every new message live (appends made through any hub). It reassembles
 * appends from their parts (src/hub/nats-wire.ts), keeps an index (txid → header and where its bytes
 * are: stream sequences of the parts and an offset; in typed arrays, src/hub/nats-index.ts), the head,
 * and tells subscribers about new snapshots.
 *
 * `waitSeq()` lets callers wait until the view holds a given stream sequence, which makes state() exact
 * across hubs (src/hub/nats-storage.ts).
 */

import type { ConsumerMessages } from '@nats-io/jetstream';
import type { MsgHdrs } from '@nats-io/transport-node';
import {
  checkSnapshotChecksum,
  concatBytes,
  decodeSnapshotHeader,
  FLAG_FULL_IMAGE,
  memorySource,
  type Position,
  type SnapshotHeader,
  samePosition,
  toHex,
} from '../format/index.js';
import {
  type DbMode,
  type EncodedSnapshot,
  parseJournalId,
  parseMode,
  parsePosition,
} from '../protocol/index.js';
import { type AppendRef, type IndexedSnapshot, SnapshotIndex } from './nats-index.js';
import {
  HDR_APPEND,
  HDR_BASE,
  HDR_CHECKPOINT,
  HDR_HISTORY,
  HDR_JOURNAL,
  HDR_MODE,
  HDR_PART,
  HDR_UPLOAD,
  historyTxid,
  parsePart,
} from './nats-wire.js';
import { type AppendListener, BeforeBaseError, type DbState, StorageUnavailableError } from './storage.js';

interface Pending {
  /** The sequence of the view's last message before this record's first part. */
  after: number;
  key: string;
  /** A checkpoint (a full image standing for everything up to its txid), not an append. */
  checkpoint: boolean;
  /** A checkpoint's Mycelite-History (the compacted history ending at it), when it has one. */
  history?: string;
  n: number;
  journal: string;
  base: string;
  /** Mycelite-Mode as sent (null: none, an append from before modes). */
  mode: string | null;
  seqs: number[];
  data: Uint8Array[];
}

/**
 * A wait that sees no new message for this long reads the missing ones itself and renews the consumer
 * (ms): a consumer on a node that died, or one made again after a reconnect that does not deliver.
 */
const STALL_MS = 1000;
/** A view with subscribers and no message for this long checks the stream's last sequence (ms). */
const FOLLOW_MS = 4000;

/** How a view reaches its stream (src/hub/nats-storage.ts gives it, with its own timeouts). */
export interface TailSource {
  /** A new ordered consumer from stream sequence `from` on. */
  open(from: number): Promise<{ messages: ConsumerMessages; remove: () => void }>;
  /** One message read directly from the stream (the stream leader), null when it is gone. */
  get(seq: number): Promise<{ seq: number; header?: MsgHdrs; data: Uint8Array } | null>;
  /**
   * On a shard stream (a view of one subject): the database's first message at or after `seq`, null when
   * there is none.
   */
  next?(seq: number): Promise<{ seq: number; header?: MsgHdrs; data: Uint8Array } | null>;
  /** The last sequence of the database's messages now (0: none). */
  lastSeq(): Promise<number>;
}

/** What take() needs of a message: consumer messages and direct reads both have it. */
interface RawMsg {
  seq: number;
  headers?: MsgHdrs;
  data: Uint8Array;
  /** The message is gone from the stream (purged by a compaction). */
  gone?: boolean;
}

interface Waiter {
  seq: number;
  resolve: () => void;
}

export class DbTail {
  journalId: Uint8Array | undefined;
  /** The database's mode: that of the first append (every later one has the same). */
  mode: DbMode = 'single';
  base: Position = { txid: 0n, checksum: 0n };
  head: Position = { txid: 0n, checksum: 0n };
  headTimestamp = 0;
  /** The snapshots after the base: snapshot i is base.txid + 1 + i (src/hub/nats-index.ts). */
  private readonly index = new SnapshotIndex();
  /** Bytes of the snapshots in `index`. */
  bytes = 0;
  /**
   * The full image of the base, when a compaction stored one (the messages before it may be purged), and
   * the name of the compacted history that ends at it (src/hub/nats-history.ts), when one was kept.
   */
  checkpoint: { header: SnapshotHeader; ref: AppendRef; history?: string } | undefined;
  /**
   * History objects announced by compactions (Mycelite-Upload), by name, with the txid each ends at: the
   * next compaction removes those its checkpoint does not name (their hub died before it stored its own).
   */
  readonly uploads = new Map<string, bigint>();
  /** The stream sequence of the last message read (complete, torn or not an append). */
  lastSeq = 0;
  /** Set once the consumer runs (the stream exists). */
  started = false;
  /** Set once the history that existed at start was read: from then on, subscribers hear of appends. */
  live = false;
  failed: Error | undefined;
  /** Consumers made again (a stall, missed heartbeats, a reconnect): for tests and logs. */
  renewals = 0;
  /** Messages read directly from the stream (a stalled consumer): for /metrics. */
  directReads = 0;
  readonly listeners = new Set<AppendListener>();
  private pending: Pending | undefined;
  /** An append held with the messages after it, until settle() knows whether this view missed a purge. */
  private held: { p: Pending; msgs: RawMsg[] } | undefined;
  private waiters: Waiter[] = [];
  private current: { messages: ConsumerMessages; remove: () => void } | undefined;
  private source: TailSource | undefined;
  private filling: Promise<void> | undefined;
  private follower: ReturnType<typeof setInterval> | undefined;
  private stopped = false;
  /** Between renew() and the next consumer's start. */
  private renewing = false;

  /**
   * `onDamaged` hears of an append skipped because a snapshot's trailer checksum fails. `filtered`: the
   * view reads the database's subject of a shard stream, whose sequences have gaps (other databases').
   */
  constructor(
    readonly db: string,
    private readonly onDamaged?: (txid: bigint, why: string) => void,
    readonly filtered = false,
  ) {}

  /**
   * Starts reading the database's stream from its first message, and keeps reading it whatever the
   * cluster does. The ordered consumer is R1: it lives on one node, and when that node dies the client
   * does not make it again by itself (its check of the consumer times out and is retried forever, and
   * after a reconnect it does not even watch heartbeats). So the view makes a new consumer from the last
   * sequence it read when the consumer reports missed heartbeats, after a reconnect (renew()), and when
   * a wait or a subscriber sees nothing new while the stream has more (then it also reads the missing
   * messages directly from the stream, so that no wait depends on a consumer being healthy).
   */
  start(source: TailSource): void {
    if (this.started || this.stopped) return;
    this.source = source;
    this.started = true;
    void this.run(source);
    let seen = -1;
    this.follower = setInterval(() => {
      if (this.listeners.size === 0 || this.lastSeq !== seen) {
        seen = this.lastSeq;
        return;
      }
      // A view of a shard asks for its next message (nothing comes back when there is none: no payload
      // read every few seconds per followed database), a view of its own stream for the last sequence.
      const next = this.source!.next;
      const probe = next ? next(this.lastSeq + 1).then((m) => m?.seq ?? 0) : this.source!.lastSeq();
      void probe.then(
        (last) => {
          if (last > this.lastSeq) this.recover(last);
        },
        () => undefined, // the cluster is busy: the next tick asks again
      );
    }, FOLLOW_MS);
    this.follower.unref?.();
  }

  private async run(source: TailSource): Promise<void> {
    for (let failures = 0; !this.stopped; ) {
      let c: { messages: ConsumerMessages; remove: () => void };
      try {
        c = await source.open(this.lastSeq + 1);
      } catch {
        failures++;
        await sleep(Math.min(100 * 2 ** failures, 2000)); // a leader election: try again
        continue;
      }
      failures = 0;
      if (this.stopped) {
        void c.messages.close();
        c.remove();
        break;
      }
      this.current = c;
      this.renewing = false;
      void this.watch(c);
      try {
        for await (const m of c.messages) this.take(m);
      } catch {
        // below: made again
      }
      c.remove();
      if (this.current === c) this.current = undefined;
      if (!this.stopped) await sleep(100);
    }
    this.wakeAll();
  }

  /** Makes the consumer again when the client reports missed heartbeats (its node may be dead). */
  private async watch(c: { messages: ConsumerMessages }): Promise<void> {
    try {
      for await (const s of c.messages.status()) {
        if (s.type === 'heartbeats_missed' && this.current === c) this.renew();
      }
    } catch {
      // the consumer ended
    }
  }

  /** Ends the current consumer; the read loop makes a new one from the last sequence read. */
  renew(): void {
    const c = this.current;
    if (!c || this.stopped) return;
    this.current = undefined;
    this.renewing = true;
    this.renewals++;
    void c.messages.close();
  }

  /** Renews the consumer and reads messages up to `upTo` directly (one reader at a time). */
  private recover(upTo: number): void {
    this.renew();
    if (this.filling || !this.source) return;
    const source = this.source;
    this.filling = (async () => {
      while (!this.stopped && this.lastSeq < upTo) {
        const seq = this.lastSeq + 1;
        if (source.next) {
          const m = await source.next(seq);
          if (!m) break; // purged meanwhile: the consumer reads what follows
          if (this.lastSeq >= m.seq) continue; // the consumer was faster
          this.directReads++;
          this.take({ seq: m.seq, headers: m.header, data: m.data });
          continue;
        }
        const m = await source.get(seq);
        if (this.lastSeq >= seq) continue; // the consumer was faster
        this.directReads++;
        this.take(
          m ? { seq, headers: m.header, data: m.data } : { seq, data: new Uint8Array(0), gone: true },
        );
      }
    })()
      .catch(() => undefined) // the cluster is busy: the next stall tries again
      .finally(() => {
        this.filling = undefined;
      });
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.follower);
    const c = this.current;
    this.current = undefined;
    if (c) {
      void c.messages.close();
      c.remove();
    }
    this.failed ??= new Error(`the view of ${this.db} is closed`);
    this.wakeAll();
  }

  state(): DbState | undefined {
    if (!this.journalId) return undefined;
    const { journalId, base, head, headTimestamp, mode } = this;
    return { journalId, base, head, headTimestamp, mode };
  }

  at(txid: bigint): IndexedSnapshot | undefined {
    if (txid <= this.base.txid || txid > this.head.txid) return undefined;
    const i = Number(txid - this.base.txid - 1n);
    const x = this.index;
    return { header: x.header(i, this.base), ref: x.ref(x.append(i)), offset: x.offset(i) };
  }

  /**
   * The bytes of the snapshots after..upTo (which the view must hold), as slices of their appends'
   * messages read with `get`; BeforeBaseError when a message is gone (compacted meanwhile).
   */
  async *readRange(after: bigint, upTo: bigint, get: TailSource['get']): AsyncGenerator<Uint8Array> {
    const x = this.index;
    for (let txid = after + 1n; txid <= upTo; ) {
      // A checkpoint read meanwhile moved the base past it (or the view read the stream afresh).
      if (txid <= this.base.txid || upTo > this.head.txid)
        throw new BeforeBaseError(`read: snapshot ${txid} of ${this.db} was compacted meanwhile`);
      // The snapshots i.. of one append, as byte ranges of its parts (indexes into the index as it is
      // now: the base may move at each await below).
      const i = Number(txid - this.base.txid - 1n);
      const last = Number(upTo - this.base.txid - 1n);
      const append = x.append(i);
      const start = x.offset(i);
      let end = start + x.length(i);
      let k = i + 1;
      for (; k <= last && x.append(k) === append; k++) end = x.offset(k) + x.length(k);
      const ref = x.ref(append);
      let partStart = 0;
      for (const [p, seq] of ref.seqs.entries()) {
        const partEnd = partStart + ref.lens[p]!;
        if (partEnd > start && partStart < end) {
          const m = await get(seq);
          if (!m)
            throw new BeforeBaseError(
              `read: message ${seq} of ${this.db} is gone from the stream (compacted)`,
            );
          yield m.data.subarray(Math.max(0, start - partStart), Math.min(m.data.length, end - partStart));
        }
        partStart = partEnd;
      }
      txid += BigInt(k - i);
    }
  }

  /**
   * Resolves once the view holds stream sequence `seq`, rejects after `ms`. A wait that sees no new
   * message for STALL_MS renews the consumer and reads the missing messages directly.
   */
  waitSeq(seq: number, ms: number, what: string): Promise<void> {
    if (this.lastSeq >= seq) return Promise.resolve();
    if (this.failed) return Promise.reject(this.failed);
    // No consumer now (one is being made again, which needs JetStream's meta leader: an election when
    // its node died): read directly at once rather than after a stall.
    if (this.renewing) this.recover(seq);
    return new Promise<void>((resolve, reject) => {
      let seen = this.lastSeq;
      const watchdog = setInterval(() => {
        if (this.lastSeq === seen) this.recover(seq);
        seen = this.lastSeq;
      }, STALL_MS);
      const timer = setTimeout(() => {
        clearInterval(watchdog);
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(
          new StorageUnavailableError(
            `NATS did not deliver ${what} of ${this.db} within ${ms} ms (the view holds ${this.lastSeq}); is the cluster up?`,
          ),
        );
      }, ms);
      const waiter: Waiter = {
        seq,
        resolve: () => {
          clearInterval(watchdog);
          clearTimeout(timer);
          if (this.lastSeq < seq) reject(this.failed ?? new Error(`the view of ${this.db} stopped`));
          else resolve();
        },
      };
      this.waiters.push(waiter);
    });
  }

  private forgetIndex(): void {
    this.journalId = undefined;
    this.mode = 'single';
    this.base = { txid: 0n, checksum: 0n };
    this.head = { txid: 0n, checksum: 0n };
    this.headTimestamp = 0;
    this.index.clear();
    this.bytes = 0;
    this.checkpoint = undefined;
    this.pending = undefined;
  }

  private wakeAll(): void {
    const ready = this.waiters.filter((w) => this.lastSeq >= w.seq || this.failed || this.stopped);
    if (ready.length === 0) return;
    this.waiters = this.waiters.filter((w) => !ready.includes(w));
    for (const w of ready) w.resolve();
  }

  private take(m: RawMsg): void {
    if (m.seq <= this.lastSeq) return; // a late one from a consumer made again
    if (this.held) {
      // Read once the held append is settled, in order (a direct read and the consumer may both give it).
      if (m.seq > (this.held.msgs[this.held.msgs.length - 1]?.seq ?? this.lastSeq)) this.held.msgs.push(m);
      return;
    }
    // Messages were purged before this view read them (a compaction): what follows continues a
    // checkpoint this view never saw, so it reads it as a history starting there. (A filtered view
    // sees gaps always: it finds a purge by an append that starts past its head, in complete().)
    if (m.gone || (!this.filtered && m.seq > this.lastSeq + 1)) this.forgetIndex();
    const before = this.lastSeq;
    this.lastSeq = m.seq;
    try {
      this.part(m, before);
    } finally {
      this.wakeAll();
    }
  }

  private part(m: RawMsg, before: number): void {
    const h = m.headers;
    const upload = h?.get(HDR_UPLOAD);
    if (upload) {
      const txid = historyTxid(upload);
      if (txid !== undefined) this.uploads.set(upload, txid);
    }
    const key = h?.get(HDR_APPEND) ?? '';
    const part = parsePart(h?.get(HDR_PART));
    if (!part || key === '') {
      this.pending = undefined; // not ours: it breaks any append in progress
      return;
    }
    if (part.i === 1) {
      this.pending = {
        after: before,
        key,
        checkpoint: h?.has(HDR_CHECKPOINT) ?? false,
        history: h?.has(HDR_HISTORY) ? h.get(HDR_HISTORY) : undefined,
        n: part.n,
        journal: h?.get(HDR_JOURNAL) ?? '',
        base: h?.get(HDR_BASE) ?? '',
        mode: h?.has(HDR_MODE) ? h.get(HDR_MODE) : null,
        seqs: [],
        data: [],
      };
    } else if (!this.pending || this.pending.key !== key || this.pending.seqs.length !== part.i - 1) {
      this.pending = undefined; // a part out of place: the append it belonged to is torn
      return;
    }
    const p = this.pending!;
    p.seqs.push(m.seq);
    p.data.push(m.data.slice()); // not a view into the client's read buffer, which it may keep
    if (p.seqs.length === p.n) {
      this.pending = undefined;
      this.complete(p);
    }
  }

  /** A whole append: index its snapshots if it continues the head (else it lost a race: skip it). */
  private complete(p: Pending): void {
    if (p.checkpoint) {
      this.completeCheckpoint(p);
      return;
    }
    const journalId = parseJournalId(p.journal);
    const base = parsePosition(p.base);
    const mode = parseMode(p.mode);
    if (!journalId || !base || !mode) return;
    if (
      this.filtered &&
      this.journalId &&
      p.journal === toHex(this.journalId) &&
      base.txid > this.head.txid
    ) {
      this.suspect(p); // messages purged before this view read them, or a damaged append skipped
      return;
    }
    if (this.journalId) {
      if (p.journal !== toHex(this.journalId) || !samePosition(base, this.head)) return;
      if (mode !== this.mode) return; // hubs check the mode before they publish: a lost race at most
    }
    const bytes = concatBytes(p.data);
    const snapshots: EncodedSnapshot[] = [];
    const offsets: number[] = [];
    let prev = base;
    for (let off = 0; off < bytes.length; ) {
      const header = decodeSnapshotHeader(bytes.subarray(off));
      if (!header || typeof header === 'string' || off + header.length > bytes.length) return;
      if (header.txid !== prev.txid + 1n || header.preChecksum !== prev.checksum) return;
      if (!checkSnapshotChecksum(memorySource(bytes), off, header)) {
        // Damaged where it is stored: never served; skipped like a torn append (the next one from the head goes in).
        this.onDamaged?.(header.txid, 'its checksum does not match its bytes');
        return;
      }
      snapshots.push({ bytes: bytes.subarray(off, off + header.length), header });
      offsets.push(off);
      prev = { txid: header.txid, checksum: header.postChecksum };
      off += header.length;
    }
    if (snapshots.length === 0) return;
    if (!this.journalId) {
      this.journalId = journalId;
      this.base = base;
      this.mode = mode;
    }
    this.index.add(
      p.seqs,
      p.data.map((d) => d.length),
      snapshots.map((s) => s.header),
      offsets,
    );
    this.bytes += bytes.length;
    this.head = prev;
    this.headTimestamp = Math.max(this.headTimestamp, snapshots[snapshots.length - 1]!.header.timestamp);
    if (!this.live) return;
    const state = this.state()!;
    for (const l of this.listeners) {
      try {
        l(snapshots, state);
      } catch {
        // a listener's failure is its own
      }
    }
  }

  /**
   * Holds an append that starts past this filtered view's head (of its journal), and the messages after
   * it, until settle() knows why: the view missed messages a compaction purged, or an append before it
   * was skipped (damaged where it is stored).
   */
  private suspect(p: Pending): void {
    const held = { p, msgs: [] as RawMsg[] };
    this.held = held;
    void this.settle(held);
  }

  /**
   * Messages this view did not read were purged when the database's first message now comes after the
   * one the view read before `p`: then it reads afresh from `p`, as a view started now would. Otherwise
   * `p` is skipped (after a damaged append; the writer supplies them again). Then the held messages.
   */
  private async settle(held: { p: Pending; msgs: RawMsg[] }): Promise<void> {
    for (let failures = 0; !this.stopped && this.held === held; failures++) {
      let first: { seq: number } | null;
      try {
        first = await this.source!.next!(1);
      } catch {
        await sleep(Math.min(100 * 2 ** failures, 2000)); // the cluster is busy: ask again
        continue;
      }
      if (this.held !== held) return;
      this.held = undefined;
      if (first && first.seq > held.p.after) {
        this.forgetIndex();
        this.complete(held.p);
      }
      for (const m of held.msgs) this.take(m); // one may be held again: the rest then waits with it
      this.wakeAll();
      return;
    }
  }

  /**
   * A whole checkpoint: the full image of a snapshot this view holds (or of its base). The base moves up
   * to it and the snapshots before leave the index; a stale or foreign one is skipped.
   */
  private completeCheckpoint(p: Pending): void {
    if (!this.journalId || p.journal !== toHex(this.journalId)) return;
    const bytes = concatBytes(p.data);
    const h = decodeSnapshotHeader(bytes);
    if (!h || typeof h === 'string' || h.length !== bytes.length || (h.flags & FLAG_FULL_IMAGE) === 0) return;
    if (!checkSnapshotChecksum(memorySource(bytes), 0, h)) {
      this.onDamaged?.(h.txid, 'the checkpoint’s checksum does not match its bytes');
      return;
    }
    if (h.txid < this.base.txid || h.txid >= this.head.txid) return; // old, or would leave nothing after it
    if (h.txid === this.base.txid) {
      if (h.postChecksum !== this.base.checksum) return;
    } else {
      const n = Number(h.txid - this.base.txid);
      if (this.index.postChecksum(n - 1) !== h.postChecksum) return;
      this.bytes -= this.index.drop(n);
      this.base = { txid: h.txid, checksum: h.postChecksum };
    }
    this.checkpoint = {
      header: h,
      ref: { seqs: p.seqs, lens: p.data.map((d) => d.length) },
      history: p.history || undefined,
    };
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
