/**
 * Reading from the hub over real HTTP: catch-up from any position, full images, resets, live follow with
 * beats, slow followers, the connection limit and graceful shutdown. A stream's bytes (beats removed) are
 * a valid journal, so they are checked by replaying them, as a replica would.
 */

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HubClient } from '../src/client/hub-client.js';
import { FLAG_FULL_IMAGE, memorySource, type Position, toHex } from '../src/format/index.js';
import { NodeFileSystem } from '../src/node/node-fs.js';
import { EMPTY_POSITION, formatPosition } from '../src/protocol/index.js';
import { replay } from '../src/restore/replay.js';
import {
  concatBytes,
  type History,
  makeHistory,
  StreamItems,
  sampleStatements,
  startTestHub,
  type TestHub,
} from './helpers/hub.js';
import { cleanupTempDirs, fileHash, sha256, tempDir } from './helpers/util.js';

let t: TestHub;
let h: History & { dbPath: string };
let dir: string;
let reader: HubClient;
let writer: HubClient;
let epoch: number;

const pos = (n: number): Position =>
  n === 0
    ? EMPTY_POSITION
    : { txid: h.snapshots[n - 1]!.header.txid, checksum: h.snapshots[n - 1]!.header.postChecksum };
const body = (from: number, to: number): Uint8Array =>
  concatBytes(h.snapshots.slice(from, to).map((s) => s.bytes));
const pushRange = (from: number, to: number) =>
  writer.push(body(from, to), { journalId: h.journalId, base: pos(from), epoch });

/** Replays a stream's bytes (a journal) into a file; returns the file's sha256. */
function replayHash(bytes: Uint8Array[]): string {
  const out = path.join(dir, `replay-${Math.random().toString(36).slice(2)}.db`);
  const fsys = new NodeFileSystem();
  const f = fsys.open(out, { create: true });
  try {
    replay(memorySource(concatBytes(bytes)), f);
  } finally {
    f.close();
  }
  return fileHash(out);
}

before(async () => {
  dir = tempDir();
  h = await makeHistory(path.join(dir, 'a.db'), sampleStatements(12, 2000));
  t = await startTestHub(undefined, { beatMs: 100 });
  writer = new HubClient({ url: t.url, db: 'app', token: await t.token('app', 'writer') });
  reader = new HubClient({ url: t.url, db: 'app', token: await t.token('app', 'reader') });
  epoch = (await writer.takeLease('w', 60_000)).epoch;
  await pushRange(0, 8);
});

after(async () => {
  await t?.close();
  fs.rmSync(t.dir, { recursive: true, force: true });
  cleanupTempDirs();
});

describe('hub: read', () => {
  it('sends the whole history from 0:0 as a journal', async () => {
    const s = new StreamItems(await reader.read({ after: EMPTY_POSITION }));
    const items = await s.rest();
    assert.equal(items[0]!.kind, 'header');
    const header = items[0]!.kind === 'header' ? items[0]!.header : undefined;
    assert.deepEqual([...header!.journalId], [...h.journalId]);
    assert.equal(header!.baseTxid, 0n);
    assert.deepEqual(concatBytes(s.bytes.slice(1)), body(0, 8));
  });

  it('sends the snapshots after a middle position, with that position as the base', async () => {
    const s = new StreamItems(await reader.read({ after: pos(3), journalId: h.journalId }));
    const items = await s.rest();
    const header = items[0]!.kind === 'header' ? items[0]!.header : undefined;
    assert.equal(header!.baseTxid, 3n);
    assert.equal(header!.baseChecksum, pos(3).checksum);
    assert.deepEqual(concatBytes(s.bytes.slice(1)), body(3, 8));
    const atHead = new StreamItems(await reader.read({ after: pos(8), journalId: h.journalId }));
    assert.equal((await atHead.rest()).length, 1, 'only the header at the head');
  });

  it('bootstraps from=image: one full image of the head that replays to the writer database', async () => {
    await pushRange(8, 12);
    const s = new StreamItems(await reader.read({}));
    const items = await s.rest();
    assert.equal(items.length, 2);
    const image = items[1]!;
    assert.ok(image.kind === 'snapshot');
    assert.equal(image.header.flags & FLAG_FULL_IMAGE, FLAG_FULL_IMAGE);
    const head = h.snapshots[11]!.header;
    assert.equal(image.header.txid, head.txid);
    assert.equal(image.header.timestamp, head.timestamp);
    assert.equal(image.header.postChecksum, head.postChecksum);
    assert.equal(image.header.preChecksum, head.preChecksum);
    assert.equal(image.header.commitTag, head.commitTag);
    assert.equal(replayHash(s.bytes), fileHash(h.dbPath), 'image == the writer database');
    // the same image is served again (cached), identical
    const again = new StreamItems(await reader.read({}));
    await again.rest();
    assert.equal(sha256(concatBytes(again.bytes.slice(1))), sha256(concatBytes(s.bytes.slice(1))));
  });

  it('answers 409 reset to positions not in its history, and 404 to unknown databases', async () => {
    const wrongSum = { txid: 3n, checksum: pos(3).checksum ^ 1n };
    const otherId = new Uint8Array(16).fill(7);
    for (const [after, journalId, what] of [
      [wrongSum, h.journalId, 'checksum'],
      [pos(3), otherId, 'journal id'],
      [{ txid: 99n, checksum: 5n }, h.journalId, 'past the head'],
    ] as const) {
      await assert.rejects(
        reader.read({ after, journalId }),
        (e: { status: number; code: string; body: { head: unknown } }) => {
          assert.equal(e.status, 409, what);
          assert.equal(e.code, 'reset', what);
          assert.deepEqual(e.body.head, { txid: '12', checksum: formatPosition(pos(12)).split(':')[1] });
          return true;
        },
      );
    }
    const nobody = new HubClient({ url: t.url, db: 'nobody', token: await t.token('nobody', 'reader') });
    await assert.rejects(nobody.read({}), (e: { status: number }) => e.status === 404);
    assert.equal(await nobody.state(), undefined);
    const bad = await fetch(`${t.url}/v1/db/app/snapshots?after=3`, {
      headers: { authorization: `Bearer ${reader.target.token}` },
    });
    assert.equal(bad.status, 400);
    const noJournal = await fetch(`${t.url}/v1/db/app/snapshots?after=${formatPosition(pos(3))}`, {
      headers: { authorization: `Bearer ${reader.target.token}` },
    });
    assert.equal(noJournal.status, 400);
  });
});

describe('hub: follow', () => {
  it('delivers new pushes live on an open stream, with beats in silences', async () => {
    const h2 = await makeHistory(path.join(dir, 'live.db'), sampleStatements(6));
    const w = new HubClient({ url: t.url, db: 'live', token: await t.token('live', 'writer') });
    const r = new HubClient({ url: t.url, db: 'live', token: await t.token('live', 'reader') });
    const e = (await w.takeLease('w')).epoch;
    const p = (n: number): Position =>
      n === 0 ? EMPTY_POSITION : { txid: BigInt(n), checksum: h2.snapshots[n - 1]!.header.postChecksum };
    await w.push(h2.snapshots[0]!.bytes, { journalId: h2.journalId, base: p(0), epoch: e });
    const s = new StreamItems(await r.read({ after: p(1), journalId: h2.journalId, follow: true }));
    assert.equal((await s.next())?.kind, 'header');
    // silence: beats only
    while (s.beats < 2) assert.equal((await s.next())?.kind, 'beat');
    for (let n = 1; n < 6; n++) {
      await w.push(h2.snapshots[n]!.bytes, { journalId: h2.journalId, base: p(n), epoch: e });
      const got = await s.until(BigInt(n + 1));
      assert.deepEqual(got.at(-1)!.bytes, h2.snapshots[n]!.bytes);
    }
    const metrics = await t.hub.metrics();
    assert.match(metrics, /mycelite_replicas_connected 1/);
    await s.cancel();
    assert.deepEqual(concatBytes(s.bytes.slice(1)), concatBytes(h2.snapshots.slice(1).map((x) => x.bytes)));
    // the hub notices the reader went away
    while (!/mycelite_replicas_connected 0/.test(await t.hub.metrics()))
      await new Promise((r) => setTimeout(r, 10));
  });

  it('catches a slow follower up from storage without losing or repeating a snapshot', async () => {
    const slow = await startTestHub(undefined, { followQueueLimit: 4096, beatMs: 60_000 });
    try {
      const w = new HubClient({ url: slow.url, db: 'app', token: await slow.token('app', 'writer') });
      const r = new HubClient({ url: slow.url, db: 'app', token: await slow.token('app', 'reader') });
      const e = (await w.takeLease('w')).epoch;
      await w.push(body(0, 1), { journalId: h.journalId, base: pos(0), epoch: e });
      const stream = await r.read({ after: pos(1), journalId: h.journalId, follow: true });
      // nobody reads the stream while 11 snapshots (far more than 4 KiB) arrive one by one
      for (let n = 1; n < 12; n++)
        await w.push(body(n, n + 1), { journalId: h.journalId, base: pos(n), epoch: e });
      const s = new StreamItems(stream);
      const got = await s.until(12n);
      assert.deepEqual(
        got.map((x) => x.header.txid),
        Array.from({ length: 11 }, (_, i) => BigInt(i + 2)),
      );
      assert.deepEqual(concatBytes(got.map((x) => x.bytes)), body(1, 12));
      await s.cancel();
    } finally {
      await slow.close();
    }
  });

  it('follows from an image and then live', async () => {
    const s = new StreamItems(await reader.read({ follow: true }));
    const first = await s.until(12n);
    assert.equal(first.length, 1);
    assert.equal(replayHash(s.bytes), fileHash(h.dbPath));
    await s.cancel();
  });
});

describe('hub: limits and shutdown', () => {
  it('answers 503 past its connection limit', async () => {
    const small = await startTestHub(undefined, { maxConnections: 2 });
    try {
      const w = new HubClient({ url: small.url, db: 'app', token: await small.token('app', 'writer') });
      const r = new HubClient({ url: small.url, db: 'app', token: await small.token('app', 'reader') });
      const e = (await w.takeLease('w')).epoch;
      await w.push(body(0, 2), { journalId: h.journalId, base: pos(0), epoch: e });
      const a = await r.read({ after: pos(2), journalId: h.journalId, follow: true });
      const b = await r.read({ after: pos(2), journalId: h.journalId, follow: true });
      const res = await fetch(`${small.url}/v1/db/app`, {
        headers: { authorization: `Bearer ${r.target.token}` },
      });
      assert.equal(res.status, 503);
      assert.equal(res.headers.get('retry-after'), '1');
      assert.equal(((await res.json()) as { error: string }).error, 'unavailable');
      await a.cancel();
      await b.cancel();
    } finally {
      await small.close();
    }
  });

  it('closes gracefully: follow streams end, nothing acknowledged is lost, a restart serves it all', async () => {
    const g = await startTestHub();
    const w = new HubClient({ url: g.url, db: 'app', token: await g.token('app', 'writer') });
    const r = new HubClient({ url: g.url, db: 'app', token: await g.token('app', 'reader') });
    const e = (await w.takeLease('w')).epoch;
    await w.push(body(0, 4), { journalId: h.journalId, base: pos(0), epoch: e });
    const s = new StreamItems(await r.read({ after: pos(4), journalId: h.journalId, follow: true }));
    assert.equal((await s.next())?.kind, 'header');
    const pushes = [w.push(body(4, 6), { journalId: h.journalId, base: pos(4), epoch: e })];
    const acked = await Promise.allSettled(pushes);
    const closing = g.close();
    await s.rest(); // the follow stream ends
    await closing;
    await assert.rejects(fetch(`${g.url}/healthz`));
    const again = await startTestHub(g.dir);
    try {
      const state = await new HubClient({
        url: again.url,
        db: 'app',
        token: await again.token('app', 'reader'),
      }).state();
      const want = acked[0]!.status === 'fulfilled' ? 6n : 4n;
      assert.equal(state?.head.txid, want);
      assert.equal(toHex(state!.journalId), toHex(h.journalId));
    } finally {
      await again.close();
      fs.rmSync(g.dir, { recursive: true, force: true });
    }
  });
});
