/**
 * `GET /v1/db/{name}/snapshots` (docs/PROTOCOL.md, "read, catch up, follow live"): a journal file header,
 * an optional full image, the stored snapshots after the reader's position and, with `follow=1`, each
 * new snapshot as soon as it is durable, with beats in silences.
 *
 * A follower subscribes to new appends *before* it reads the state, so nothing is missed or sent twice:
 * it tracks the last txid sent and the newest head it heard of. New snapshots wait in a small in-memory
 * queue; a follower that falls behind (a slow reader: the stream is pulled only as fast as the socket
 * drains) drops its queue past a limit and reads the gap from storage instead, so memory stays bounded.
 */

import type { Context } from 'hono';
import { encodeFileHeader, FORMAT_VERSION, type Position, sameBytes, samePosition } from '../format/index.js';
import {
  BEAT_BYTES,
  CONTENT_TYPE_STREAM,
  HubError,
  parseJournalId,
  parsePosition,
  toJsonPosition,
} from '../protocol/index.js';
import { authorizeName, badRequest, type HubContext, notFound } from './context.js';
import type { Image } from './image-cache.js';
import { BeforeBaseError, type DbState } from './storage.js';

const DEFAULT_QUEUE_LIMIT = 64 << 20;
const IMAGE_CHUNK = 1 << 20;

export async function handleRead(ctx: HubContext, c: Context): Promise<Response> {
  const name = await authorizeName(ctx, c, 'reader');
  const from = c.req.query('from');
  const afterText = c.req.query('after');
  const follow = c.req.query('follow') === '1' || c.req.query('follow') === 'true';
  if (from !== undefined && from !== 'image') throw badRequest('from= only takes "image"');
  if ((from === undefined) === (afterText === undefined)) {
    throw badRequest('give either after=TXID:CHECKSUM (with journal=ID) or from=image');
  }
  let after: Position | undefined;
  let journal: Uint8Array | undefined;
  if (afterText !== undefined) {
    after = parsePosition(afterText);
    if (!after) throw badRequest('after= must be a position TXID:CHECKSUM (16 hex digits)');
    const j = c.req.query('journal');
    journal = parseJournalId(j);
    if (j !== undefined && !journal)
      throw badRequest('journal= must be a journal id (32 lowercase hex digits)');
    if (!journal && (after.txid !== 0n || after.checksum !== 0n)) {
      throw badRequest('journal=ID is required with after= (except from 0:0000000000000000)');
    }
  }
  const f = new Follower(ctx, name, follow);
  try {
    const state = await ctx.storage.state(name);
    if (!state) throw notFound(name);
    if (after) {
      await checkPosition(ctx, name, state, after, journal);
      f.begin(state, after, after.txid);
    } else {
      // The image of the head, or of a later head stored meanwhile: its header says which.
      const image = await ctx.images.get(name, state);
      const h = image.header;
      f.begin(state, { txid: h.txid - 1n, checksum: h.preChecksum }, h.txid, image);
    }
  } catch (e) {
    f.dispose();
    throw e;
  }
  ctx.log.debug({ db: name, follow, from: from ?? afterText }, 'read stream');
  return new Response(f.stream, {
    headers: { 'content-type': CONTENT_TYPE_STREAM, 'cache-control': 'no-store', 'x-accel-buffering': 'no' },
  });
}

/** Throws 409 reset unless `after` (in `journal`) is a state of the hub's history it still holds. */
async function checkPosition(
  ctx: HubContext,
  name: string,
  state: DbState,
  after: Position,
  journal: Uint8Array | undefined,
): Promise<void> {
  const reset = (why: string): HubError =>
    new HubError({
      error: 'reset',
      message: `the reader's position ${after.txid} is not in the hub's history (${why}); read again with from=image`,
      head: toJsonPosition(state.head),
    });
  if (journal && !sameBytes(journal, state.journalId)) throw reset('another journal id');
  if (after.txid > state.head.txid) throw reset(`the hub's head is ${state.head.txid}`);
  if (after.txid < state.base.txid) throw reset(`the hub holds history from ${state.base.txid} on`);
  if (after.txid === state.base.txid) {
    if (!samePosition(after, state.base)) throw reset('its checksum differs');
    return;
  }
  const s = await ctx.storage.snapshotAt(name, after.txid);
  if (!s || s.postChecksum !== after.checksum) throw reset('its checksum differs');
}

class Follower {
  readonly stream: ReadableStream<Uint8Array>;
  private queue: { txid: bigint; bytes: Uint8Array }[] = [];
  private queued = 0;
  private knownHead = -1n;
  private sent = 0n;
  private header: Uint8Array | undefined;
  private image: Image | undefined;
  private imagePos = 0;
  private disk: AsyncIterator<Uint8Array> | undefined;
  private diskUpTo = 0n;
  private wake: (() => void) | undefined;
  private lastSend = Date.now();
  private ended = false;
  private disposed = false;
  private readonly unsubscribe: (() => void) | undefined;
  private readonly entry = { end: () => this.end() };

  constructor(
    private readonly ctx: HubContext,
    private readonly name: string,
    private readonly follow: boolean,
  ) {
    const limit = ctx.followQueueLimit ?? DEFAULT_QUEUE_LIMIT;
    if (follow) {
      this.unsubscribe = ctx.storage.subscribe(name, (snapshots, state) => {
        if (state.head.txid > this.knownHead) this.knownHead = state.head.txid;
        for (const s of snapshots) {
          if (this.queued + s.bytes.length > limit) {
            // Too far behind: forget the queue, the gap is read from storage.
            this.queue = [];
            this.queued = 0;
            break;
          }
          this.queue.push({ txid: s.header.txid, bytes: s.bytes });
          this.queued += s.bytes.length;
        }
        this.wake?.();
      });
      ctx.metrics.replicasConnected.inc();
    }
    ctx.streams.add(this.entry);
    this.stream = new ReadableStream<Uint8Array>(
      {
        pull: (controller) => this.pull(controller),
        cancel: () => this.dispose(),
      },
      { highWaterMark: 0 },
    );
  }

  begin(state: DbState, start: Position, sent: bigint, image?: Image): void {
    this.header = encodeFileHeader({
      version: FORMAT_VERSION,
      journalId: state.journalId,
      createdAt: Date.now(),
      baseTxid: start.txid,
      baseChecksum: start.checksum,
    });
    this.image = image;
    this.sent = sent;
    if (state.head.txid > this.knownHead) this.knownHead = state.head.txid;
    if (sent > this.knownHead) this.knownHead = sent;
  }

  /** Ends the stream after what it is sending now (hub shutdown). */
  end(): void {
    this.ended = true;
    this.wake?.();
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.ended = true;
    this.unsubscribe?.();
    if (this.follow) this.ctx.metrics.replicasConnected.dec();
    this.ctx.streams.delete(this.entry);
    void this.disk?.return?.();
    void this.image?.file.close().catch(() => undefined);
    this.image = undefined;
    this.wake?.();
  }

  private send(controller: ReadableStreamDefaultController<Uint8Array>, bytes: Uint8Array): void {
    controller.enqueue(bytes);
    this.ctx.metrics.bytesSent.inc(bytes.length);
    this.lastSend = Date.now();
  }

  private async pull(controller: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
    try {
      await this.step(controller);
    } catch (e) {
      if (e instanceof BeforeBaseError) {
        // A compaction moved the range this reader still needed: it reconnects and is told to reset.
        this.ctx.log.info({ db: this.name, sent: this.sent.toString() }, 'read stream cut by a compaction');
      } else this.ctx.log.warn({ err: e, db: this.name }, 'read stream failed');
      this.dispose();
      try {
        controller.error(e);
      } catch {
        // already cancelled by the reader
      }
    }
  }

  /** Enqueues the next piece of the stream (or closes it). */
  private async step(controller: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
    const m = this.ctx.metrics;
    for (;;) {
      if (this.ended) {
        const cancelled = this.disposed;
        this.dispose();
        if (!cancelled) controller.close();
        return;
      }
      if (this.header) {
        this.send(controller, this.header);
        this.header = undefined;
        return;
      }
      if (this.image) {
        // The image snapshot's length is in its header: never allocate more than what is left of it.
        const want = Math.min(IMAGE_CHUNK, Math.max(0, this.image.header.length - this.imagePos));
        const buf = new Uint8Array(want);
        const { bytesRead } =
          want > 0 ? await this.image.file.read(buf, 0, want, this.imagePos) : { bytesRead: 0 };
        if (bytesRead > 0) {
          this.imagePos += bytesRead;
          this.send(controller, buf.subarray(0, bytesRead));
          return;
        }
        await this.image.file.close();
        this.image = undefined;
        m.snapshotsSent.inc();
        continue;
      }
      if (this.disk) {
        const r = await this.disk.next();
        if (!r.done) {
          this.send(controller, r.value);
          return;
        }
        this.disk = undefined;
        this.sent = this.diskUpTo;
        continue;
      }
      while (this.queue.length > 0 && this.queue[0]!.txid <= this.sent)
        this.queued -= this.queue.shift()!.bytes.length;
      const next = this.queue[0];
      if (next && next.txid === this.sent + 1n) {
        this.queue.shift();
        this.queued -= next.bytes.length;
        this.sent = next.txid;
        m.snapshotsSent.inc();
        m.replicaLag.observe(Number(this.knownHead - next.txid));
        this.send(controller, next.bytes);
        return;
      }
      if (this.knownHead > this.sent) {
        this.diskUpTo = this.knownHead;
        m.snapshotsSent.inc(Number(this.diskUpTo - this.sent));
        if (this.follow) m.replicaLag.observe(Number(this.diskUpTo - this.sent - 1n));
        this.disk = this.ctx.storage.read(this.name, this.sent, this.diskUpTo)[Symbol.asyncIterator]();
        continue;
      }
      if (!this.follow) {
        this.ended = true;
        continue;
      }
      const beat = await this.waitForNews();
      if (beat) {
        this.send(controller, BEAT_BYTES);
        return;
      }
    }
  }

  /** Waits for an append or the end; true when the beat interval passed first. */
  private waitForNews(): Promise<boolean> {
    const due = Math.max(0, this.lastSend + this.ctx.beatMs - Date.now());
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        this.wake = undefined;
        resolve(true);
      }, due);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve(false);
      };
    });
  }
}
