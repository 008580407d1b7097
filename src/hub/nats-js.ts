/**
 * The JetStream calls NATS storage makes, with the retries and error tests they need: a leader election
 * or a reconnect is retried; a publish that expected another last sequence is "someone came first".
 */

import type { JetStreamClient, JetStreamManager, PubAck, StreamConfig } from '@nats-io/jetstream';
import { headers, type MsgHdrs } from '@nats-io/transport-node';
import type { Position } from '../format/index.js';
import { type DbMode, formatPosition } from '../protocol/index.js';
import {
  HDR_APPEND,
  HDR_BASE,
  HDR_CHECKPOINT,
  HDR_HISTORY,
  HDR_JOURNAL,
  HDR_MODE,
  HDR_PART,
} from './nats-wire.js';
import { StorageUnavailableError } from './storage.js';

/** JetStream's error code for a publish whose expected last sequence is not the stream's. */
const WRONG_LAST_SEQUENCE = 10071;

export function isNotFound(e: unknown): boolean {
  const err = e as { code?: unknown; message?: unknown };
  return err?.code === 10059 || err?.code === 10037 || /not found/i.test(String(err?.message ?? ''));
}

function isWrongSequence(e: unknown): boolean {
  const err = e as { code?: unknown; message?: unknown; api_error?: { err_code?: number } };
  return (
    err?.code === WRONG_LAST_SEQUENCE ||
    err?.api_error?.err_code === WRONG_LAST_SEQUENCE ||
    /wrong last sequence/i.test(String(err?.message ?? ''))
  );
}

/**
 * Timeout of one attempt of a request (ms): short for the first FAST_TRIES attempts, so that a request
 * lost with a dead node (sent on the connection it was on, or to a stream leader that died) is sent
 * again within a second, and a new stream leader is found about a second after its election (which
 * takes nats-server 4-9 s); longer after, for a cluster that is merely slow. Publishes carry a
 * Nats-Msg-Id, so a second try is stored once.
 */
export const FAST_ATTEMPT_MS = 1000;
export const SLOW_ATTEMPT_MS = 5000;
export const FAST_TRIES = 12;

/** The timeout of attempt `attempt` (0 first). */
export function attemptMs(attempt: number): number {
  return attempt < FAST_TRIES ? FAST_ATTEMPT_MS : SLOW_ATTEMPT_MS;
}

/**
 * Runs `fn(attempt)` until it resolves, retrying failures (a leader election, a reconnect) for up to
 * `ms`; then StorageUnavailableError (the hub answers `503 storage_unavailable`). `fn` gives each
 * attempt the timeout `attemptMs(attempt)`.
 */
export async function retry<T>(ms: number, what: string, fn: (attempt: number) => Promise<T>): Promise<T> {
  const deadline = Date.now() + ms;
  for (let wait = 50, attempt = 0; ; wait = Math.min(wait * 2, 1000), attempt++) {
    try {
      return await fn(attempt);
    } catch (e) {
      if (Date.now() + wait > deadline) {
        throw new StorageUnavailableError(`NATS: could not ${what} within ${ms} ms: ${(e as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}

/** Creates a stream unless it exists (another hub may create it at the same time: that is fine). */
export async function ensureStream(
  jsm: JsmAt,
  ms: number,
  config: Partial<StreamConfig> & { name: string },
): Promise<void> {
  await retry(ms, `create the stream ${config.name}`, async (attempt) => {
    const exists = await jsm(attempt)
      .streams.info(config.name)
      .catch((e: unknown) => {
        if (isNotFound(e)) return undefined;
        throw e;
      });
    if (!exists) await jsm(attempt).streams.add(config);
  });
}

/** The JetStream manager for attempt `attempt` of a request (its timeout: attemptMs(attempt)). */
export type JsmAt = (attempt: number) => JetStreamManager;

/** Where a conditional publish goes and what it expects. */
export interface ExpectingPublish {
  subject: string;
  data: Uint8Array | string;
  /** The stream, and the last sequence it must have for the message to be stored. */
  stream: string;
  lastSequence: number;
  msgID?: string;
  headers?: MsgHdrs;
}

/**
 * Publishes `p` only if its stream's last sequence is `p.lastSequence` (retrying failures for up to `ms`):
 * the ack, or undefined when another publish came first.
 */
export async function publishExpecting(
  js: JetStreamClient,
  ms: number,
  what: string,
  p: ExpectingPublish,
): Promise<PubAck | undefined> {
  const r = await publishOrLast(js, ms, what, p);
  return 'seq' in r ? r : undefined;
}

/**
 * Publishes `p` only if its stream's last sequence is `p.lastSequence` (retrying failures for up to `ms`):
 * the ack, or the stream's last sequence when another publish came first (as JetStream's refusal says
 * it; undefined when it does not).
 */
export function publishOrLast(
  js: JetStreamClient,
  ms: number,
  what: string,
  p: ExpectingPublish,
): Promise<PubAck | { last: number | undefined }> {
  return retry(ms, what, (attempt) =>
    js
      .publish(p.subject, p.data, {
        msgID: p.msgID,
        headers: p.headers,
        timeout: attemptMs(attempt),
        expect: { lastSequence: p.lastSequence, streamName: p.stream },
      })
      .catch((e: unknown) => {
        if (isWrongSequence(e)) {
          const m = /wrong last sequence: (\d+)/i.exec(String((e as Error).message));
          return { last: m ? Number(m[1]) : undefined };
        }
        throw e;
      }),
  );
}

/** The servers of `--storage nats://h:p[,h:p…]`, checked. */
export function parseServers(servers: string | string[]): string[] {
  const list = (Array.isArray(servers) ? servers : servers.split(','))
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (list.length === 0) throw new Error('give at least one NATS server, e.g. nats://127.0.0.1:4222');
  for (const s of list) {
    if (!/^(nats|tls):\/\/[^/\s]+$/.test(s) && !/^[^/\s:]+:\d+$/.test(s))
      throw new Error(`cannot read the NATS server ${JSON.stringify(s)}: use nats://host:port`);
  }
  return list;
}

/** A record (an append, or a checkpoint) stored as parts, one message each, in a row. */
export interface PartsRecord {
  subject: string;
  stream: string;
  /** Mycelite-Append: names the record; with the journal, makes each part's message id. */
  key: string;
  /** The journal id, in hex. */
  journal: string;
  /** The position the record continues. */
  base: Position;
  /** Set for a checkpoint: the txid it stands at. */
  checkpoint?: bigint;
  /** For a checkpoint: the object holding the compacted history that ends at it. */
  history?: string;
  /** Set for an append: the database's mode. */
  mode?: DbMode;
  /** Prefix of the parts' message ids (JetStream drops a repeated id: a retried publish stores once). */
  msgPrefix: string;
}

/**
 * What each message of a record expects as its stream's last sequence. On a database's own stream: the
 * message before it (the first: the view's last), and another publish first cuts the record. On a shard
 * stream, where other databases publish too: the shard's last as this hub knows it, moved to the
 * stream's last and sent again when another database's message came first (whether that was one of
 * the same database is for the views to see: they skip an append that does not continue the head).
 */
export interface Expectation {
  /** The last sequence the next message expects. */
  next(): number;
  /** The message was stored at `seq`. */
  stored(seq: number): void;
  /** Another message came first; the stream's last is `last` when known. True: send it again. */
  refused(last: number | undefined): Promise<boolean>;
}

/** The expectation on a database's own stream: each message right after the one before. */
export function inARow(lastSequence: number): Expectation {
  let expected = lastSequence;
  return {
    next: () => expected,
    stored: (seq) => {
      expected = seq;
    },
    refused: async () => false,
  };
}

/** One shard stream's last sequence as this hub knows it (the hub publishes to it one at a time). */
export interface ShardLast {
  last: number;
}

/**
 * The expectation on a shard stream: its last sequence as `shard` knows it, moved when refused (to the
 * stream's last, read with `lastSeq` when the refusal does not say), for up to `ms`.
 */
export function onShard(shard: ShardLast, ms: number, lastSeq: () => Promise<number>): Expectation {
  const deadline = Date.now() + ms;
  return {
    next: () => shard.last,
    stored: (seq) => {
      shard.last = Math.max(shard.last, seq);
    },
    refused: async (last) => {
      if (Date.now() > deadline) return false;
      shard.last = last ?? (await lastSeq());
      return true;
    },
  };
}

/**
 * Publishes `parts` in a row, each expecting the stream's last sequence `expect` gives. The last part's
 * sequence, or how many parts were stored before another publish came first (and `expect` gave up).
 */
export async function publishParts(
  js: JetStreamClient,
  ms: number,
  what: string,
  record: PartsRecord,
  parts: Uint8Array[],
  expect: Expectation,
): Promise<{ seq: number } | { cutAfter: number }> {
  let seq = 0;
  for (const [i, data] of parts.entries()) {
    const h = headers();
    h.set(HDR_APPEND, record.key);
    h.set(HDR_PART, `${i + 1}/${parts.length}`);
    h.set(HDR_JOURNAL, record.journal);
    h.set(HDR_BASE, formatPosition(record.base));
    if (record.checkpoint !== undefined) h.set(HDR_CHECKPOINT, String(record.checkpoint));
    if (record.history !== undefined) h.set(HDR_HISTORY, record.history);
    if (record.mode !== undefined) h.set(HDR_MODE, record.mode);
    const msg = {
      subject: record.subject,
      data,
      stream: record.stream,
      msgID: `${record.msgPrefix}/${i + 1}`,
      headers: h,
    };
    const stored = await publishOne(js, ms, what, msg, expect);
    if (stored === undefined) return { cutAfter: i };
    seq = stored;
  }
  return { seq };
}

/** Publishes one message expecting what `expect` gives: its sequence, or undefined when refused. */
export async function publishOne(
  js: JetStreamClient,
  ms: number,
  what: string,
  msg: Omit<ExpectingPublish, 'lastSequence'>,
  expect: Expectation,
): Promise<number | undefined> {
  for (;;) {
    const r = await publishOrLast(js, ms, what, { ...msg, lastSequence: expect.next() });
    if ('seq' in r) {
      expect.stored(r.seq);
      return r.seq;
    }
    if (!(await expect.refused(r.last))) return undefined;
  }
}
