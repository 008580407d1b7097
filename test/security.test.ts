// An attacker at the hub. What test/hub-http.test.ts already holds is not repeated here: the push auth
// matrix ("hub: auth"), names with traversal/NUL/129 characters ("hub: names"), too-large and cut bodies
// ("hub: push bodies"), tokens absent from the request logs ("hub: logs"), and the 503 past the limit
// (test/hub-read.test.ts "hub: limits"). This file adds: the auth matrix on every endpoint (state, read,
// follow, lease take and release, push) including a stale writer epoch, with nothing stored; absurdly long
// names; bodies that never end (chunked and slow) and slowloris headers, cut by the server's timeouts;
// hundreds of connections against a small limit (a clear 503, bounded memory, the limit released); and no
// secret — key or token — in a CLI hub's logs even at debug level.

import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import { HubClient } from '../src/client/hub-client.js';
import { toHex } from '../src/format/index.js';
import {
  CONTENT_TYPE_SNAPSHOTS,
  EMPTY_POSITION,
  formatPosition,
  HEADER_BASE,
  HEADER_EPOCH,
  HEADER_JOURNAL,
} from '../src/protocol/index.js';
import {
  concatBytes,
  type History,
  MYCELITE_BIN,
  makeHistory,
  sampleStatements,
  startTestHub,
  TestClock,
  type TestHub,
} from './helpers/hub.js';
import { cleanupTempDirs, sha256, tempDir } from './helpers/util.js';

let t: TestHub;
/** The hub's clock: leases expire when a test moves it. */
const clock = new TestClock();
let h: History;
let writer: string;
let epoch: number;
const procs: ChildProcess[] = [];

const pos = (n: number) =>
  n === 0
    ? EMPTY_POSITION
    : { txid: h.snapshots[n - 1]!.header.txid, checksum: h.snapshots[n - 1]!.header.postChecksum };
const body = (from: number, to: number): Uint8Array =>
  concatBytes(h.snapshots.slice(from, to).map((s) => s.bytes));

/** Everything the hub stores for `app`: journal and lease file. */
function stored(): string {
  const dir = path.join(t.dir, 'dbs', 'app');
  return ['journal', 'lease.json']
    .map((f) => (fs.existsSync(path.join(dir, f)) ? sha256(fs.readFileSync(path.join(dir, f))) : 'none'))
    .join(',');
}

before(async () => {
  h = await makeHistory(path.join(tempDir(), 'a.db'), sampleStatements(6, 500));
  t = await startTestHub(undefined, {
    maxBody: 64 * 1024,
    requestTimeoutMs: 1500,
    headersTimeoutMs: 700,
    now: clock.now,
  });
  writer = await t.token('app', 'writer');
  epoch = (await new HubClient({ url: t.url, db: 'app', token: writer }).takeLease('w1', 600_000)).epoch;
  await new HubClient({ url: t.url, db: 'app', token: writer }).push(body(0, 3), {
    journalId: h.journalId,
    base: pos(0),
    epoch,
  });
});

after(async () => {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  await t?.close();
  fs.rmSync(t.dir, { recursive: true, force: true });
  cleanupTempDirs();
});

describe('security: auth matrix on every endpoint', () => {
  it('refuses every bad token on every endpoint with 401/403 and a JSON error, storing nothing', async () => {
    const b64 = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
    const tokens: [string, string | null, (writerEndpoint: boolean) => number][] = [
      ['no token', null, () => 401],
      ['expired', await t.token('app', 'writer', -1), () => 401],
      [
        'wrong signature',
        await new SignJWT({ db: 'app', role: 'writer' })
          .setProtectedHeader({ alg: 'HS256' })
          .setExpirationTime('1h')
          .sign(crypto.randomBytes(32)),
        () => 401,
      ],
      [
        'alg none',
        `${b64({ alg: 'none' })}.${b64({ db: 'app', role: 'writer', exp: 9_999_999_999 })}.`,
        () => 401,
      ],
      [
        'alg HS512 with the hub key',
        await new SignJWT({ db: 'app', role: 'writer' })
          .setProtectedHeader({ alg: 'HS512' })
          .setExpirationTime('1h')
          .sign(t.key),
        () => 401,
      ],
      ['other database', await t.token('other', 'writer'), () => 403],
      ['reader', await t.token('app', 'reader'), (w) => (w ? 403 : 200)],
    ];
    const pushHeaders = {
      'content-type': CONTENT_TYPE_SNAPSHOTS,
      [HEADER_JOURNAL]: toHex(h.journalId),
      [HEADER_BASE]: formatPosition(pos(3)),
      [HEADER_EPOCH]: String(epoch),
    };
    const endpoints: { what: string; writer: boolean; init: () => RequestInit; path: string }[] = [
      { what: 'state', writer: false, path: '/v1/db/app', init: () => ({}) },
      {
        what: 'read',
        writer: false,
        path: `/v1/db/app/snapshots?after=${formatPosition(pos(1))}&journal=${toHex(h.journalId)}`,
        init: () => ({}),
      },
      { what: 'image', writer: false, path: '/v1/db/app/snapshots?from=image', init: () => ({}) },
      {
        what: 'take lease',
        writer: true,
        path: '/v1/db/app/lease',
        init: () => ({
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: '{"holder":"thief"}',
        }),
      },
      {
        what: 'release lease',
        writer: true,
        path: `/v1/db/app/lease?epoch=${epoch}`,
        init: () => ({ method: 'DELETE' }),
      },
      {
        what: 'push',
        writer: true,
        path: '/v1/db/app/snapshots',
        init: () => ({ method: 'POST', headers: pushHeaders, body: body(3, 4) as Uint8Array<ArrayBuffer> }),
      },
    ];
    const before = stored();
    let checked = 0;
    for (const e of endpoints) {
      for (const [what, token, want] of tokens) {
        const init = e.init();
        const headers = new Headers(init.headers);
        if (token !== null) headers.set('authorization', `Bearer ${token}`);
        const res = await fetch(`${t.url}${e.path}`, { ...init, headers });
        const status = want(e.writer);
        assert.equal(res.status, status, `${e.what} with ${what}`);
        if (status >= 400) {
          const j = (await res.json()) as { error: string; message: string };
          assert.equal(j.error, status === 401 ? 'unauthorized' : 'forbidden', `${e.what} with ${what}`);
          assert.ok(token === null || !j.message.includes(token), 'the token is not echoed');
        } else await res.body?.cancel();
        checked++;
      }
    }
    assert.equal(stored(), before, 'no refused request changed the journal or the lease');
    assert.equal(checked, endpoints.length * tokens.length);
  });

  it('a writer whose lease was taken over (stale epoch) can neither push nor release', async () => {
    const mine = new HubClient({ url: t.url, db: 'fenced', token: await t.token('fenced', 'writer') });
    const first = await mine.takeLease('old', 1000);
    await mine.push(body(0, 1), { journalId: h.journalId, base: pos(0), epoch: first.epoch });
    clock.advance(1100); // the old lease expires
    const next = await mine.takeLease('new', 60_000);
    assert.equal(next.epoch, first.epoch + 1);
    const journal = path.join(t.dir, 'dbs', 'fenced', 'journal');
    const before = sha256(fs.readFileSync(journal));
    await assert.rejects(
      mine.push(body(1, 2), { journalId: h.journalId, base: pos(1), epoch: first.epoch }),
      {
        code: 'stale_epoch',
      },
    );
    await assert.rejects(mine.releaseLease(first.epoch), { code: 'stale_epoch' });
    assert.equal(sha256(fs.readFileSync(journal)), before, 'the stale push stored nothing');
    const st = await mine.state();
    assert.equal(st?.lease?.epoch, next.epoch, 'the new lease stands');
  });
});

/** A raw request over TCP; resolves with what the server sent before it closed (or after `waitMs`). */
function rawTcp(
  send: (s: net.Socket) => void,
  waitMs = 10_000,
): Promise<{ text: string; closed: boolean; ms: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const s = net.connect(t.port, '127.0.0.1');
    let text = '';
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ text, closed: false, ms: Date.now() - started });
    }, waitMs);
    s.on('data', (d) => (text += d.toString('latin1')));
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ text, closed: true, ms: Date.now() - started });
    });
    s.on('error', () => {});
    s.on('connect', () => send(s));
  });
}

describe('security: names, bodies and slow clients', () => {
  it('refuses absurdly long names: 400 bad_name up to the header limit, 431 past it, nothing created', async () => {
    const before = fs.readdirSync(path.join(t.dir, 'dbs')).sort();
    for (const n of [200, 1000, 8000]) {
      const res = await fetch(`${t.url}/v1/db/${'a'.repeat(n)}`, {
        headers: { authorization: `Bearer ${writer}` },
      });
      assert.equal(res.status, 400, `${n} characters`);
      assert.equal(((await res.json()) as { error: string }).error, 'bad_name');
    }
    const huge = await rawTcp((s) =>
      s.write(
        `GET /v1/db/${'a'.repeat(100_000)} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${writer}\r\n\r\n`,
      ),
    );
    assert.match(
      huge.text,
      /^HTTP\/1\.1 431/,
      'a request line over the header limit is refused by the server',
    );
    assert.deepEqual(fs.readdirSync(path.join(t.dir, 'dbs')).sort(), before);
  });

  it('an endless chunked push is refused without reading it; the hub keeps serving', async () => {
    const before = stored();
    const r = await rawTcp((s) => {
      s.write(
        `POST /v1/db/app/snapshots HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${writer}\r\n` +
          `Transfer-Encoding: chunked\r\n${HEADER_JOURNAL}: ${toHex(h.journalId)}\r\n` +
          `${HEADER_BASE}: ${formatPosition(pos(3))}\r\n${HEADER_EPOCH}: ${epoch}\r\n\r\n`,
      );
      const chunk = `4000\r\n${'x'.repeat(0x4000)}\r\n`;
      const timer = setInterval(() => {
        if (!s.destroyed) s.write(chunk);
      }, 5);
      s.on('close', () => clearInterval(timer));
    });
    assert.match(r.text, /^HTTP\/1\.1 400/);
    assert.match(r.text, /chunked uploads are not accepted/);
    assert.ok(r.closed, 'the connection was closed, the endless body not read to its end');
    assert.equal(stored(), before);
    assert.equal((await fetch(`${t.url}/healthz`)).status, 200);
  });

  it('a push body that arrives too slowly is cut by the request timeout, storing nothing', async () => {
    const before = stored();
    const bytes = body(3, 4);
    const r = await rawTcp((s) => {
      s.write(
        `POST /v1/db/app/snapshots HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${writer}\r\n` +
          `Content-Length: ${bytes.length}\r\nContent-Type: ${CONTENT_TYPE_SNAPSHOTS}\r\n` +
          `${HEADER_JOURNAL}: ${toHex(h.journalId)}\r\n${HEADER_BASE}: ${formatPosition(pos(3))}\r\n` +
          `${HEADER_EPOCH}: ${epoch}\r\n\r\n`,
      );
      let at = 0;
      const timer = setInterval(() => {
        if (s.destroyed || at >= bytes.length - 1) return; // never sends the last byte
        s.write(bytes.subarray(at, at + 1));
        at++;
      }, 50);
      s.on('close', () => clearInterval(timer));
    });
    assert.ok(r.closed, 'the server cut the connection');
    assert.equal(stored(), before);
  });

  it('slowloris: headers sent a byte at a time are cut by the headers timeout', async () => {
    const line = `GET /v1/db/app HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${writer}\r\nX-Slow: `;
    const r = await rawTcp((s) => {
      s.write(line);
      const timer = setInterval(() => {
        if (!s.destroyed) s.write('a');
      }, 100);
      s.on('close', () => clearInterval(timer));
    });
    assert.ok(r.closed, 'the server cut the connection');
    assert.doesNotMatch(r.text, /^HTTP\/1\.1 200/);
  });
});

describe('security: many connections', () => {
  it('past the limit every request gets a clear 503; memory stays bounded; the limit is released', async () => {
    const small = await startTestHub(undefined, { maxConnections: 20 });
    try {
      const w = new HubClient({ url: small.url, db: 'app', token: await small.token('app', 'writer') });
      const e = (await w.takeLease('w')).epoch;
      await w.push(body(0, 2), { journalId: h.journalId, base: pos(0), epoch: e });
      const reader = await small.token('app', 'reader');
      const rss = process.memoryUsage().rss;
      const ctl = new AbortController();
      const answers = await Promise.all(
        Array.from({ length: 300 }, () =>
          fetch(
            `${small.url}/v1/db/app/snapshots?after=${formatPosition(pos(2))}&journal=${toHex(h.journalId)}&follow=1`,
            {
              headers: { authorization: `Bearer ${reader}` },
              signal: ctl.signal,
            },
          ),
        ),
      );
      const ok = answers.filter((r) => r.status === 200).length;
      const refused = answers.filter((r) => r.status === 503);
      assert.equal(ok, 20, 'exactly the limit is served');
      assert.equal(refused.length, 280);
      for (const r of refused.slice(0, 5)) {
        assert.equal(r.headers.get('retry-after'), '1');
        assert.equal(((await r.json()) as { error: string }).error, 'unavailable');
      }
      assert.equal((await fetch(`${small.url}/healthz`)).status, 200, '/healthz answers past the limit');
      const grown = (process.memoryUsage().rss - rss) / 2 ** 20;
      assert.ok(grown < 200, `RSS grew ${grown.toFixed(0)} MiB for 300 connections`);
      ctl.abort();
      await Promise.allSettled(answers.map((r) => r.body?.cancel()));
      // The streams are gone: the limit is free again.
      let status = 0;
      for (let i = 0; i < 100 && status !== 200; i++) {
        await new Promise((r) => setTimeout(r, 50));
        status = (await fetch(`${small.url}/v1/db/app`, { headers: { authorization: `Bearer ${reader}` } }))
          .status;
      }
      assert.equal(status, 200);
    } finally {
      await small.close();
    }
  });
});

describe('security: secrets', () => {
  it('a CLI hub at debug level logs neither its key nor any token, whatever the requests carry', async () => {
    const dir = tempDir();
    const { loadOrCreateKey } = await import('../src/hub/auth.js');
    const key = Buffer.from(loadOrCreateKey(dir)).toString('base64url');
    const p = spawn(
      process.execPath,
      [MYCELITE_BIN, 'serve', '--data', dir, '--port', '0', '--log-level', 'trace'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, MYCELITE_HUB_KEY: '' },
      },
    );
    procs.push(p);
    let out = '';
    let err = '';
    p.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    p.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    while (!/listening on (http:\/\/\S+)/.test(out)) await new Promise((r) => setTimeout(r, 20));
    const url = /listening on (http:\/\/\S+)/.exec(out)![1]!;
    const { mintToken } = await import('../src/hub/auth.js');
    const token = await mintToken(loadOrCreateKey(dir), { db: 'app', role: 'writer', ttlSeconds: 60 });
    const other = await mintToken(crypto.randomBytes(32), { db: 'app', role: 'writer', ttlSeconds: 60 });
    const auth = { authorization: `Bearer ${token}` };
    await fetch(`${url}/v1/db/app`, { headers: auth });
    await fetch(`${url}/v1/db/app?token=${token}&key=${key}`, { headers: auth });
    await fetch(`${url}/v1/db/app`, { headers: { authorization: `Bearer ${other}` } });
    await fetch(`${url}/v1/db/app/lease`, {
      method: 'POST',
      headers: auth,
      body: `{"holder":"${token.slice(0, 60)}"}`,
    });
    await fetch(`${url}/v1/db/app/snapshots`, {
      method: 'POST',
      headers: { ...auth, 'content-length': '5' },
      body: 'xxxxx',
    });
    await fetch(`${url}/v1/db/..%2fx`, { headers: auth });
    await fetch(`${url}/metrics`);
    p.kill('SIGTERM');
    await new Promise((r) => p.once('exit', r));
    assert.ok(err.length > 0, 'the hub logged');
    const secrets = {
      key,
      token,
      other,
      signature: token.split('.')[2]!,
      otherSignature: other.split('.')[2]!,
    };
    for (const [what, secret] of Object.entries(secrets)) {
      assert.ok(!err.includes(secret) && !out.includes(secret), `the ${what} is not in the logs`);
    }
    assert.ok(!/eyJ/.test(err), 'no JWT part in the logs');
  });
});
