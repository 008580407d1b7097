/**
 * The hub over real HTTP on loopback: auth, names, limits, push validation, idempotence, ordering and
 * the write lease. Snapshots are real ones from the real writer. Every refusal is checked to leave the
 * stored journal unchanged.
 */

import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import { HubClient } from '../src/client/hub-client.js';
import type { Position } from '../src/format/index.js';
import { toHex } from '../src/format/index.js';
import {
  CONTENT_TYPE_SNAPSHOTS,
  EMPTY_POSITION,
  formatPosition,
  HEADER_BASE,
  HEADER_EPOCH,
  HEADER_JOURNAL,
  HEADER_MODE,
} from '../src/protocol/index.js';
import {
  concatBytes,
  type History,
  makeHistory,
  sampleStatements,
  startTestHub,
  TestClock,
  type TestHub,
} from './helpers/hub.js';
import { cleanupTempDirs, sha256, tempDir } from './helpers/util.js';

const LIMIT = 24 * 1024;
let t: TestHub;
/** The hub's clock: leases expire when a test moves it. */
const clock = new TestClock();
let h: History;
let other: History;
let wt: string;
let rt: string;
let epoch: number;

const pos = (h: History, n: number): Position =>
  n === 0
    ? EMPTY_POSITION
    : { txid: h.snapshots[n - 1]!.header.txid, checksum: h.snapshots[n - 1]!.header.postChecksum };
const body = (h: History, from: number, to: number): Uint8Array =>
  concatBytes(h.snapshots.slice(from, to).map((s) => s.bytes));

/** A push by fetch, with every header under the test's control; returns status and JSON. */
async function push(opts: {
  db?: string;
  token?: string | null;
  base: Position;
  bytes: Uint8Array;
  journal?: Uint8Array;
  epoch?: number;
  /** Mycelite-Mode; none: as a client from before modes. */
  mode?: string;
}): Promise<{ status: number; json: Record<string, unknown> }> {
  const headers: Record<string, string> = {
    'content-type': CONTENT_TYPE_SNAPSHOTS,
    [HEADER_JOURNAL]: toHex(opts.journal ?? h.journalId),
    [HEADER_BASE]: formatPosition(opts.base),
    [HEADER_EPOCH]: String(opts.epoch ?? epoch),
  };
  if (opts.token !== null) headers.authorization = `Bearer ${opts.token ?? wt}`;
  if (opts.mode !== undefined) headers[HEADER_MODE] = opts.mode;
  const res = await fetch(`${t.url}/v1/db/${opts.db ?? 'app'}/snapshots`, {
    method: 'POST',
    headers,
    body: opts.bytes as Uint8Array<ArrayBuffer>,
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/** sha256 of the stored journal of `db` (or 'none'). */
function stored(db = 'app'): string {
  const f = path.join(t.dir, 'dbs', db, 'journal');
  return fs.existsSync(f) ? sha256(fs.readFileSync(f)) : 'none';
}

/** A raw HTTP request (no URL normalization), for paths fetch would rewrite. */
function raw(
  method: string,
  p: string,
  headers: Record<string, string | number>,
  send?: Uint8Array | 'chunked' | 'none',
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: t.port, method, path: p, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, text }));
    });
    req.on('error', reject);
    if (send === 'chunked') req.write('SNAP');
    else if (send instanceof Uint8Array) req.write(send);
    if (send !== 'none') req.end();
    else req.flushHeaders();
  });
}

before(async () => {
  const dir = tempDir();
  h = await makeHistory(path.join(dir, 'a.db'), sampleStatements(10, 3000));
  other = await makeHistory(path.join(dir, 'b.db'), sampleStatements(3));
  t = await startTestHub(undefined, { maxBody: LIMIT, now: clock.now });
  wt = await t.token('app', 'writer');
  rt = await t.token('app', 'reader');
  epoch = (await new HubClient({ url: t.url, db: 'app', token: wt }).takeLease('w1', 60_000)).epoch;
  const first = await push({ base: EMPTY_POSITION, bytes: body(h, 0, 3) });
  assert.equal(first.status, 200);
  assert.deepEqual(first.json, {
    head: { txid: '3', checksum: formatPosition(pos(h, 3)).split(':')[1] },
    appended: 3,
    skipped: 0,
  });
});

after(async () => {
  await t?.close();
  fs.rmSync(t.dir, { recursive: true, force: true });
  cleanupTempDirs();
});

describe('hub: health and metrics', () => {
  it('answers /healthz and /metrics without a token, and metrics name no database', async () => {
    const health = await fetch(`${t.url}/healthz`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { ok: true, storage: 'ready' });
    assert.deepEqual(await (await fetch(`${t.url}/readyz`)).json(), { ok: true, storage: 'ready' });
    assert.deepEqual(await (await fetch(`${t.url}/livez`)).json(), { ok: true });
    const text = await (await fetch(`${t.url}/metrics`)).text();
    for (const m of [
      'mycelite_databases 1',
      'mycelite_snapshots_received_total 3',
      'mycelite_replicas_connected 0',
      'mycelite_storage_ready 1',
    ]) {
      assert.ok(text.includes(m), `metrics lack ${m}`);
    }
    assert.match(text, /mycelite_bytes_received_total \d+/);
    assert.match(text, /mycelite_replica_lag_snapshots_bucket/);
    assert.match(text, /process_cpu_user_seconds_total/);
    assert.ok(!text.includes('"app"') && !text.includes('db="'), 'no database names in metrics');
  });
});

describe('hub: auth', () => {
  it('refuses pushes without a valid writer token for this database, storing nothing', async () => {
    const before = stored();
    const expired = await t.token('app', 'writer', -1);
    const badSig = await new SignJWT({ db: 'app', role: 'writer' })
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime('1h')
      .sign(crypto.randomBytes(32));
    const b64 = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
    const algNone = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ db: 'app', role: 'writer', exp: 9999999999 })}.`;
    const noExp = await new SignJWT({ db: 'app', role: 'writer' })
      .setProtectedHeader({ alg: 'HS256' })
      .sign(t.key);
    const cases: [string | null, number, string][] = [
      [null, 401, 'no token'],
      ['not-a-jwt', 401, 'garbage'],
      [expired, 401, 'expired'],
      [badSig, 401, 'bad signature'],
      [algNone, 401, 'alg none'],
      [noExp, 401, 'no exp'],
      [await t.token('other', 'writer'), 403, 'other database'],
      [rt, 403, 'reader pushing'],
    ];
    for (const [token, status, what] of cases) {
      const r = await push({ token, base: pos(h, 3), bytes: body(h, 3, 4) });
      assert.equal(r.status, status, what);
      assert.equal(r.json.error, status === 401 ? 'unauthorized' : 'forbidden', what);
      assert.ok(!String(r.json.message).includes(String(token)), 'the token is not echoed');
    }
    assert.equal(stored(), before);
    // reads and the lease need tokens too
    const state = await fetch(`${t.url}/v1/db/app`);
    assert.equal(state.status, 401);
    const stream = await fetch(`${t.url}/v1/db/app/snapshots?from=image`, {
      headers: { authorization: `Bearer ${await t.token('other', 'reader')}` },
    });
    assert.equal(stream.status, 403);
    const lease = await fetch(`${t.url}/v1/db/app/lease`, {
      method: 'POST',
      headers: { authorization: `Bearer ${rt}`, 'content-type': 'application/json' },
      body: JSON.stringify({ holder: 'r' }),
    });
    assert.equal(lease.status, 403);
    const ok = await new HubClient({ url: t.url, db: 'app', token: rt }).state();
    assert.equal(ok?.head.txid, 3n);
  });
});

describe('hub: names', () => {
  it('refuses traversal, NUL, slashes and over-long names with 400 bad_name, touching nothing', async () => {
    const before = fs.readdirSync(path.join(t.dir, 'dbs')).sort();
    for (const name of ['..', '%2e%2e', '..%2F..%2Fetc', 'a%00b', 'a%2Fb', 'x'.repeat(129), '.x', '-x']) {
      for (const [method, suffix] of [
        ['GET', ''],
        ['POST', '/snapshots'],
        ['GET', '/snapshots?from=image'],
      ] as const) {
        const r = await raw(method, `/v1/db/${name}${suffix}`, {
          authorization: `Bearer ${wt}`,
          'content-length': 0,
        });
        assert.equal(r.status, 400, `${method} ${name}${suffix}: ${r.text}`);
        assert.equal(JSON.parse(r.text).error, 'bad_name');
      }
    }
    assert.deepEqual(fs.readdirSync(path.join(t.dir, 'dbs')).sort(), before);
  });
});

describe('hub: push bodies', () => {
  it('answers 413 for a declared Content-Length over the limit, before reading the body', async () => {
    const r = await raw(
      'POST',
      '/v1/db/app/snapshots',
      {
        authorization: `Bearer ${wt}`,
        'content-length': LIMIT + 1,
        [HEADER_JOURNAL]: toHex(h.journalId),
        [HEADER_BASE]: formatPosition(pos(h, 3)),
        [HEADER_EPOCH]: epoch,
      },
      'none',
    );
    assert.equal(r.status, 413);
    assert.deepEqual(JSON.parse(r.text).limit, LIMIT);
  });

  it('answers 413 for a real body over the limit, and stores nothing', async () => {
    const before = stored();
    const big = body(h, 3, 10);
    assert.ok(big.length > LIMIT, `test body ${big.length} must exceed ${LIMIT}`);
    const r = await push({ base: pos(h, 3), bytes: big });
    assert.equal(r.status, 413);
    assert.equal(r.json.error, 'too_large');
    assert.equal(stored(), before);
  });

  it('stores nothing from a connection cut mid-body, and takes the same push whole afterwards', async () => {
    const db = 'cut';
    const token = await t.token(db, 'writer');
    const e = (await new HubClient({ url: t.url, db, token }).takeLease('w')).epoch;
    assert.equal(
      (await push({ db, token, epoch: e, base: EMPTY_POSITION, bytes: body(h, 0, 3) })).status,
      200,
    );
    const before = stored(db);
    const bytes = body(h, 3, 5);
    await new Promise<void>((resolve) => {
      const req = http.request({
        host: '127.0.0.1',
        port: t.port,
        method: 'POST',
        path: `/v1/db/${db}/snapshots`,
        headers: {
          authorization: `Bearer ${token}`,
          'content-length': bytes.length,
          [HEADER_JOURNAL]: toHex(h.journalId),
          [HEADER_BASE]: formatPosition(pos(h, 3)),
          [HEADER_EPOCH]: e,
        },
      });
      req.on('error', () => resolve());
      req.on('response', () => resolve());
      req.write(bytes.subarray(0, bytes.length - 100), () => setTimeout(() => req.destroy(), 50));
    });
    // the hub answers other requests meanwhile, and its journal did not move
    const state = await new HubClient({ url: t.url, db, token }).state();
    assert.equal(state?.head.txid, 3n);
    assert.equal(stored(db), before);
    const whole = await push({ db, token, epoch: e, base: pos(h, 3), bytes });
    assert.deepEqual([whole.status, whole.json.appended], [200, 2]);
  });

  it('refuses a chunked upload (no Content-Length) with 400', async () => {
    const r = await raw(
      'POST',
      '/v1/db/app/snapshots',
      { authorization: `Bearer ${wt}`, 'transfer-encoding': 'chunked', [HEADER_EPOCH]: epoch },
      'chunked',
    );
    assert.equal(r.status, 400);
    assert.equal(JSON.parse(r.text).error, 'bad_request');
  });

  it('refuses a corrupted body (one flipped byte) with 400 bad_body and its offset, head unchanged', async () => {
    const before = stored();
    const bytes = body(h, 3, 5).slice();
    const at = h.snapshots[3]!.bytes.length + 100; // inside the second snapshot's body
    bytes[at]! ^= 0x40;
    const r = await push({ base: pos(h, 3), bytes });
    assert.equal(r.status, 400);
    assert.equal(r.json.error, 'bad_body');
    assert.equal(r.json.offset, h.snapshots[3]!.bytes.length);
    assert.equal(stored(), before);
  });

  it('refuses a truncated body with 400 bad_body, head unchanged', async () => {
    const before = stored();
    const bytes = body(h, 3, 5);
    const r = await push({ base: pos(h, 3), bytes: bytes.subarray(0, bytes.length - 10) });
    assert.equal(r.status, 400);
    assert.equal(r.json.error, 'bad_body');
    assert.equal(stored(), before);
  });

  it('refuses a body whose chain does not start at its base with 400', async () => {
    const r = await push({ base: pos(h, 2), bytes: body(h, 3, 4) });
    assert.equal(r.status, 400);
    assert.equal(r.json.error, 'bad_body');
  });

  it('skips snapshots it holds: a duplicate push appends 0, an overlapping one only the new part', async () => {
    const dup = await push({ base: pos(h, 1), bytes: body(h, 1, 3) });
    assert.equal(dup.status, 200);
    assert.deepEqual([dup.json.appended, dup.json.skipped], [0, 2]);
    const overlap = await push({ base: pos(h, 2), bytes: body(h, 2, 5) });
    assert.equal(overlap.status, 200);
    assert.deepEqual([overlap.json.appended, overlap.json.skipped], [2, 1]);
    assert.deepEqual(overlap.json.head, { txid: '5', checksum: formatPosition(pos(h, 5)).split(':')[1] });
    const again = await push({ base: pos(h, 2), bytes: body(h, 2, 5) });
    assert.deepEqual([again.status, again.json.appended, again.json.skipped], [200, 0, 3]);
  });

  it('answers 409 head_mismatch with the head to a push that skips ahead', async () => {
    const before = stored();
    const r = await push({ base: pos(h, 6), bytes: body(h, 6, 7) });
    assert.equal(r.status, 409);
    assert.equal(r.json.error, 'head_mismatch');
    assert.deepEqual(r.json.head, { txid: '5', checksum: formatPosition(pos(h, 5)).split(':')[1] });
    assert.equal(stored(), before);
  });

  it('answers 409 other_history to a push of another journal id', async () => {
    const before = stored();
    const r = await push({ base: EMPTY_POSITION, bytes: body(other, 0, 1), journal: other.journalId });
    assert.equal(r.status, 409);
    assert.equal(r.json.error, 'other_history');
    assert.equal(r.json.journal, toHex(h.journalId));
    assert.equal(stored(), before);
  });

  it('creates a new database from a first push, and refuses one that starts mid-history', async () => {
    const c = new HubClient({ url: t.url, db: 'fresh', token: await t.token('fresh', 'writer') });
    const e = (await c.takeLease('w')).epoch;
    const mid = await push({
      db: 'fresh',
      token: c.target.token,
      base: pos(h, 3),
      bytes: body(h, 3, 4),
      epoch: e,
    });
    assert.equal(mid.status, 409);
    assert.equal(stored('fresh'), 'none');
    const res = await c.push(body(h, 0, 2), { journalId: h.journalId, base: EMPTY_POSITION, epoch: e });
    assert.equal(res.appended, 2);
    assert.equal(
      stored('fresh'),
      sha256(
        concatBytes([
          fs.readFileSync(path.join(t.dir, 'dbs', 'fresh', 'journal')).subarray(0, 64),
          body(h, 0, 2),
        ]),
      ),
    );
  });
});

describe('hub: database modes', () => {
  it('shows the mode in the state: a database created by a client from before modes is single-writer', async () => {
    const res = await fetch(`${t.url}/v1/db/app`, { headers: { authorization: `Bearer ${rt}` } });
    assert.equal(res.status, 200);
    const json = (await res.json()) as Record<string, unknown>;
    assert.deepEqual(Object.keys(json).sort(), ['head', 'journal', 'lease', 'mode', 'name']);
    assert.equal(json.mode, 'single');
    assert.equal((await new HubClient({ url: t.url, db: 'app', token: rt }).state())?.mode, 'single');
  });

  it('creates a shared database from a shared push, and refuses a push of the other mode with 409 other_mode', async () => {
    const db = 'team';
    const token = await t.token(db, 'writer');
    const client = new HubClient({ url: t.url, db, token });
    const e = (await client.takeLease('device-a')).epoch;
    const first = await client.push(body(h, 0, 2), {
      journalId: h.journalId,
      base: EMPTY_POSITION,
      epoch: e,
      mode: 'shared',
    });
    assert.equal(first.appended, 2);
    const state = await new HubClient({ url: t.url, db, token: await t.token(db, 'reader') }).state();
    assert.equal(state?.mode, 'shared');
    const before = stored(db);
    const refusals: [string | undefined, string][] = [
      [undefined, 'a client from before modes'],
      ['single', 'a single writer'],
    ];
    for (const [mode, who] of refusals) {
      const r = await push({ db, token, epoch: e, base: pos(h, 2), bytes: body(h, 2, 3), mode });
      assert.equal(r.status, 409, who);
      assert.equal(r.json.error, 'other_mode', who);
      assert.equal(r.json.mode, 'shared', who);
      assert.match(
        String(r.json.message),
        /^this database is shared \(many devices write it\) and the push came from a single writer: open it with \{ shared: true \} or use `mycelite sync --shared`; nothing was stored$/,
        who,
      );
      assert.equal(stored(db), before, `${who}: nothing stored`);
    }
    // and the other way round: a shared push to a single-writer database
    const appBefore = stored();
    const r = await push({ base: pos(h, 5), bytes: body(h, 5, 6), mode: 'shared' });
    assert.equal(r.status, 409);
    assert.deepEqual([r.json.error, r.json.mode], ['other_mode', 'single']);
    assert.match(
      String(r.json.message),
      /^this database is single-writer and the push came from a shared database: open it without \{ shared: true \}/,
    );
    assert.equal(stored(), appBefore);
    await assert.rejects(
      client.push(body(h, 2, 3), { journalId: h.journalId, base: pos(h, 2), epoch: e }),
      (err: { status: number; code: string }) => err.status === 409 && err.code === 'other_mode',
    );
    // its own mode goes on
    const more = await push({ db, token, epoch: e, base: pos(h, 2), bytes: body(h, 2, 3), mode: 'shared' });
    assert.deepEqual([more.status, more.json.appended], [200, 1]);
    const text = await (await fetch(`${t.url}/metrics`)).text();
    assert.match(text, /mycelite_push_rejected_total\{reason="other_mode"\} 4/);
  });

  it('refuses a malformed Mycelite-Mode with 400, creating nothing', async () => {
    const db = 'badmode';
    const token = await t.token(db, 'writer');
    const e = (await new HubClient({ url: t.url, db, token }).takeLease('w')).epoch;
    for (const mode of ['', 'Shared', 'multi']) {
      const r = await push({ db, token, epoch: e, base: EMPTY_POSITION, bytes: body(h, 0, 1), mode });
      assert.equal(r.status, 400, JSON.stringify(mode));
      assert.equal(r.json.error, 'bad_request');
      assert.match(String(r.json.message), /Mycelite-Mode must be "single" or "shared"/i);
    }
    assert.equal(stored(db), 'none');
  });
});

describe('hub: write lease', () => {
  it('refuses a second holder with 423, fences a stale epoch after takeover, and releases', async () => {
    const db = 'leased';
    const token = await t.token(db, 'writer');
    const a = new HubClient({ url: t.url, db, token });
    const first = await a.takeLease('alice', 1000);
    assert.equal(first.epoch, 1);
    assert.equal((await a.takeLease('alice', 1000)).epoch, 1, 'renewal keeps the epoch');
    await assert.rejects(
      a.takeLease('bob'),
      (e: { status: number; code: string; body: { lease: unknown } }) => {
        assert.equal(e.status, 423);
        assert.equal(e.code, 'lease_held');
        assert.equal((e.body.lease as { epoch: number }).epoch, 1);
        return true;
      },
    );
    await a.push(body(h, 0, 1), { journalId: h.journalId, base: EMPTY_POSITION, epoch: 1 });
    clock.advance(1100); // the lease expires
    const bob = await a.takeLease('bob', 60_000);
    assert.equal(bob.epoch, 2);
    const before = stored(db);
    const stale = await push({ db, token, base: pos(h, 1), bytes: body(h, 1, 2), epoch: 1 });
    assert.equal(stale.status, 409);
    assert.equal(stale.json.error, 'stale_epoch');
    assert.equal((stale.json.lease as { epoch: number }).epoch, 2);
    assert.equal(stored(db), before);
    const state = await fetch(`${t.url}/v1/db/${db}`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(((await state.json()) as { lease: { epoch: number } }).lease.epoch, 2);
    // release: a stale epoch cannot, the holder can; then its epoch no longer pushes
    const del = (e: number) =>
      fetch(`${t.url}/v1/db/${db}/lease?epoch=${e}`, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${token}` },
      });
    assert.equal((await del(1)).status, 409);
    assert.equal((await del(2)).status, 204);
    assert.equal((await del(2)).status, 204, 'releasing twice is fine');
    const after = await push({ db, token, base: pos(h, 1), bytes: body(h, 1, 2), epoch: 2 });
    assert.equal(after.json.error, 'stale_epoch');
    assert.equal((await a.takeLease('carol')).epoch, 3, 'epochs only go up');
  });

  it('fences a push whose lease was taken over during its upload, though the new holder created the database', async () => {
    const db = 'overtaken';
    const token = await t.token(db, 'writer');
    const c = new HubClient({ url: t.url, db, token });
    const alice = await c.takeLease('alice', 1000);
    const leaseFile = path.join(t.dir, 'dbs', db, 'lease.json');
    const expiresAt = (): number =>
      (JSON.parse(fs.readFileSync(leaseFile, 'utf8')) as { expiresAt: number }).expiresAt;
    const taken = expiresAt();
    clock.advance(500); // past a third of the TTL: alice's push renews the lease, which shows it was checked
    const bytes = body(h, 0, 2);
    let req!: http.ClientRequest;
    const answer = new Promise<{ status: number; text: string }>((resolve, reject) => {
      req = http.request(
        {
          host: '127.0.0.1',
          port: t.port,
          method: 'POST',
          path: `/v1/db/${db}/snapshots`,
          headers: {
            authorization: `Bearer ${token}`,
            'content-type': CONTENT_TYPE_SNAPSHOTS,
            'content-length': bytes.length,
            [HEADER_JOURNAL]: toHex(h.journalId),
            [HEADER_BASE]: formatPosition(EMPTY_POSITION),
            [HEADER_EPOCH]: String(alice.epoch),
          },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8').on('data', (d) => (text += d));
          res.on('end', () => resolve({ status: res.statusCode!, text }));
        },
      );
      req.on('error', reject);
    });
    req.write(bytes.subarray(0, 100)); // the headers and a part of the body: the hub checks the lease
    for (const until = Date.now() + 10_000; expiresAt() === taken; ) {
      assert.ok(Date.now() < until, 'the hub renewed the lease of the push under way');
      await new Promise((r) => setTimeout(r, 10));
    }
    clock.advance(1100); // alice's lease expires; bob takes it and creates the database with his history
    const bob = await c.takeLease('bob', 60_000);
    await c.push(body(other, 0, 1), { journalId: other.journalId, base: EMPTY_POSITION, epoch: bob.epoch });
    const before = stored(db);
    req.end(bytes.subarray(100));
    const r = await answer;
    assert.equal(r.status, 409, r.text);
    assert.equal(
      (JSON.parse(r.text) as { error: string }).error,
      'stale_epoch',
      'fenced, not another history',
    );
    assert.equal(stored(db), before);
  });

  it('hands a released lease to the writer that waited for it, for as long as it keeps asking', async () => {
    const db = 'handoff';
    const c = new HubClient({ url: t.url, db, token: await t.token(db, 'writer') });
    const held = (p: Promise<unknown>) => assert.rejects(p, (e: { code: string }) => e.code === 'lease_held');
    const a = await c.takeLease('alice', 60_000, undefined, true);
    await held(c.takeLease('bob', 60_000, undefined, true)); // bob waits: his place is kept
    await held(c.takeLease('carol', 60_000)); // carol does not say she will ask again: no place
    await c.releaseLease(a.epoch);
    await held(c.takeLease('alice', 60_000, undefined, true)); // free, but bob's
    await held(c.takeLease('carol', 60_000));
    const b = await c.takeLease('bob', 60_000);
    assert.equal(b.epoch, a.epoch + 1);
    await held(c.takeLease('alice', 60_000, undefined, true)); // alice waits now
    await c.releaseLease(b.epoch);
    // the lease is alice's to take, until she has not asked for 1.5 s
    await held(c.takeLease('bob', 60_000, undefined, true));
    clock.advance(1600);
    const again = await c.takeLease('bob', 60_000, undefined, true);
    assert.equal(again.epoch, b.epoch + 1, "alice's place lapsed: she stopped asking");
  });

  it('refuses a push without any lease with 409 stale_epoch', async () => {
    const token = await t.token('nolease', 'writer');
    const r = await push({ db: 'nolease', token, base: EMPTY_POSITION, bytes: body(h, 0, 1), epoch: 1 });
    assert.equal(r.status, 409);
    assert.equal(r.json.error, 'stale_epoch');
    assert.equal(stored('nolease'), 'none');
  });

  it('validates the lease request', async () => {
    for (const b of [
      {},
      { holder: '' },
      { holder: 'x'.repeat(65) },
      { holder: 'w', ttlMs: 10 },
      { holder: 'w', ttlMs: 'x' },
      { holder: 'w', wait: 'yes' },
    ]) {
      const r = await fetch(`${t.url}/v1/db/app/lease`, {
        method: 'POST',
        headers: { authorization: `Bearer ${wt}`, 'content-type': 'application/json' },
        body: JSON.stringify(b),
      });
      assert.equal(r.status, 400, JSON.stringify(b));
    }
  });
});

describe('hub: logs', () => {
  it('writes JSON lines for requests and never a token', async () => {
    const lines: string[] = [];
    const logged = await startTestHub(undefined, {
      logLevel: 'debug',
      logDestination: { write: (s: string) => lines.push(s) },
    });
    try {
      const token = await logged.token('app', 'writer');
      await fetch(`${logged.url}/v1/db/app`, { headers: { authorization: `Bearer ${token}` } });
      await fetch(`${logged.url}/v1/db/app/snapshots?after=0:0000000000000000&from=${token}`, {
        headers: { authorization: `Bearer ${token}` },
      });
      await fetch(`${logged.url}/v1/db/app`, { headers: { authorization: `Bearer ${token}x` } });
      const client = new HubClient({ url: logged.url, db: 'app', token });
      const e = (await client.takeLease('w')).epoch;
      await client.push(body(h, 0, 2), {
        journalId: h.journalId,
        base: EMPTY_POSITION,
        epoch: e,
        mode: 'shared',
      });
      await client.push(body(h, 2, 3), { journalId: h.journalId, base: pos(h, 2), epoch: e, mode: 'shared' });
    } finally {
      await logged.close();
      fs.rmSync(logged.dir, { recursive: true, force: true });
    }
    const text = lines.join('');
    const records = lines.map(
      (l) => JSON.parse(l) as { msg: string; status?: number; db?: string; mode?: string; level: number },
    );
    assert.ok(records.some((r) => r.msg === 'request refused' && r.status === 404));
    // A database's creation is told at info level, with its mode; a later push at debug level, with it too.
    const created = records.filter((r) => r.msg === 'database created');
    assert.deepEqual(
      created.map((r) => [r.db, r.mode, r.level]),
      [['app', 'shared', 30]],
    );
    assert.ok(records.some((r) => r.msg === 'push' && r.mode === 'shared' && r.level === 20));
    assert.ok(records.some((r) => r.msg === 'request refused' && r.status === 401));
    assert.ok(!text.includes('eyJ'), 'no token (nor any JWT part) in the logs');
    assert.ok(!/authorization/i.test(text));
  });
});
