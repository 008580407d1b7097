/** The HTTP fuzz target (test/helpers/fuzz.ts describes all of them): a hub on loopback and its inputs. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { HubClient } from '../../src/client/hub-client.js';
import { JournalReader, memorySource, toHex } from '../../src/format/index.js';
import {
  CONTENT_TYPE_SNAPSHOTS,
  EMPTY_POSITION,
  ERROR_STATUS,
  type ErrorCode,
  formatPosition,
  HEADER_BASE,
  HEADER_EPOCH,
  HEADER_JOURNAL,
} from '../../src/protocol/index.js';
import { type Corpus, describe, FuzzFailure, headerArb, mutate, mutationsArb } from './fuzz.js';
import { concatBytes, startTestHub, type TestHub } from './hub.js';
import { sha256, tempDir } from './util.js';

export interface HttpRig {
  hub: TestHub;
  writer: string;
  reader: string;
  epoch: number;
  journalHash(): string;
  close(): Promise<void>;
}

/** A hub holding the corpus history's first 4 snapshots, a writer lease, tokens. */
export async function startHttpRig(c: Corpus): Promise<HttpRig> {
  const hub = await startTestHub(tempDir('mycelite-fuzz-hub-'), { maxBody: 64 * 1024 });
  const writer = await hub.token('app', 'writer');
  const reader = await hub.token('app', 'reader');
  const client = new HubClient({ url: hub.url, db: 'app', token: writer });
  const epoch = (await client.takeLease('fuzz', 600_000)).epoch;
  await client.push(concatBytes(c.history.snapshots.slice(0, 4).map((s) => s.bytes)), {
    journalId: c.history.journalId,
    base: EMPTY_POSITION,
    epoch,
  });
  const journal = path.join(hub.dir, 'dbs', 'app', 'journal');
  return {
    hub,
    writer,
    reader,
    epoch,
    journalHash: () => sha256(fs.readFileSync(journal)),
    close: () => hub.close(),
  };
}

export interface HttpCase {
  method: 'GET' | 'POST' | 'DELETE';
  path: string;
  headers: Record<string, string>;
  body?: Uint8Array | string;
}

const nameArb = fc.oneof(
  fc.constant('app'),
  fc.constantFrom(
    '..',
    '%2e%2e',
    'a%00b',
    'a%2Fb',
    '%',
    '%zz',
    '.x',
    '-x',
    'x'.repeat(129),
    'app%20',
    'APP',
    'ap p',
  ),
  fc.string({ maxLength: 140 }).map((s) => encodeURIComponent(s)),
  fc.string({ unit: 'binary', maxLength: 40 }).map((s) => encodeURIComponent(s)),
);

/** Positions, ids and numbers: valid ones, near misses, and junk. */
function fieldArb(c: Corpus, kind: 'pos' | 'journal' | 'epoch'): fc.Arbitrary<string> {
  const good =
    kind === 'pos'
      ? fc.constantFrom(
          formatPosition(EMPTY_POSITION),
          `4:${c.history.snapshots[3]!.header.postChecksum.toString(16).padStart(16, '0')}`,
          `2:${c.history.snapshots[1]!.header.postChecksum.toString(16).padStart(16, '0')}`,
        )
      : kind === 'journal'
        ? fc.constant(toHex(c.history.journalId))
        : fc.constantFrom('1', '2', '0', '-1', '1e3', '9007199254740993', ' 1');
  return fc.oneof(
    good,
    good.chain((g) =>
      fc.tuple(fc.nat(), fc.string({ maxLength: 2 })).map(([at, ch]) => {
        const i = at % Math.max(1, g.length);
        return g.slice(0, i) + ch + g.slice(i + 1);
      }),
    ),
    fc.string({ maxLength: 80 }),
    fc.constantFrom('18446744073709551616:0000000000000000', '-1:0000000000000000', '1:', ':', '0x10:00'),
  );
}

export function httpCaseArb(c: Corpus, rig: HttpRig): fc.Arbitrary<HttpCase> {
  const auth = fc.oneof(
    { weight: 6, arbitrary: fc.constant(`Bearer ${rig.writer}`) },
    { weight: 2, arbitrary: fc.constant(`Bearer ${rig.reader}`) },
    { weight: 1, arbitrary: headerArb(rig.writer) },
  );
  const query = fc
    .record(
      {
        after: fieldArb(c, 'pos'),
        journal: fieldArb(c, 'journal'),
        from: fc.oneof(fc.constant('image'), fc.string({ maxLength: 10 })),
        follow: fc.constantFrom('0', 'true', 'x'),
        epoch: fieldArb(c, 'epoch'),
      },
      { requiredKeys: [] },
    )
    .map((q) => new URLSearchParams(q as Record<string, string>).toString());
  const pushBody = fc.oneof(
    fc
      .tuple(fc.integer({ min: 0, max: 6 }), fc.integer({ min: 1, max: 3 }), mutationsArb)
      .map(([from, n, ms]) =>
        mutate(concatBytes(c.history.snapshots.slice(from, from + n).map((s) => s.bytes)), ms),
      ),
    fc
      .tuple(fc.integer({ min: 0, max: 6 }), fc.integer({ min: 1, max: 3 }))
      .map(([from, n]) => concatBytes(c.history.snapshots.slice(from, from + n).map((s) => s.bytes))),
    fc.uint8Array({ maxLength: 200 }),
  );
  const leaseBody = fc.oneof(
    fc.jsonValue().map((j) => JSON.stringify(j)),
    fc
      .record(
        {
          holder: fc.oneof(fc.string({ maxLength: 70 }), fc.jsonValue()),
          ttlMs: fc.oneof(fc.integer(), fc.double(), fc.jsonValue()),
        },
        { requiredKeys: [] },
      )
      .map((j) => JSON.stringify(j)),
    fc.string({ maxLength: 100 }),
  );
  return fc.oneof(
    fc.record({ name: nameArb, auth }).map(({ name, auth }) => ({
      method: 'GET' as const,
      path: `/v1/db/${name}`,
      headers: { authorization: auth },
    })),
    fc.record({ name: nameArb, auth, q: query }).map(({ name, auth, q }) => ({
      method: 'GET' as const,
      path: `/v1/db/${name}/snapshots?${q}`,
      headers: { authorization: auth },
    })),
    fc
      .record({
        name: nameArb,
        auth,
        base: fieldArb(c, 'pos'),
        journal: fieldArb(c, 'journal'),
        epoch: fc.oneof(fc.constant(String(rig.epoch)), fieldArb(c, 'epoch')),
        body: pushBody,
      })
      .map(({ name, auth, base, journal, epoch, body }) => ({
        method: 'POST' as const,
        path: `/v1/db/${name}/snapshots`,
        headers: {
          authorization: auth,
          'content-type': CONTENT_TYPE_SNAPSHOTS,
          [HEADER_BASE]: base,
          [HEADER_JOURNAL]: journal,
          [HEADER_EPOCH]: epoch,
        },
        body,
      })),
    fc.record({ name: nameArb, auth, body: leaseBody }).map(({ name, auth, body }) => ({
      method: 'POST' as const,
      path: `/v1/db/${name}/lease`,
      headers: { authorization: auth, 'content-type': 'application/json' },
      body,
    })),
    fc.record({ name: nameArb, auth, q: query }).map(({ name, auth, q }) => ({
      method: 'DELETE' as const,
      path: `/v1/db/${name}/lease?${q}`,
      headers: { authorization: auth },
    })),
  );
}

const HEADER_SAFE = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * Sends one case; throws FuzzFailure on a 5xx, a 4xx without a proper JSON error body, or a stored journal
 * that changed into something that is not the history (a push that is 200 must be a real continuation).
 */
export async function checkHttp(c: Corpus, rig: HttpRig, hc: HttpCase): Promise<number> {
  // fetch refuses header values no server would see; those are not inputs of the hub.
  for (const v of Object.values(hc.headers)) if (!HEADER_SAFE.test(v)) return 0;
  const before = rig.journalHash();
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 5_000);
  let status = 0;
  let text = '';
  try {
    const res = await fetch(`${rig.hub.url}${hc.path}`, {
      method: hc.method,
      headers: hc.headers,
      body: hc.body as BodyInit | undefined,
      signal: ctl.signal,
    });
    status = res.status;
    if (status >= 400) text = await res.text();
    else await res.body?.cancel();
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw new FuzzFailure('http', 'no answer within 5 s', hc);
    if (/Invalid|invalid/.test((e as Error).message) && !(e as { cause?: unknown }).cause) return 0;
    throw new FuzzFailure(
      'http',
      `request failed: ${describe(e)} ${describe((e as { cause?: unknown }).cause)}`,
      hc,
    );
  } finally {
    clearTimeout(timer);
  }
  if (status >= 500) throw new FuzzFailure('http', `status ${status}: ${text.slice(0, 300)}`, hc);
  if (status >= 400) {
    let j: { error?: unknown; message?: unknown };
    try {
      j = JSON.parse(text) as typeof j;
    } catch {
      throw new FuzzFailure('http', `status ${status} without a JSON body: ${text.slice(0, 200)}`, hc);
    }
    if (typeof j.error !== 'string' || typeof j.message !== 'string')
      throw new FuzzFailure('http', `status ${status}: error body ${text.slice(0, 200)}`, hc);
    if (ERROR_STATUS[j.error as ErrorCode] !== status)
      throw new FuzzFailure('http', `status ${status} with error ${j.error}`, hc);
  }
  const after = rig.journalHash();
  if (after !== before) {
    // Only a valid continuation may change it: the stored journal must hold original snapshots only.
    const stored = new Uint8Array(fs.readFileSync(path.join(rig.hub.dir, 'dbs', 'app', 'journal')));
    const r = new JournalReader(memorySource(stored), { verify: true });
    for (const s of r.snapshots()) {
      if (!c.snapshotHashes.has(sha256(stored.subarray(s.offset, s.offset + s.length))))
        throw new FuzzFailure(
          'http',
          `the hub stored a snapshot that is not an original (txid ${s.txid})`,
          hc,
        );
    }
    if (status !== 200) throw new FuzzFailure('http', `status ${status} but the stored journal changed`, hc);
  }
  return status;
}
