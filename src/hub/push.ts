/**
 * `POST /v1/db/{name}/snapshots` (docs/PROTOCOL.md, "push"): checks in the protocol's order, and stores
 * nothing unless the whole body arrived and validated and it continues the hub's head.
 */

import type { Context } from 'hono';
import {
  FLAG_FULL_IMAGE,
  JournalFormatError,
  type Position,
  sameBytes,
  samePosition,
  toHex,
} from '../format/index.js';
import {
  type DbMode,
  describeMode,
  EMPTY_POSITION,
  type EncodedSnapshot,
  HEADER_BASE,
  HEADER_EPOCH,
  HEADER_JOURNAL,
  HEADER_MODE,
  HubError,
  otherModeAdvice,
  parseJournalId,
  parseMode,
  parsePosition,
  StreamParser,
  toJsonPosition,
} from '../protocol/index.js';
import { authorizeName, badRequest, type HubContext } from './context.js';
import { checkAndRenew, checkEpoch } from './lease.js';
import type { PushRejectReason } from './metrics.js';
import type { DbState } from './storage.js';

export async function handlePush(ctx: HubContext, c: Context): Promise<Response> {
  try {
    return await push(ctx, c);
  } catch (e) {
    const reason = (e instanceof HubError ? e.code : 'error') as PushRejectReason;
    ctx.metrics.pushRejected.inc({ reason });
    throw e;
  }
}

async function push(ctx: HubContext, c: Context): Promise<Response> {
  const name = await authorizeName(ctx, c, 'writer');
  // 1. size, before reading anything
  const declared = c.req.header('content-length');
  if (declared === undefined || !/^\d+$/.test(declared)) {
    throw new HubError({
      error: declared === undefined ? 'bad_request' : 'bad_request',
      message: 'a push needs a Content-Length header (chunked uploads are not accepted)',
    });
  }
  const length = Number(declared);
  if (length > ctx.maxBody) throw tooLarge(ctx.maxBody, length);
  if (length === 0) throw badRequest('the push body is empty: send one or more snapshots');
  const journalId = parseJournalId(c.req.header(HEADER_JOURNAL));
  if (!journalId)
    throw badRequest(`header ${HEADER_JOURNAL} must be the journal id (32 lowercase hex digits)`);
  const base = parsePosition(c.req.header(HEADER_BASE));
  if (!base) throw badRequest(`header ${HEADER_BASE} must be a position TXID:CHECKSUM (16 hex digits)`);
  const epoch = Number(c.req.header(HEADER_EPOCH));
  if (!Number.isSafeInteger(epoch) || epoch < 1)
    throw badRequest(`header ${HEADER_EPOCH} must be the lease epoch`);
  const mode = parseMode(c.req.header(HEADER_MODE));
  if (!mode) throw badRequest(`header ${HEADER_MODE} must be "single" or "shared" (absent: single)`);
  // 2. the lease (a push renews it)
  await checkAndRenew(ctx.storage, name, epoch, ctx.now);
  // 3. the whole body, validated
  const snapshots = await readBody(c, base, length, ctx.maxBody);
  ctx.metrics.bytesReceived.inc(length);
  // 4. mode and history; a pusher whose lease was taken over while its body uploaded is fenced first:
  // what the new holder made of the database (created it with another history) is not its refusal
  const state = await ctx.storage.state(name);
  if (state && (state.mode !== mode || !sameBytes(state.journalId, journalId)))
    await checkEpoch(ctx.storage, name, epoch);
  if (state && state.mode !== mode) throw otherMode(state, mode);
  if (state && !sameBytes(state.journalId, journalId)) throw otherHistory(state);
  // 5. idempotence: skip what the hub holds already
  if (!state) {
    // A new database: the history starts at the body's base, from the empty database or a full image.
    if (!samePosition(base, EMPTY_POSITION) && (snapshots[0]!.header.flags & FLAG_FULL_IMAGE) === 0) {
      throw headMismatch(
        EMPTY_POSITION,
        'a new database must start at txid 1 from the empty database, or with a full image',
      );
    }
    return append(ctx, c, { name, epoch, journalId, mode, creating: true }, base, snapshots, 0);
  }
  const head = state.head;
  let skipped = 0;
  while (skipped < snapshots.length && snapshots[skipped]!.header.txid <= head.txid) {
    const h = snapshots[skipped]!.header;
    const stored = await ctx.storage.snapshotAt(name, h.txid);
    if (stored && stored.postChecksum !== h.postChecksum) {
      throw headMismatch(head, `its snapshot ${h.txid} differs from the hub's`);
    }
    skipped++;
  }
  const rest = snapshots.slice(skipped);
  if (rest.length === 0) return c.json({ head: toJsonPosition(head), appended: 0, skipped });
  const first = rest[0]!.header;
  if (first.txid !== head.txid + 1n || first.preChecksum !== head.checksum) {
    throw headMismatch(head, `the push starts after ${first.txid - 1n}`);
  }
  return append(ctx, c, { name, epoch, journalId, mode, creating: false }, head, rest, skipped);
}

/** Who pushes: the database, the pusher's lease epoch, its history and its mode; whether it creates it. */
interface Pushing {
  name: string;
  epoch: number;
  journalId: Uint8Array;
  mode: DbMode;
  creating: boolean;
}

async function append(
  ctx: HubContext,
  c: Context,
  { name, epoch, journalId, mode, creating }: Pushing,
  head: Position,
  rest: EncodedSnapshot[],
  skipped: number,
): Promise<Response> {
  // 6. append (durable before the answer), still holding the lease: checked in the storage's order of
  // lease changes, so a lease taken over while this body was uploading fences it
  const result = await ctx.storage.append(
    name,
    head,
    journalId,
    rest,
    () => checkEpoch(ctx.storage, name, epoch),
    mode,
  );
  if (!result.ok) {
    if (result.reason === 'does_not_apply') throw doesNotApply(result.txid, result.message);
    if (result.reason === 'other_mode') throw otherMode(result.state, mode);
    throw result.reason === 'other_history'
      ? otherHistory(result.state)
      : headMismatch(result.state.head, 'another push came first');
  }
  ctx.metrics.snapshotsReceived.inc(rest.length);
  const described = { db: name, mode, head: result.state.head.txid.toString(), appended: rest.length };
  if (creating) ctx.log.info({ ...described, journal: toHex(journalId) }, 'database created');
  else ctx.log.debug(described, 'push');
  return c.json({ head: toJsonPosition(result.state.head), appended: rest.length, skipped });
}

/** Reads and validates the whole body; throws 400 bad_body (with the byte offset) or 413. */
async function readBody(c: Context, base: Position, length: number, max: number): Promise<EncodedSnapshot[]> {
  const body = c.req.raw.body;
  if (!body) throw badRequest('the push has no body');
  const parser = new StreamParser({ stream: false, base, maxSnapshot: max, keepInflated: true });
  const out: EncodedSnapshot[] = [];
  let received = 0;
  const reader = body.getReader();
  try {
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (e) {
        throw badBody(
          `the body was cut after ${received} of ${length} bytes (${(e as Error).message})`,
          received,
        );
      }
      if (chunk.done) break;
      received += chunk.value.length;
      if (received > max) throw tooLarge(max, received);
      for (const item of parser.push(chunk.value)) {
        if (item.kind === 'snapshot')
          out.push({ bytes: item.bytes.slice(), header: item.header, raw: item.raw });
      }
    }
    if (received !== length)
      throw badBody(`the body has ${received} bytes, not the ${length} declared`, received);
    parser.end();
  } catch (e) {
    await reader.cancel().catch(() => undefined);
    if (e instanceof JournalFormatError) throw badBody(e.message, e.offset);
    throw e;
  }
  return out;
}

function badBody(message: string, offset: number): HubError {
  return new HubError({
    error: 'bad_body',
    message: `the push body is not valid snapshots: ${message}`,
    offset,
  });
}

function tooLarge(limit: number, size: number): HubError {
  return new HubError({
    error: 'too_large',
    message: `the push body of ${size} bytes is over this hub's limit of ${limit} bytes; push in smaller batches`,
    limit,
  });
}

function headMismatch(head: Position, why: string): HubError {
  return new HubError({
    error: 'head_mismatch',
    message: `the push does not continue the hub's head ${head.txid} (${why}); read the head and push from there`,
    head: toJsonPosition(head),
  });
}

function doesNotApply(txid: bigint, why: string): HubError {
  return new HubError({
    error: 'does_not_apply',
    message: `snapshot ${txid} does not apply to the hub's copy (${why.replace(/^snapshot \d+ does not apply: /, '')}): the writer's database was changed outside Mycelite, or its journal is damaged; nothing was stored. Run \`mycelite verify\` on the writer's database`,
    txid: txid.toString(),
  });
}

function otherMode(state: DbState, pushed: DbMode): HubError {
  return new HubError({
    error: 'other_mode',
    message: `this database is ${describeMode(state.mode)} and the push came from ${pushed === 'shared' ? 'a shared database' : 'a single writer'}: ${otherModeAdvice(state.mode)}; nothing was stored`,
    mode: state.mode,
  });
}

function otherHistory(state: DbState): HubError {
  return new HubError({
    error: 'other_history',
    message: "the push belongs to another history (journal id) than the hub's copy of this database",
    journal: toHex(state.journalId),
    head: toJsonPosition(state.head),
  });
}
