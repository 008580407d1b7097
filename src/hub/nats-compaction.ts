/**
 * Compaction of a database's stream on NATS (src/hub/nats-storage.ts): moves the snapshots up to the
 * head − 1 into the compacted history under the retention policy (in a worker thread, from the previous
 * history and the stream), stores that history in the object store (src/hub/nats-history.ts), then the
 * image of the head − 1 as a checkpoint naming it, purges the messages the checkpoint stands for, and
 * removes the histories it replaced. Another hub compacting at the same time wins or loses as a whole.
 */
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { headers, type MsgHdrs } from '@nats-io/transport-node';
import { type SnapshotHeader, toHex } from '../format/index.js';
import type { CompactJob, CompactOutcome } from './compact-worker.js';
import type { compactionSettings } from './compaction.js';
import { buildImageFile, writeStoredJournal } from './image-cache.js';
import type { NatsHistories } from './nats-history.js';
import type { PartsRecord } from './nats-js.js';
import type { DbTail } from './nats-tail.js';
import { HDR_UPLOAD, historyName, splitParts } from './nats-wire.js';
import type { HubStorage } from './storage.js';
import { runJob } from './worker.js';

/** What a compaction uses of the storage it runs in. */
export interface CompactionHost {
  storage: HubStorage;
  settings: ReturnType<typeof compactionSettings>;
  histories: NatsHistories;
  timeoutMs: number;
  partBytes: number;
  /** The database's view. */
  tail(db: string): Promise<DbTail>;
  /** Waits until `tail` holds what its stream holds now; false when there is no stream. */
  catchUp(tail: DbTail): Promise<boolean>;
  /**
   * Publishes a record's parts where `db`'s messages go, the first expecting the view's `lastSeq` (on a
   * shard: the shard's last); the last part's sequence, or how many were stored before another came first.
   */
  publish(
    db: string,
    lastSeq: number,
    what: string,
    record: Omit<PartsRecord, 'subject' | 'stream'>,
    parts: Uint8Array[],
  ): Promise<{ seq: number } | { cutAfter: number }>;
  /**
   * Publishes one message where `db`'s messages go, expecting the view's `lastSeq` (on a shard: the
   * shard's last); its sequence, or undefined when another came first.
   */
  publishOne(
    db: string,
    lastSeq: number,
    what: string,
    msg: { data: Uint8Array; msgID: string; headers: MsgHdrs },
  ): Promise<number | undefined>;
  /** Removes `db`'s messages before sequence `seq`. */
  purge(db: string, seq: number): Promise<void>;
  /** Runs `fn` between the database's appends (the storage's lock of `db`). */
  locked<T>(db: string, fn: () => Promise<T>): Promise<T>;
}

export async function compactStream(h: CompactionHost, db: string): Promise<CompactOutcome | undefined> {
  const c = h.settings;
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'mycelite-nats-checkpoint-'));
  /** The history this compaction stored, until a checkpoint names it (removed if none does). */
  let uploaded: string | undefined;
  try {
    const tail = await h.tail(db);
    if (!(await h.catchUp(tail))) return undefined;
    const state = tail.state();
    if (!state || state.head.txid - state.base.txid < 2n) return undefined;
    const upTo = state.head.txid - 1n;
    const previous = tail.checkpoint?.history;
    const paths: CompactJob['paths'] = {
      journal: path.join(dir, 'journal'),
      history: path.join(dir, 'history'),
      scratch: path.join(dir, 'scratch'),
    };
    const out = path.join(dir, 'image');
    let built: CompactOutcome;
    let header: SnapshotHeader;
    try {
      await writeStoredJournal(h.storage, db, state, upTo, paths.journal);
      if (previous) await h.histories.download(previous, paths.history);
      const job: CompactJob = {
        paths,
        policy: c.retain,
        now: Date.now(),
        upTo,
        checkpointRatio: c.checkpointRatio,
      };
      built = await runJob<CompactOutcome>(
        new URL('./compact-worker.js', import.meta.url),
        job,
        'compaction',
      );
      header = await buildImageFile(h.storage, db, state, upTo, path.join(dir, 'build'), out, paths.journal);
    } catch (e) {
      // Another hub compacted meanwhile (it purged what this one read, or removed the history it
      // read): its compaction stands.
      if ((await h.catchUp(tail)) && tail.base.txid > state.base.txid) return undefined;
      throw e;
    }
    const end = built.end;
    if (!end || end.txid !== upTo || end.checksum !== header.postChecksum)
      throw new Error(`compaction of ${db}: the history ends at ${end?.txid}, not at the checkpoint ${upTo}`);
    const historyBytes = (await fsp.stat(`${paths.history}.tmp`)).size;
    // Announced first (under the database's lock, in the order of its appends): if this hub dies before
    // its checkpoint names the object, the next compaction finds it and removes it.
    const name = historyName(db, upTo);
    if (!(await h.locked(db, () => announce(h, tail, name))))
      throw new Error(`compaction of ${db}: could not announce its history object; retry`);
    uploaded = name;
    await h.histories.upload(name, `${paths.history}.tmp`);
    const image = new Uint8Array(await fsp.readFile(out));
    const swapStart = performance.now();
    const stored = await h.locked(db, () =>
      storeCheckpoint(h, tail, state.journalId, header, image, uploaded!),
    );
    if (!stored) return undefined;
    // Everything before the append holding upTo + 1 is now stood for by the checkpoint.
    const next = tail.at(upTo + 1n);
    if (next) {
      const seq = next.ref.seqs[0]!;
      await h.purge(db, seq);
    }
    if (tail.checkpoint?.history === uploaded) {
      uploaded = undefined; // named by the checkpoint: it stays
      // The histories the checkpoint replaced (the one this compaction started from; another hub's,
      // stored meanwhile) are no longer named by any checkpoint.
      for (const old of new Set([previous, stored.replaced]))
        if (old) await h.histories.remove(old).catch(() => undefined);
    }
    // Objects announced by compactions whose hub died before its checkpoint named them: this checkpoint
    // stands for their txid (a live one's own checkpoint is refused, and it removes its object itself).
    for (const [name, txid] of tail.uploads) {
      if (txid > upTo || name === tail.checkpoint?.history || name === uploaded) continue;
      await h.histories.remove(name).catch(() => undefined);
      tail.uploads.delete(name);
    }
    const outcome: CompactOutcome = {
      ...built,
      bytesBefore: built.bytesBefore,
      bytesAfter: historyBytes + tail.bytes + image.length,
      end: { txid: upTo, checksum: header.postChecksum },
      swapMs: performance.now() - swapStart,
    };
    return outcome;
  } finally {
    if (uploaded) await h.histories.remove(uploaded).catch(() => undefined);
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

/** Publishes the name of the history object a compaction is about to store (HDR_UPLOAD); true once the view holds it. */
async function announce(h: CompactionHost, tail: DbTail, name: string): Promise<boolean> {
  const hd = headers();
  hd.set(HDR_UPLOAD, name);
  for (let attempt = 0; attempt < 5; attempt++) {
    await h.catchUp(tail);
    const msg = { data: new Uint8Array(0), msgID: `${name}/announce`, headers: hd };
    const seq = await h.publishOne(tail.db, tail.lastSeq, `announce the history ${name}`, msg);
    if (seq === undefined) continue; // another message came first: after it
    await tail.waitSeq(seq, h.timeoutMs, `sequence ${seq}`);
    return true;
  }
  return false;
}

/**
 * Publishes `image` as a checkpoint naming the history `history` after the stream's last message, its
 * parts in a row (each expecting the one before, as appends do). Once this hub's view holds it as its
 * base: the history the checkpoint before it named (`replaced`); undefined when it did not get there.
 */
async function storeCheckpoint(
  h: CompactionHost,
  tail: DbTail,
  journalId: Uint8Array,
  header: SnapshotHeader,
  image: Uint8Array,
  history: string,
): Promise<{ replaced: string | undefined } | undefined> {
  const db = tail.db;
  const parts = splitParts(image, h.partBytes);
  const journal = toHex(journalId);
  const record = {
    key: `cp-${header.txid}`,
    journal,
    base: { txid: header.txid - 1n, checksum: header.preChecksum },
    checkpoint: header.txid,
    history,
  };
  for (let attempt = 0; attempt < 5; attempt++) {
    await h.catchUp(tail);
    // another hub did it
    if (tail.base.txid >= header.txid)
      return tail.base.txid === header.txid ? { replaced: undefined } : undefined;
    const replaced = tail.checkpoint?.history;
    const what = `store the checkpoint of ${db}`;
    const msgPrefix = `${db}/${journal}/cp-${header.txid}-${attempt}`;
    const r = await h.publish(db, tail.lastSeq, what, { ...record, msgPrefix }, parts);
    if (!('seq' in r)) continue; // another hub appended meanwhile: start again after it
    await tail.waitSeq(r.seq, h.timeoutMs, `sequence ${r.seq}`);
    return tail.base.txid === header.txid ? { replaced } : undefined;
  }
  return undefined;
}
