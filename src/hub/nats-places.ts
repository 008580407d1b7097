/**
 * Where each database's messages are in a NATS deployment, and how they are published and read there
 * (docs/ARCHITECTURE.md, "Scale-out on NATS JetStream", "Layout"): a subject of its own in one of the
 * shard streams, or (databases made before shards, or the `streams` layout) a stream of its own.
 *
 * Every publish expects its stream's last sequence (nats-server 2.9 has no race-free per-subject
 * check): on a database's own stream the message before it; on a shard the shard's last as this hub knows
 * it, one publish at a time per shard in this hub, sent again after another hub's message.
 */
import { DeliverPolicy, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import type { MsgHdrs } from '@nats-io/transport-node';
import { Mutex } from './mutex.js';
import {
  type Expectation,
  ensureStream,
  inARow,
  isNotFound,
  type JsmAt,
  onShard,
  type PartsRecord,
  publishOne,
  publishParts,
  retry,
  type ShardLast,
} from './nats-js.js';
import type { TailSource } from './nats-tail.js';
import type { NatsNames, Place } from './nats-wire.js';

/** JetStream keeps message ids this long to drop a publish sent twice (ns). */
const DUPLICATE_WINDOW_NS = 120 * 1e9;

/** What the places use of the storage's connection (it may be made again). */
export interface PlacesLink {
  js(): JetStreamClient;
  jsm(): JetStreamManager;
  jsmAt: JsmAt;
  replicas(): number;
}

interface Shard {
  /** The shard's last sequence as this hub knows it. */
  last: ShardLast;
  /** This hub's publishes to the shard, one at a time. */
  turns: Mutex;
  /** The shard stream, created (or found) once. */
  ready?: Promise<void>;
}

export class NatsPlaces {
  /** Databases with a stream of their own (made before shards), read at connect. */
  private ownStreams = new Set<string>();
  private readonly shards = new Map<string, Shard>();

  constructor(
    private readonly names: NatsNames,
    private readonly layout: 'shards' | 'streams',
    private readonly link: PlacesLink,
    private readonly timeoutMs: number,
  ) {}

  /** Reads which databases have a stream of their own (once connected, before any place is asked). */
  async load(jsm: JetStreamManager): Promise<void> {
    if (this.layout === 'streams') return;
    this.ownStreams = await retry(this.timeoutMs, 'list the streams', async () => {
      const own = new Set<string>();
      for await (const name of jsm.streams.names(this.names.allSnapshots)) {
        const db = this.names.dbOfStream(name);
        if (db !== undefined) own.add(db);
      }
      return own;
    });
  }

  /**
   * Where `db`'s snapshots are: its own stream when it has one (made before shards, or with the
   * `streams` layout), else its subject in its shard stream.
   */
  of(db: string): Place {
    if (this.layout === 'streams' || this.ownStreams.has(db))
      return { stream: this.names.stream(db), subject: this.names.subject(db), shared: false };
    return this.names.shardPlace(db);
  }

  /** How the view of a database reads its place: consumers and direct reads with short timeouts. */
  source(place: Place): TailSource {
    const { stream, subject, shared } = place;
    return {
      open: async (from) => {
        const consumer = await this.link.js().consumers.get(stream, {
          ...(shared ? { filter_subjects: subject } : {}),
          ...(from > 1 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from } : {}),
        });
        const messages = await consumer.consume({ max_messages: 256, expires: 5000, idle_heartbeat: 1000 });
        return { messages, remove: () => void consumer.delete().catch(() => undefined) };
      },
      get: (seq) => this.link.jsm().streams.getMessage(stream, { seq }),
      next: shared
        ? (seq) =>
            this.link
              .jsm()
              .streams.getMessage(stream, { seq, next_by_subj: subject } as unknown as { seq: number })
        : undefined,
      lastSeq: async () => (await this.lastSeqOf(this.link.jsm(), place)) ?? 0,
    };
  }

  /** Reads one message of `place`'s stream directly (retrying failures); null when it is gone. */
  getter(place: Place): TailSource['get'] {
    return (seq) =>
      retry(this.timeoutMs, `read message ${seq}`, (n) =>
        this.link.jsmAt(n).streams.getMessage(place.stream, { seq }),
      );
  }

  /**
   * The sequence of the last message of a database now (0: none), or undefined when its stream does not
   * exist; retrying failures.
   */
  lastSeq(place: Place): Promise<number | undefined> {
    return retry(this.timeoutMs, `read the last sequence of ${place.subject}`, (n) =>
      this.lastSeqOf(this.link.jsmAt(n), place),
    );
  }

  /**
   * The sequence of the database's first message at or after `from` on a shard (0: none; nothing but
   * the answer's headers is read then); retrying failures.
   */
  nextSeq(place: Place, from: number): Promise<number> {
    return retry(this.timeoutMs, `read the next message of ${place.subject}`, async (n) => {
      const request = { seq: from, next_by_subj: place.subject } as unknown as { seq: number };
      return (await this.link.jsmAt(n).streams.getMessage(place.stream, request))?.seq ?? 0;
    });
  }

  private async lastSeqOf(jsm: JetStreamManager, place: Place): Promise<number | undefined> {
    try {
      if (!place.shared) return (await jsm.streams.info(place.stream)).state.last_seq;
      return (await jsm.streams.getMessage(place.stream, { last_by_subj: place.subject }))?.seq ?? 0;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /** Creates the stream of `place` (its shard, once per hub) unless it exists. */
  ensure(place: Place, db: string): Promise<void> {
    const config = (subjects: string) => ({
      name: place.stream,
      subjects: [subjects],
      num_replicas: this.link.replicas(),
      duplicate_window: DUPLICATE_WINDOW_NS,
    });
    if (!place.shared) return ensureStream(this.link.jsmAt, this.timeoutMs, config(place.subject));
    const s = this.shard(place);
    s.ready ??= ensureStream(
      this.link.jsmAt,
      this.timeoutMs,
      config(this.names.shardSubjects(this.names.shardOf(db))),
    ).catch((e: unknown) => {
      s.ready = undefined;
      throw e;
    });
    return s.ready;
  }

  private shard(place: Place): Shard {
    let s = this.shards.get(place.stream);
    if (!s) {
      s = { last: { last: 0 }, turns: new Mutex() };
      this.shards.set(place.stream, s);
    }
    return s;
  }

  /**
   * Publishes the messages `send` makes, with what each must expect of its stream: on a shard, in this
   * hub's turn (one publish at a time per shard, so this hub's own never race) from the shard's known
   * last sequence; on a database's own stream, in a row after `lastSeq` (the view's).
   */
  private publishing<T>(
    place: Place,
    lastSeq: number,
    send: (expect: Expectation) => Promise<T>,
  ): Promise<T> {
    if (!place.shared) return send(inARow(lastSeq));
    const s = this.shard(place);
    const streamLast = async (): Promise<number> => (await this.lastSeq({ ...place, shared: false })) ?? 0; // the stream's, not the subject's
    return s.turns.run(() => send(onShard(s.last, this.timeoutMs, streamLast)));
  }

  /** Publishes a record's parts at `place` (see publishing()). */
  publishRecord(
    place: Place,
    lastSeq: number,
    what: string,
    record: Omit<PartsRecord, 'subject' | 'stream'>,
    parts: Uint8Array[],
  ): Promise<{ seq: number } | { cutAfter: number }> {
    const full = { ...record, subject: place.subject, stream: place.stream };
    return this.publishing(place, lastSeq, (expect) =>
      publishParts(this.link.js(), this.timeoutMs, what, full, parts, expect),
    );
  }

  /** Publishes one message at `place` (see publishing()): its sequence, or undefined when refused. */
  publishOne(
    place: Place,
    lastSeq: number,
    what: string,
    msg: { data: Uint8Array; msgID: string; headers?: MsgHdrs },
  ): Promise<number | undefined> {
    const full = { ...msg, subject: place.subject, stream: place.stream };
    return this.publishing(place, lastSeq, (expect) =>
      publishOne(this.link.js(), this.timeoutMs, what, full, expect),
    );
  }

  /** Removes the messages of `place` before sequence `seq` (on a shard: of its subject only). */
  async purge(place: Place, seq: number): Promise<void> {
    await retry(this.timeoutMs, `purge ${place.subject}`, (n) =>
      this.link.jsmAt(n).streams.purge(place.stream, place.shared ? { filter: place.subject, seq } : { seq }),
    );
  }

  /** Every database: those with a stream of their own, and the subjects of the shards. */
  list(): Promise<string[]> {
    return retry(this.timeoutMs, 'list the databases', async (n) => {
      const jsm = this.link.jsmAt(n);
      const out = new Set<string>();
      for await (const name of jsm.streams.names(this.names.allSnapshots)) {
        const db = this.names.dbOfStream(name);
        if (db !== undefined) out.add(db);
      }
      const shards: string[] = [];
      for await (const name of jsm.streams.names(this.names.allShards)) shards.push(name);
      for (const name of shards) {
        const info = await jsm.streams.info(name, { subjects_filter: this.names.allShards });
        for (const subject of Object.keys(info.state.subjects ?? {})) {
          const db = this.names.dbOfSubject(subject);
          if (db !== undefined) out.add(db);
        }
      }
      return [...out].sort();
    });
  }
}
