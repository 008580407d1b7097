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
export function publishExpecting(
  js: JetStreamClient,
  ms: number,
  what: string,
  p: ExpectingPublish,
): Promise<PubAck | undefined> {
  return retry(ms, what, (attempt) =>
    js
      .publish(p.subject, p.data, {
        msgID: p.msgID,
        headers: p.headers,
        timeout: attemptMs(attempt),
        expect: { lastSequence: p.lastSequence, streamName: p.stream },
      })
      .catch((e: unknown) => {
        if (isWrongSequence(e)) return undefined;
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
 * Publishes `parts` in a row, the first expecting `lastSequence` as the stream's last sequence and each
 * next one the part before it. The last part's sequence, or how many parts were stored before another
 * publish came first.
 */
export async function publishParts(
  js: JetStreamClient,
  ms: number,
  what: string,
  record: PartsRecord,
  parts: Uint8Array[],
  lastSequence: number,
): Promise<{ seq: number } | { cutAfter: number }> {
  let expected = lastSequence;
  for (const [i, data] of parts.entries()) {
    const h = headers();
    h.set(HDR_APPEND, record.key);
    h.set(HDR_PART, `${i + 1}/${parts.length}`);
    h.set(HDR_JOURNAL, record.journal);
    h.set(HDR_BASE, formatPosition(record.base));
    if (record.checkpoint !== undefined) h.set(HDR_CHECKPOINT, String(record.checkpoint));
    if (record.history !== undefined) h.set(HDR_HISTORY, record.history);
    if (record.mode !== undefined) h.set(HDR_MODE, record.mode);
    const ack = await publishExpecting(js, ms, what, {
      subject: record.subject,
      data,
      stream: record.stream,
      lastSequence: expected,
      msgID: `${record.msgPrefix}/${i + 1}`,
      headers: h,
    });
    if (!ack) return { cutAfter: i };
    expected = ack.seq;
  }
  return { seq: expected };
}
