/**
 * One database's view in NatsStorage: an ordered JetStream consumer on the database's stream that reads
 * its whole history once, then every new message live (appends made through any hub). It reassembles
 * appends from their parts (src/hub/nats-wire.ts), keeps an index (txid → header and where its bytes
 * are: stream sequences of the parts and an offset), the head, and tells subscribers about new snapshots.
 *
 * `wait()` lets callers wait until the view holds a given stream sequence, which makes state() exact
 * across hubs (src/hub/nats-storage.ts).
 */
import { type ConsumerMessages, DeliverPolicy, type JetStreamClient, type JsMsg } from '@nats-io/jetstream';
import { decodeSnapshotHeader, type SnapshotHeader } from '../format/index.js';
import { parseJournalId, parsePosition, samePosition, toHex, type WirePosition } from '../protocol/index.js';
import { HDR_APPEND, HDR_BASE, HDR_JOURNAL, HDR_PART, parsePart } from './nats-wire.js';
import type { AppendListener, DbState, EncodedSnapshot } from './storage.js';

/** Where an append's bytes are: its parts' stream sequences and lengths. */
export interface AppendRef {
  seqs: number[];
  lens: number[];
}

export interface IndexedSnapshot {
  header: SnapshotHeader;
  ref: AppendRef;
  /** Offset of the snapshot in the concatenation of the append's parts. */
  offset: number;
}

interface Pending {
  key: string;
  n: number;
  journal: string;
  base: string;
  seqs: number[];
  data: Uint8Array[];
}

/** A wait that sees no message for this long makes the consumer again (ms). */
const STALL_MS = 3000;

interface Waiter {
  done: () => boolean;
  resolve: () => void;
}

export class DbTail {
  journalId: Uint8Array | undefined;
  base: WirePosition = { txid: 0n, checksum: 0n };
  head: WirePosition = { txid: 0n, checksum: 0n };
  headTimestamp = 0;
  /** snaps[i] is snapshot base.txid + 1 + i. */
  readonly snaps: IndexedSnapshot[] = [];
  /** The stream sequence of the last message read (complete, torn or not an append). */
  lastSeq = 0;
  /** Set once the consumer runs (the stream exists). */
  started = false;
  /** Set once the history that existed at start was read: from then on, subscribers hear of appends. */
  live = false;
  failed: Error | undefined;
  readonly listeners = new Set<AppendListener>();
  private pending: Pending | undefined;
  private waiters: Waiter[] = [];
  private messages: ConsumerMessages | undefined;
  private stopped = false;

  constructor(readonly db: string) {}

  /**
   * Starts reading the database's stream from its first message. The ordered consumer survives node
   * losses (heartbeats every second reveal a dead one; it is made again after the last message read);
   * should it end anyway, it is started again from there.
   */
  async start(js: JetStreamClient, stream: string): Promise<void> {
    const open = async (): Promise<ConsumerMessages> => {
      const from = this.lastSeq + 1;
      const consumer = await js.consumers.get(
        stream,
        from > 1 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from } : {},
      );
      return consumer.consume({ max_messages: 256, expires: 5000, idle_heartbeat: 1000 });
    };
    this.messages = await open();
    if (this.stopped) {
      void this.messages.close();
      return;
    }
    this.started = true;
    void (async () => {
      while (!this.stopped) {
        try {
          for await (const m of this.messages!) this.take(m);
        } catch {
          // below: made again
        }
        if (this.stopped) break;
        await new Promise((r) => setTimeout(r, 200));
        try {
          this.messages = await open();
        } catch {
          // the cluster is down: try again
        }
      }
      this.wakeAll();
    })();
  }

  stop(): void {
    this.stopped = true;
    void this.messages?.close();
    this.failed ??= new Error(`the view of ${this.db} is closed`);
    this.wakeAll();
  }

  state(): DbState | undefined {
    if (!this.journalId) return undefined;
    return { journalId: this.journalId, base: this.base, head: this.head, headTimestamp: this.headTimestamp };
  }

  at(txid: bigint): IndexedSnapshot | undefined {
    if (txid <= this.base.txid || txid > this.head.txid) return undefined;
    return this.snaps[Number(txid - this.base.txid - 1n)];
  }

  /** Resolves once `done()` holds (checked after every message), rejects after `ms`. */
  wait(done: () => boolean, ms: number, what: string): Promise<void> {
    if (done()) return Promise.resolve();
    if (this.failed) return Promise.reject(this.failed);
    return new Promise<void>((resolve, reject) => {
      // A consumer that stopped delivering (its node died and the client did not notice) is made again.
      let seen = this.lastSeq;
      const watchdog = setInterval(() => {
        if (this.lastSeq === seen) this.kick();
        seen = this.lastSeq;
      }, STALL_MS);
      const timer = setTimeout(() => {
        clearInterval(watchdog);
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`NATS did not deliver ${what} of ${this.db} within ${ms} ms; is the cluster up?`));
      }, ms);
      const waiter: Waiter = {
        done: () => done() || this.failed !== undefined,
        resolve: () => {
          clearInterval(watchdog);
          clearTimeout(timer);
          if (this.failed && !done()) reject(this.failed);
          else resolve();
        },
      };
      this.waiters.push(waiter);
    });
  }

  /** Ends the current consumer; the read loop makes a new one from the last sequence read. */
  private kick(): void {
    if (this.started && !this.stopped) void this.messages?.close();
  }

  private wakeAll(): void {
    const ready = this.waiters.filter((w) => w.done());
    if (ready.length === 0) return;
    this.waiters = this.waiters.filter((w) => !ready.includes(w));
    for (const w of ready) w.resolve();
  }

  private take(m: JsMsg): void {
    if (m.seq <= this.lastSeq) return; // a late one from a consumer made again
    this.lastSeq = m.seq;
    try {
      this.part(m);
    } finally {
      this.wakeAll();
    }
  }

  private part(m: JsMsg): void {
    const h = m.headers;
    const key = h?.get(HDR_APPEND) ?? '';
    const part = parsePart(h?.get(HDR_PART));
    if (!part || key === '') {
      this.pending = undefined; // not ours: it breaks any append in progress
      return;
    }
    if (part.i === 1) {
      this.pending = {
        key,
        n: part.n,
        journal: h?.get(HDR_JOURNAL) ?? '',
        base: h?.get(HDR_BASE) ?? '',
        seqs: [],
        data: [],
      };
    } else if (!this.pending || this.pending.key !== key || this.pending.seqs.length !== part.i - 1) {
      this.pending = undefined; // a part out of place: the append it belonged to is torn
      return;
    }
    const p = this.pending!;
    p.seqs.push(m.seq);
    p.data.push(m.data);
    if (p.seqs.length === p.n) {
      this.pending = undefined;
      this.complete(p);
    }
  }

  /** A whole append: index its snapshots if it continues the head (else it lost a race: skip it). */
  private complete(p: Pending): void {
    const journalId = parseJournalId(p.journal);
    const base = parsePosition(p.base);
    if (!journalId || !base) return;
    if (this.journalId) {
      if (p.journal !== toHex(this.journalId) || !samePosition(base, this.head)) return;
    }
    const total = p.data.reduce((n, d) => n + d.length, 0);
    const bytes = new Uint8Array(total);
    let at = 0;
    for (const d of p.data) {
      bytes.set(d, at);
      at += d.length;
    }
    const snapshots: EncodedSnapshot[] = [];
    const offsets: number[] = [];
    let prev = base;
    for (let off = 0; off < bytes.length; ) {
      const header = decodeSnapshotHeader(bytes.subarray(off));
      if (!header || typeof header === 'string' || off + header.length > bytes.length) return;
      if (header.txid !== prev.txid + 1n || header.preChecksum !== prev.checksum) return;
      snapshots.push({ bytes: bytes.subarray(off, off + header.length), header });
      offsets.push(off);
      prev = { txid: header.txid, checksum: header.postChecksum };
      off += header.length;
    }
    if (snapshots.length === 0) return;
    if (!this.journalId) {
      this.journalId = journalId;
      this.base = base;
    }
    const ref: AppendRef = { seqs: p.seqs, lens: p.data.map((d) => d.length) };
    for (const [i, s] of snapshots.entries()) this.snaps.push({ header: s.header, ref, offset: offsets[i]! });
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
}
