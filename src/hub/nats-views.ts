/**
 * The views a NATS hub keeps of its databases (src/hub/nats-tail.ts): made on first use, started once the
 * database's stream exists (a JetStream advisory tells when: no polling), brought up to the stream on
 * request (catchUp), renewed after a reconnect, and released when idle (src/hub/view-use.ts): every
 * storage call holds its database's view while it runs, and one nobody held for `idleMs` and no
 * follower listens to is stopped (its consumer deleted, its index dropped).
 */
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { NatsPlaces } from './nats-places.js';
import { DbTail } from './nats-tail.js';
import type { AppendListener } from './storage.js';
import { ViewUse } from './view-use.js';

/** What the views use of their storage. */
export interface ViewsHost {
  /** Resolves once the storage is connected. */
  linked(): Promise<unknown>;
  nc(): NatsConnection;
  places: NatsPlaces;
  timeoutMs: number;
  /** A stored append of `db` is damaged at `txid` (the view skips it). */
  onDamaged(db: string, txid: bigint, why: string): void;
  /** True while `db` must keep its view though idle (a compaction runs). */
  keeps(db: string): boolean;
  /** The view of `db` was released. */
  released(db: string): void;
}

export class NatsViews {
  /** Which databases' views are in use, and since when they are idle. */
  readonly use: ViewUse;
  private readonly tails = new Map<string, Promise<DbTail>>();
  private readonly views = new Set<DbTail>();
  /** The views made (tails that resolved), by database. */
  private readonly made = new Map<string, DbTail>();
  /** A view's subscription to its stream's creation, while it waits for it. */
  private readonly advisoryOf = new Map<DbTail, Subscription>();
  private readonly starting = new Map<DbTail, Promise<boolean>>();
  /** Views released since start. */
  released = 0;

  constructor(
    private readonly host: ViewsHost,
    idleMs: number,
  ) {
    this.use = new ViewUse(idleMs, (db) => this.release(db));
  }

  /** How many views run, and what their consumers went through (for /metrics). */
  figures(): { views: number; renewals: number; directReads: number } {
    let renewals = 0;
    let directReads = 0;
    for (const v of this.views) {
      renewals += v.renewals;
      directReads += v.directReads;
    }
    return { views: this.views.size, renewals, directReads };
  }

  /** After a reconnect: every view makes its consumer again (the old one may have lived on a dead node). */
  renewAll(): void {
    for (const t of this.tails.values())
      void t.then(
        (tail) => tail.renew(),
        () => undefined,
      );
  }

  /**
   * Releases the view of `db` (ViewUse: nobody has used it for `idleMs`) unless a follower listens to
   * it, it is still being made, or the host keeps it. True when released.
   */
  private release(db: string): boolean {
    const tail = this.made.get(db);
    if (!tail || tail.listeners.size > 0 || this.host.keeps(db)) return false;
    this.tails.delete(db);
    this.made.delete(db);
    this.views.delete(tail);
    this.starting.delete(tail);
    this.advisoryOf.get(tail)?.unsubscribe();
    this.advisoryOf.delete(tail);
    tail.stop();
    this.released++;
    this.host.released(db);
    return true;
  }

  /** The database's view: following its stream once the stream exists. */
  get(db: string): Promise<DbTail> {
    this.use.touch(db);
    let t = this.tails.get(db);
    if (!t) {
      const place = this.host.places.of(db); // checks the name
      t = (async () => {
        await this.host.linked();
        const tail = new DbTail(db, (txid, why) => this.host.onDamaged(db, txid, why), place.shared);
        this.views.add(tail);
        if (!(await this.start(tail))) {
          // Its stream (or shard) is not created yet: start when it is (a JetStream advisory; no polling).
          const sub = this.host.nc().subscribe(`$JS.EVENT.ADVISORY.STREAM.CREATED.${place.stream}`, {
            callback: () => void this.start(tail).catch(() => undefined),
          });
          this.advisoryOf.set(tail, sub);
          await this.start(tail); // created meanwhile?
        }
        return tail;
      })();
      t.then(
        (tail) => {
          if (this.tails.get(db) === t) this.made.set(db, tail);
        },
        () => this.tails.delete(db),
      );
      this.tails.set(db, t);
    }
    return t;
  }

  /** Starts `tail` if its stream exists (once); reads what the stream holds. True when it runs. */
  private start(tail: DbTail): Promise<boolean> {
    const known = this.starting.get(tail);
    if (known) return known;
    const places = this.host.places;
    const run = (async () => {
      const place = places.of(tail.db);
      const last = await places.lastSeq(place);
      if (last === undefined) return false;
      tail.start(places.source(place));
      await tail.waitSeq(last, this.host.timeoutMs, 'the history');
      tail.live = true;
      return true;
    })();
    this.starting.set(tail, run);
    run.then(
      (ok) => {
        if (!ok) this.starting.delete(tail);
      },
      () => this.starting.delete(tail),
    );
    return run;
  }

  /**
   * Waits until the view holds every message of its database the stream holds now. False when there is
   * no stream (or, on a shard, no message of the database).
   */
  async catchUp(tail: DbTail): Promise<boolean> {
    if (!tail.started) return this.start(tail);
    const places = this.host.places;
    const place = places.of(tail.db);
    // On a shard, a view that holds the database's last message needs only hear that none follows.
    if (tail.filtered && tail.lastSeq > 0 && (await places.nextSeq(place, tail.lastSeq + 1)) === 0)
      return true;
    const seq = await places.lastSeq(place);
    if (seq === undefined || (tail.filtered && seq === 0)) return false;
    await tail.waitSeq(seq, this.host.timeoutMs, `sequence ${seq}`);
    return true;
  }

  /** Calls `listener` with each append of `db` from now on; returns how to stop. */
  subscribe(db: string, listener: AppendListener): () => void {
    let stopped = false;
    let tail: DbTail | undefined;
    this.get(db).then(
      (t) => {
        tail = t;
        if (!stopped) t.listeners.add(listener);
      },
      () => undefined, // the next state() or read() reports the failure
    );
    return () => {
      stopped = true;
      tail?.listeners.delete(listener);
    };
  }

  /** Stops every view. */
  async stop(): Promise<void> {
    this.use.stop();
    for (const sub of this.advisoryOf.values()) sub.unsubscribe();
    this.advisoryOf.clear();
    this.made.clear();
    for (const t of this.tails.values()) await t.then((tail) => tail.stop()).catch(() => undefined);
    this.tails.clear();
    this.views.clear();
  }
}
