/**
 * HubStorage on NATS JetStream, so that several hubs without state serve the same databases
 * (docs/ARCHITECTURE.md, "Scale-out on NATS JetStream"). Each database's snapshots are a subject of its
 * own in a shard stream, or a stream of its own for databases made before shards (src/hub/nats-places.ts,
 * layout: src/hub/nats-wire.ts); leases are the last message per subject of one lease stream. All are
 * replicated (R3 on a cluster). The stream is the only truth of a database's history: its state is read
 * back from it (src/hub/nats-tail.ts), never kept in a second place that could disagree.
 *
 * - Single writer across hubs: each part of an append is published with the stream's expected last
 *   sequence (Nats-Expected-Last-Sequence; on a shard the shard's, src/hub/nats-places.ts), and every view
 *   skips an append that does not continue the head, so of two hubs appending from the same head exactly
 *   one wins; the other answers head_mismatch with the winner's head. (Not the per-subject expectation:
 *   nats-server 2.9 lets two racing publishes with the same Nats-Expected-Last-Subject-Sequence both in.)
 * - Idempotence: every part carries Nats-Msg-Id `db/journal/FIRST-LAST/I` (on a shard with an id of the
 *   call and attempt before `/I`); a publish whose answer was lost (a node died, a timeout) is sent again
 *   and JetStream stores it once.
 * - All or nothing: an append counts only when all its parts stand in a row; a torn one is skipped.
 * - Every push is checked against the database's pages at the head before it is published: a head file
 *   per database on this hub's disk (src/hub/heads.ts, under `headsDir`), brought forward from the
 *   stream first when other hubs appended meanwhile. Each view skips an append whose snapshots' trailer
 *   checksums fail, like a torn one (src/hub/nats-tail.ts).
 * - Mode: every append carries the database's mode (Mycelite-Mode); a view takes it from the first
 *   append it reads, so a database exists with its mode or not at all, and an append of the other mode
 *   is refused before it is published.
 * - Compaction (retention): once the snapshots after a database's base pass a threshold, a hub moves
 *   them into the database's compacted history under the retention policy (as a hub on files does, in a
 *   worker thread: the previous history and the snapshots up to the head − 1), stores that history in
 *   the object store (src/hub/nats-history.ts), then a checkpoint (the full image of the head − 1, as
 *   parts marked Mycelite-Checkpoint, naming the history in Mycelite-History), and purges the messages
 *   before the append that follows it. Views move their base up to the checkpoint; reads from before it
 *   fail with BeforeBaseError (readers reset from a full image), images start at it, and `history()`
 *   serves the history the current checkpoint names.
 */

import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { concatBytes, type Position, type SnapshotHeader, toHex } from '../format/index.js';
import { NodeFileSystem } from '../node/node-fs.js';
import type { DbMode, EncodedSnapshot } from '../protocol/index.js';
import type { CompactOutcome } from './compact-worker.js';
import { CompactionRuns, compactionSettings, type HubCompaction } from './compaction.js';
import { DamageListeners, type DamageReport, DoesNotApplyError, Heads, type Staged } from './heads.js';
import { Mutex } from './mutex.js';
import { type CompactionHost, compactStream } from './nats-compaction.js';
import { HistoryGoneError, NatsHistories } from './nats-history.js';
import { attemptMs, FAST_TRIES, parseServers, retry } from './nats-js.js';
import type { NatsLeases } from './nats-leases.js';
import { type NatsLink, openLink } from './nats-link.js';
import { NatsPlaces } from './nats-places.js';
import type { DbTail, TailSource } from './nats-tail.js';
import { NatsViews, type ViewsHost } from './nats-views.js';
import { type NatsNames, natsNames, type Place, splitParts } from './nats-wire.js';
import type { AppendListener, AppendResult, DbState, HubStorage, StoredLease } from './storage.js';
import { appendRefusal, BeforeBaseError, checkAppend, type StorageHealth } from './storage.js';

export interface NatsStorageOptions {
  /** NATS servers, e.g. `nats://127.0.0.1:4222,nats://127.0.0.1:4223` or a list. */
  servers: string | string[];
  /** Prefix of the stream, subjects and bucket (default `mycelite`): several deployments per cluster. */
  prefix?: string;
  /** Replicas of the stream and the lease bucket (default 3 on a cluster, 1 on a single server). */
  replicas?: number;
  /** Largest message (default: the server's max_payload less 8 KiB for headers). */
  partBytes?: number;
  /** How long an operation may wait for the cluster (a leader election, a reconnect) (default 20 s). */
  timeoutMs?: number;
  /**
   * Automatic compaction (default: on, src/hub/compaction.ts): the stream keeps one checkpoint and what
   * follows it, the object store the compacted history before it (`retain`, `checkpointRatio`); false: never.
   */
  compaction?: HubCompaction | false;
  /**
   * Where this hub keeps its head files (the pages of each database at its head, to check pushes;
   * src/hub/heads.ts). Hubs may share it: each takes a numbered slot under it. Default: a temporary
   * directory, removed at close (then the head files are rebuilt from the stream at each start).
   */
  headsDir?: string;
  /** Called when a stored append or a head file is found damaged (and what was done about it). */
  onDamage?: (db: string, report: DamageReport) => void;
  /**
   * A database's view (its consumer, with a heartbeat each second, and its index) is released after this
   * long without a request or a live follower (default 10 minutes; Infinity: never), and made again from
   * the stream at the next request.
   */
  viewIdleMs?: number;
  /**
   * Where a new database's snapshots go (default `shards`): a subject of its own in one of SHARDS shared
   * streams (src/hub/nats-wire.ts), or (`streams`, the layout before shards) a stream of its own: one Raft
   * group each, whose idle cost grows with the databases. Databases that have a stream of their own keep
   * it either way. All hubs of a deployment must use the same layout.
   */
  layout?: 'shards' | 'streams';
}

const VIEW_IDLE_MS = 10 * 60_000;

/** Between two connection attempts of a storage that waits for NATS (ms). */
const CONNECT_RETRY_MS = 1000;
/**
 * Longest wait of `NatsStorage.start` for its first connection attempt (ms): a cluster that is reached but
 * cannot serve yet (no quorum, too few nodes for the lease stream's replicas) keeps an attempt going for
 * `timeoutMs`, and the hub must listen (and say why it is not ready) meanwhile.
 */
const START_WAIT_MS = 5000;

export class NatsStorage implements HubStorage {
  private readonly views: NatsViews;
  private readonly locks = new Map<string, Mutex>();
  private readonly compactions: CompactionRuns;
  private closed = false;
  private heads!: Heads;
  private slot!: { dir: string; release(): void; temporary: boolean };
  private readonly damage = new DamageListeners();
  private link: NatsLink | undefined;
  /** Resolves once connected (open(): at once; start(): whenever NATS answers). */
  private linked!: Promise<NatsLink>;
  /** Why the storage is not connected yet (start(): the last attempt's failure). */
  private waiting: string;
  /** Why the last connection attempt failed, if one did. */
  private failed: string | undefined;
  private connected = false;
  private reconnects = 0;
  private histories_: NatsHistories | undefined;
  private probing: Promise<StorageHealth> | undefined;
  readonly names: NatsNames;
  private readonly servers: string[];
  private readonly timeoutMs: number;
  private readonly places: NatsPlaces;

  private constructor(private readonly options: NatsStorageOptions) {
    this.servers = parseServers(options.servers);
    this.names = natsNames(options.prefix);
    this.timeoutMs = options.timeoutMs ?? 20_000;
    this.waiting = `connecting to NATS at ${this.servers.join(',')}`;
    this.compactions = new CompactionRuns(
      options.compaction === false ? undefined : compactionSettings(options.compaction ?? {}),
    );
    if (options.onDamage) this.damage.add(options.onDamage);
    this.places = new NatsPlaces(
      this.names,
      options.layout ?? 'shards',
      { js: () => this.js, jsm: () => this.jsm, jsmAt: this.jsmAt, replicas: () => this.replicas },
      this.timeoutMs,
    );
    const views: ViewsHost = {
      linked: () => this.linked,
      nc: () => this.nc,
      places: this.places,
      timeoutMs: this.timeoutMs,
      onDamaged: (db, txid, why) =>
        this.reportDamage(db, {
          what: 'stored',
          txid,
          message: `a stored append of ${db} is damaged at snapshot ${txid} (${why}): skipped like a torn one; the writer's next push supplies it again`,
          repaired: true,
        }),
      keeps: (db) => this.compactions.running(db),
      // Its head file too: two file descriptors each (10,000 databases ran out of them).
      released: (db) => this.heads.release(db),
    };
    this.views = new NatsViews(views, options.viewIdleMs ?? VIEW_IDLE_MS);
  }

  private get nc(): NatsConnection {
    return this.link!.nc;
  }
  private get js(): JetStreamClient {
    return this.link!.js;
  }
  private get jsm(): JetStreamManager {
    return this.link!.jsm;
  }
  /** The manager for attempt `n` of a request (nats-js.ts, attemptMs). */
  private readonly jsmAt = (n: number): JetStreamManager =>
    n < FAST_TRIES ? this.link!.jsm : this.link!.jsmSlow;
  private get leases(): NatsLeases {
    return this.link!.leases;
  }
  private get replicas(): number {
    return this.link!.replicas;
  }
  private get partBytes(): number {
    return this.link!.partBytes;
  }
  /** The compacted histories, in the deployment's object store. */
  private get histories(): NatsHistories {
    this.histories_ ??= new NatsHistories(
      this.js,
      () => this.jsm,
      this.names.historyBucket,
      this.replicas,
      this.timeoutMs,
    );
    return this.histories_;
  }

  /**
   * After a reconnect (the hub's NATS node died), every view makes its consumer again: the client only
   * checks the old one, and when that one lived on the dead node the check fails forever.
   */
  private async watchConnection(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') this.connected = false;
      if (s.type !== 'reconnect') continue;
      this.connected = true;
      this.reconnects++;
      this.views.renewAll();
    }
  }

  /** Where `db`'s snapshots are (NatsPlaces.of). */
  place(db: string): Place {
    return this.places.of(db);
  }

  /**
   * Connects, and creates the lease stream when it does not exist yet; fails when NATS cannot be reached
   * (or JetStream does not answer within `timeoutMs`).
   */
  static async open(options: NatsStorageOptions): Promise<NatsStorage> {
    const s = new NatsStorage(options);
    await s.prepare();
    s.linked = s.connect();
    try {
      await s.linked;
    } catch (e) {
      await s.close();
      throw e;
    }
    return s;
  }

  /**
   * The storage at once, connecting in the background: until NATS (and JetStream) answer, `health()`
   * says why not and every other call waits. `onWait` hears each failed attempt (the hub logs it).
   */
  static async start(options: NatsStorageOptions, onWait?: (message: string) => void): Promise<NatsStorage> {
    const s = new NatsStorage(options);
    await s.prepare();
    // Resolves once the first attempt is over, connected or not: a cluster that is up is ready at once.
    // One that takes longer is waited for in the background (START_WAIT_MS).
    await new Promise<void>((first) => {
      let done = false;
      setTimeout(() => {
        // Still in the first attempt: say which step it waits at (the attempt may take timeoutMs more).
        if (!done) onWait?.(s.waiting);
        first();
      }, START_WAIT_MS).unref();
      s.linked = s.connectWaiting((why) => {
        done = true;
        first();
        onWait?.(why);
      });
      s.linked.then(
        () => {
          done = true;
          first();
        },
        () => first(), // told by health(); calls waiting on it get the error
      );
    });
    return s;
  }

  private async prepare(): Promise<void> {
    this.slot = await takeSlot(this.options.headsDir);
    this.heads = new Heads(
      (db) => path.join(this.slot.dir, db),
      this,
      (db, r) => this.reportDamage(db, r),
    );
  }

  private async connectWaiting(onWait?: (message: string) => void): Promise<NatsLink> {
    for (;;) {
      try {
        // Each attempt ends (after timeoutMs at most): one that waited for JetStream for ever (no quorum,
        // a lease stream that cannot be placed) was never told, and kept the hub from listening.
        return await this.connect();
      } catch (e) {
        if (this.closed) throw e;
        this.failed = (e as Error).message;
        this.waiting = `waiting for NATS: ${this.failed}`;
        onWait?.(this.waiting);
        await new Promise((r) => setTimeout(r, CONNECT_RETRY_MS));
        if (this.closed) throw new Error('the hub storage is closed');
      }
    }
  }

  /** One connection, with JetStream reached within `jsMs` (default: timeoutMs). */
  private async connect(jsMs = this.timeoutMs): Promise<NatsLink> {
    const link = await openLink(
      this.servers,
      this.names,
      this.options,
      this.timeoutMs,
      jsMs,
      () => this.closed,
      (what) => {
        if (!this.link) this.waiting = this.failed ? `${what} (the last attempt: ${this.failed})` : what;
      },
    );
    await this.places.load(link.jsm).catch(async (e: unknown) => {
      await link.nc.close().catch(() => undefined);
      throw e;
    });
    this.link = link;
    this.connected = true;
    void this.watchConnection(link.nc);
    return link;
  }

  /**
   * Ready when connected and JetStream answers (its meta leader: a quorum of the cluster), asked at
   * most once at a time with a short timeout. Figures for /metrics either way.
   */
  health(): Promise<StorageHealth> {
    this.probing ??= this.probe().finally(() => {
      this.probing = undefined;
    });
    return this.probing;
  }

  private async probe(): Promise<StorageHealth> {
    const figures = this.figures();
    if (this.closed) return { ready: false, message: 'the hub storage is closed', figures };
    const link = this.link;
    if (!link) return { ready: false, message: this.waiting, figures };
    if (!this.connected)
      return {
        ready: false,
        message: `disconnected from NATS, reconnecting (${this.servers.join(',')})`,
        figures,
      };
    try {
      await link.probe.getAccountInfo();
      return { ready: true, figures };
    } catch (e) {
      return { ready: false, message: `JetStream does not answer: ${(e as Error).message}`, figures };
    }
  }

  private figures(): NonNullable<StorageHealth['figures']> {
    const { views, renewals, directReads } = this.views.figures();
    return {
      mycelite_nats_connected: {
        help: 'Connected to a NATS server (1) or not (0)',
        value: this.connected ? 1 : 0,
      },
      mycelite_nats_reconnects: { help: 'Reconnections to NATS since start', value: this.reconnects },
      mycelite_nats_views: {
        help: 'Databases this hub follows (one ordered consumer each)',
        value: views,
      },
      mycelite_nats_views_released: {
        help: 'Views released after viewIdleMs without a request or a follower, since start',
        value: this.views.released,
      },
      mycelite_nats_consumer_renewals: {
        help: 'Consumers made again (missed heartbeats, a reconnect, a stall) since start',
        value: renewals,
      },
      mycelite_nats_direct_reads: {
        help: 'Messages read directly from a stream because its consumer stalled, since start',
        value: directReads,
      },
    };
  }

  private check(): void {
    if (this.closed) throw new Error('the hub storage is closed');
  }

  private reportDamage(db: string, report: DamageReport): void {
    this.damage.report(db, report);
  }

  watchDamage(listener: (db: string, report: DamageReport) => void): void {
    this.damage.add(listener);
  }

  private lock(db: string): Mutex {
    let m = this.locks.get(db);
    if (!m) {
      m = new Mutex();
      this.locks.set(db, m);
    }
    return m;
  }

  /** The databases: those with a stream of their own, and the subjects of the shards. */
  async list(): Promise<string[]> {
    this.check();
    await this.linked;
    return this.places.list();
  }

  state(db: string): Promise<DbState | undefined> {
    this.check();
    return this.views.use.hold(db, async () => {
      const tail = await this.views.get(db);
      await this.views.catchUp(tail);
      return tail.state();
    });
  }

  /**
   * Creates the database's stream (or its shard's) and its first message (a marker), so that every
   * append expects > 0.
   */
  private async create(tail: DbTail): Promise<void> {
    const db = tail.db;
    const place = this.place(db);
    if (place.shared || !tail.started) await this.places.ensure(place, db);
    if (tail.lastSeq === 0) {
      if (place.shared) {
        const marker = { data: new Uint8Array(0), msgID: `${db}/created` };
        await this.places.publishOne(place, 0, `create ${db}`, marker);
      } else {
        await retry(this.timeoutMs, `create ${db}`, (n) =>
          this.js.publish(place.subject, new Uint8Array(0), { msgID: 'created', timeout: attemptMs(n) }),
        );
      }
    }
    await this.views.catchUp(tail);
  }

  async append(
    db: string,
    expectedHead: Position,
    journalId: Uint8Array,
    snapshots: EncodedSnapshot[],
    precondition?: () => Promise<void>,
    mode: DbMode = 'single',
  ): Promise<AppendResult> {
    this.check();
    this.names.subject(db); // refuses a bad name before anything else
    return this.lock(db).run(() =>
      this.views.use.hold(db, async () => {
        this.check();
        await precondition?.();
        checkAppend(expectedHead, snapshots);
        const tail = await this.views.get(db);
        const refuse = (e: DoesNotApplyError): AppendResult => ({
          ok: false,
          reason: 'does_not_apply',
          txid: e.txid,
          message: e.message,
          state: tail.state(),
        });
        if (!tail.started || tail.lastSeq === 0) {
          // A new database, as far as this view knows: nothing is created for snapshots that do not apply.
          if (!tail.journalId) {
            try {
              await this.heads.stage(db, undefined, journalId, expectedHead, snapshots);
            } catch (e) {
              if (e instanceof DoesNotApplyError) return refuse(e);
              throw e;
            }
          }
          await this.create(tail);
        }
        let refused = appendRefusal(tail, expectedHead, journalId, mode);
        if (refused) {
          await this.views.catchUp(tail); // our view may be behind another hub's appends
          refused = appendRefusal(tail, expectedHead, journalId, mode);
          if (refused) return { ok: false, reason: refused, state: tail.state()! };
        }
        // What the check above saw: the publish expects the stream as it was then, so an append by another
        // hub meanwhile (while the pages are checked) makes it fail rather than land after that one.
        let expectSeq = tail.lastSeq;
        let staged: Staged;
        try {
          staged = await this.heads.stage(db, tail.state(), journalId, expectedHead, snapshots);
        } catch (e) {
          if (e instanceof DoesNotApplyError) return refuse(e);
          throw e;
        }
        const last = snapshots[snapshots.length - 1]!.header;
        const place = this.place(db);
        /** The view holds our append (just stored, or by an earlier attempt whose answer was lost). */
        const ours = (): boolean => {
          const at = tail.at(last.txid);
          return at ? at.header.postChecksum === last.postChecksum : tail.base.txid >= last.txid;
        };
        // On a shard an append may be stored and skipped (a view behind another hub's append): each attempt
        // of each call gets message ids of its own, or JetStream would drop the next one as a repeat.
        const call = place.shared ? randomUUID().slice(0, 8) : undefined;
        for (let attempt = 0; ; attempt++) {
          const won = await this.publish(
            db,
            place,
            expectSeq,
            call === undefined ? '' : `/${call}-${attempt}`,
            expectedHead,
            journalId,
            snapshots,
            mode,
          );
          if (won !== undefined) await tail.waitSeq(won, this.timeoutMs, `sequence ${won}`);
          else await this.views.catchUp(tail); // another message came first: a winning append, or a torn one
          if (ours()) {
            this.heads.commit(db, staged);
            if (won !== undefined) this.maybeCompact(db, tail);
            return { ok: true, state: tail.state()! };
          }
          if (won !== undefined) {
            // Stored, but the views skip it: on its own stream that is damage; on a shard, another append
            // of the database came first (another hub's, or one this view had not read yet).
            if (!place.shared)
              throw new Error(`append to ${db}: stored, but the stream does not show it at ${won}; retry`);
            await this.views.catchUp(tail);
          }
          const why = appendRefusal(tail, expectedHead, journalId, mode);
          if (why) return { ok: false, reason: why, state: tail.state()! };
          if (attempt >= 3) throw new Error(`append to ${db} kept losing races to torn appends; retry`);
          expectSeq = tail.lastSeq;
        }
      }),
    );
  }

  /**
   * Publishes the append's parts (each carrying the database's mode: a new database gets it with its
   * first append) at the database's place (publishing()). The stream sequence of the last part, or
   * undefined when another append came first.
   */
  private async publish(
    db: string,
    place: Place,
    expectSeq: number,
    idSuffix: string,
    expectedHead: Position,
    journalId: Uint8Array,
    snapshots: EncodedSnapshot[],
    mode: DbMode,
  ): Promise<number | undefined> {
    const bytes = concatBytes(snapshots.map((s) => s.bytes));
    const parts = splitParts(bytes, this.partBytes);
    const journal = toHex(journalId);
    const key = `${snapshots[0]!.header.txid}-${snapshots[snapshots.length - 1]!.header.txid}`;
    const msgPrefix = `${db}/${journal}/${key}${idSuffix}`;
    const r = await this.places.publishRecord(
      place,
      expectSeq,
      `store a snapshot of ${db}`,
      { key, journal, base: expectedHead, mode, msgPrefix },
      parts,
    );
    if ('seq' in r) return r.seq;
    if (r.cutAfter === 0) return undefined;
    throw new Error(`append to ${db} was cut by another append after part ${r.cutAfter}; retry`);
  }

  read(db: string, after: bigint, upTo: bigint): AsyncIterable<Uint8Array> {
    this.check();
    const get = this.getter(db);
    const range = async (): Promise<DbTail> => {
      const tail = await this.views.get(db);
      const state = tail.state();
      if (!state) throw new Error(`read: no database ${db}`);
      if (after < state.base.txid) {
        throw new BeforeBaseError(
          `read: ${db} holds snapshots after ${state.base.txid} only (the rest is compacted), not after ${after}`,
        );
      }
      if (upTo > state.head.txid || after > upTo) {
        throw new Error(`read: ${after}..${upTo} is outside ${state.base.txid}..${state.head.txid} of ${db}`);
      }
      return tail;
    };
    // The view is held (not released when idle) from the first item asked for to the last.
    return this.views.use.holdWhile(db, async function* () {
      yield* (await range()).readRange(after, upTo, get);
    });
  }

  /** Reads one message of `db`'s stream directly (retrying failures); null when it is gone. */
  private getter(db: string): TailSource['get'] {
    return this.places.getter(this.place(db));
  }

  snapshotAt(db: string, txid: bigint): Promise<SnapshotHeader | undefined> {
    this.check();
    return this.views.use.hold(db, async () => (await this.views.get(db)).at(txid)?.header);
  }

  async copyHead(db: string, out: string, check = false): Promise<SnapshotHeader | undefined> {
    this.check();
    return this.lock(db).run(() =>
      this.views.use.hold(db, async () => {
        const tail = await this.views.get(db);
        if (!(await this.views.catchUp(tail))) return undefined;
        const state = tail.state();
        if (!state) return undefined;
        const pos = await this.heads.copy(db, state, out, check);
        return tail.at(pos.txid)?.header;
      }),
    );
  }

  async checkpoint(
    db: string,
    txid: bigint,
  ): Promise<{ header: SnapshotHeader; chunks: AsyncIterable<Uint8Array> } | undefined> {
    this.check();
    const cp = await this.views.use.hold(db, async () => (await this.views.get(db)).checkpoint);
    if (!cp || cp.header.txid !== txid) return undefined;
    const get = this.getter(db);
    return {
      header: cp.header,
      // Direct reads of the stream: the view is not needed (the checkpoint's sequences are known).
      chunks: (async function* () {
        for (const seq of cp.ref.seqs) {
          const m = await get(seq);
          if (!m) throw new BeforeBaseError(`the checkpoint of ${db} at ${txid} is gone (compacted again)`);
          yield m.data;
        }
      })(),
    };
  }

  /**
   * The compacted history the database's checkpoint names, copied whole from the object store into a
   * temporary file first (then unlinked: the open file is what is read), so that a compaction that
   * removes the object meanwhile does not cut it; one removed before it was copied is followed to the
   * checkpoint that replaced it. Undefined when the checkpoint names none (or there is no checkpoint).
   */
  history(db: string): Promise<AsyncIterable<Uint8Array> | undefined> {
    this.check();
    return this.views.use.hold(db, () => this.historyCopy(db));
  }

  private async historyCopy(db: string): Promise<AsyncIterable<Uint8Array> | undefined> {
    const tail = await this.views.get(db);
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'mycelite-nats-history-'));
    try {
      const file = path.join(dir, 'history');
      for (let attempt = 0; ; attempt++) {
        if (!(await this.views.catchUp(tail))) return undefined;
        const name = tail.checkpoint?.history;
        if (!name) return undefined;
        try {
          await this.histories.download(name, file);
        } catch (e) {
          if (!(e instanceof HistoryGoneError) || attempt >= 3) throw e;
          continue; // a compaction removed it: its checkpoint names the next one
        }
        const fd = await fsp.open(file, 'r');
        return fd.createReadStream();
      }
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  }

  /** What a compaction (src/hub/nats-compaction.ts) uses of this storage. */
  private get compactionHost(): CompactionHost {
    return {
      storage: this,
      settings: this.compactions.settings ?? compactionSettings({}),
      histories: this.histories,
      timeoutMs: this.timeoutMs,
      partBytes: this.partBytes,
      publish: (db, lastSeq, what, record, parts) =>
        this.places.publishRecord(this.place(db), lastSeq, what, record, parts),
      publishOne: (db, lastSeq, what, msg) => this.places.publishOne(this.place(db), lastSeq, what, msg),
      purge: (db, seq) => this.places.purge(this.place(db), seq),
      tail: (db) => this.views.get(db),
      catchUp: (tail) => this.views.catchUp(tail),
      locked: (db, fn) => this.lock(db).run(fn),
    };
  }

  /** Calls `listener` after each compaction (or its failure) besides the settings' onCompaction. */
  watchCompactions(listener: NonNullable<HubCompaction['onCompaction']>): void {
    this.compactions.watch(listener);
  }

  /** Starts a compaction of `db` in the background when the snapshots after its base are due. */
  private maybeCompact(db: string, tail: DbTail): void {
    const last = tail.at(tail.head.txid)?.header;
    const dbBytes = last ? last.dbPages * last.pageSize : 0;
    if (!this.compactions.due(db, tail.head.txid - tail.base.txid, tail.bytes, dbBytes)) return;
    this.compact(db).catch(() => undefined); // told to onCompaction and the watchers
  }

  /**
   * Compacts `db` now (unless this hub runs one already: then waits for it): moves the snapshots up to
   * the head − 1 into the database's compacted history under the retention policy (the previous history,
   * from the object store, joined with the stream copied into a journal file; in a worker thread) and
   * builds the full image of the head − 1; stores the history as a new object, then the image as a
   * checkpoint naming it after the stream's last message, then purges the messages before the append
   * that follows it and removes the history the checkpoint replaced. Resolves with what it did, or
   * undefined when there was nothing to do (or another hub did it first).
   */
  compact(db: string): Promise<CompactOutcome | undefined> {
    this.check();
    return this.compactions.start(db, () =>
      this.views.use.hold(db, () => compactStream(this.compactionHost, db)),
    );
  }

  async getLease(db: string): Promise<StoredLease | undefined> {
    this.check();
    this.names.leaseSubject(db); // refuses a bad name at once (not retried as a cluster failure)
    await this.linked;
    return this.leases.get(db);
  }

  async casLease(db: string, expected: StoredLease | undefined, next: StoredLease): Promise<boolean> {
    this.check();
    this.names.leaseSubject(db); // refuses a bad name at once (not retried as a cluster failure)
    await this.linked;
    // In this process, lease changes and appends of a database take turns (an append's lease check
    // then sees every change made here before it); across hubs the stream's sequence check decides.
    return this.lock(db).run(() => this.leases.cas(db, expected, next));
  }

  subscribe(db: string, listener: AppendListener): () => void {
    return this.views.subscribe(db, listener);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.compactions.settle();
    await Promise.all([...this.locks.values()].map((m) => m.idle()));
    this.closed = true;
    this.heads.close();
    this.slot.release();
    await this.views.stop();
    await this.link?.nc.close();
  }
}

/**
 * A directory for this hub's head files: the first free numbered slot under `dir` (each held with an
 * exclusive lock while the storage is open, so hubs sharing `dir` never share a slot, and a restarted hub
 * finds its head files again), or a new temporary directory.
 */
async function takeSlot(
  dir: string | undefined,
): Promise<{ dir: string; release(): void; temporary: boolean }> {
  if (dir === undefined) {
    const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'mycelite-heads-'));
    return { dir: tmp, temporary: true, release: () => fs.rmSync(tmp, { recursive: true, force: true }) };
  }
  const nodeFs = new NodeFileSystem();
  for (let n = 0; ; n++) {
    const slot = path.join(dir, String(n));
    fs.mkdirSync(slot, { recursive: true });
    const lockFile = path.join(slot, 'lock');
    fs.closeSync(fs.openSync(lockFile, 'a'));
    const lock = nodeFs.tryLockExclusive(lockFile);
    if (lock) return { dir: slot, temporary: false, release: () => lock.release() };
  }
}

/**
 * Opens the storage of `mycelite serve --storage nats://host:port[,host:port...]`. With `onWait`, a
 * cluster that cannot be reached yet is waited for in the background (NatsStorage.start), each failed
 * attempt told to `onWait`; without it, it is an error.
 */
export function openNatsStorage(
  url: string,
  options: Omit<NatsStorageOptions, 'servers'> = {},
  onWait?: (message: string) => void,
): Promise<NatsStorage> {
  if (!/^(nats|tls):\/\//.test(url.trim()))
    throw new Error(
      `--storage ${JSON.stringify(url)} is not a NATS URL: use nats://host:port[,host:port...]`,
    );
  if (onWait) return NatsStorage.start({ ...options, servers: url }, onWait);
  return NatsStorage.open({ ...options, servers: url });
}
