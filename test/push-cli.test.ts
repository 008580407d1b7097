// `mycelite push` as a user runs it (a child process of bin/mycelite.js) against a real hub: once, with
// --watch while another process writes, and its refusals (reader token, lease held, other history,
// unreachable hub).
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { HubClient } from '../src/client/hub-client.js';
import { type MyceliteDatabase, open } from '../src/node/index.js';
import { runCli } from './helpers/cli.js';
import { MYCELITE_BIN, startTestHub, type TestHub } from './helpers/hub.js';
import { freePort } from './helpers/tcp-proxy.js';
import { cleanupTempDirs, journalEnd, journalOf, tempDir } from './helpers/util.js';

const closers: (() => Promise<void> | void)[] = [];
const children: ChildProcess[] = [];

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const c of closers.reverse()) await c();
  cleanupTempDirs();
});

let shared: TestHub | undefined;
async function hub(): Promise<TestHub> {
  if (!shared) {
    const h = await startTestHub(tempDir('mycelite-hubdata-'));
    closers.push(() => h.close());
    shared = h;
  }
  return shared;
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

async function run(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const r = await runCli(args, { MYCELITE_TOKEN: '', ...env }, (p) => children.push(p));
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A database written through Mycelite (create table + `rows` inserts), then closed. */
async function makeDb(file: string, rows: number): Promise<void> {
  const db = await open(file);
  db.exec('create table if not exists t(a)');
  for (let i = 0; i < rows; i++) db.exec(`insert into t values (${i})`);
  db.close();
}

function hubBody(h: TestHub, name: string): Buffer {
  return fs.readFileSync(path.join(h.dir, 'dbs', name, 'journal')).subarray(64);
}

function localBody(file: string): Buffer {
  // Up to the last snapshot: a live writer keeps zeros written ahead past it.
  return fs.readFileSync(journalOf(file)).subarray(64, journalEnd(journalOf(file)));
}

test('push once: sends the backlog, says how many and the hub txid; again: nothing to push', async () => {
  const h = await hub();
  const file = path.join(tempDir(), 'app.db');
  await makeDb(file, 5);
  const token = await h.token('app', 'writer');
  const args = ['push', file, '--hub', h.url, '--db', 'app', '--token', token];
  const r1 = await run(args);
  assert.equal(r1.code, 0, r1.stderr);
  assert.match(r1.stdout, /^pushed 6 snapshots to app on http:\/\/127\.0\.0\.1:\d+: the hub is at txid 6\n$/);
  assert.ok(hubBody(h, 'app').equals(localBody(file)));
  const r2 = await run(args);
  assert.equal(r2.code, 0, r2.stderr);
  assert.match(r2.stdout, /nothing to push: app on .* is at txid 6/);
  await makeDb(file, 2);
  const r3 = await run(['push', file, '--hub', h.url, '--db', 'app', '--json'], { MYCELITE_TOKEN: token });
  assert.equal(r3.code, 0, r3.stderr);
  assert.deepEqual(JSON.parse(r3.stdout), { pushed: 2, hubTxid: '8', db: 'app' });
  assert.ok(hubBody(h, 'app').equals(localBody(file)));
});

test('push refuses clearly: reader token, other history, unreachable hub, no token', async () => {
  const h = await hub();
  const file = path.join(tempDir(), 'r.db');
  await makeDb(file, 1);
  const reader = await run([
    'push',
    file,
    '--hub',
    h.url,
    '--db',
    'refuse',
    '--token',
    await h.token('refuse', 'reader'),
  ]);
  assert.equal(reader.code, 1);
  assert.match(reader.stderr, /this token is a reader token; pushing needs a writer token \(mycelite token/);
  assert.equal(fs.existsSync(path.join(h.dir, 'dbs', 'refuse')), false, 'hub unchanged');

  // Another database's history under a name that already has one.
  const token = await h.token('hist', 'writer');
  const other = path.join(tempDir(), 'other.db');
  await makeDb(other, 2);
  assert.equal((await run(['push', other, '--hub', h.url, '--db', 'hist', '--token', token])).code, 0);
  const mixed = await run(['push', file, '--hub', h.url, '--db', 'hist', '--token', token]);
  assert.equal(mixed.code, 1);
  assert.match(mixed.stderr, /another history.*two histories never mix/);
  assert.ok(hubBody(h, 'hist').equals(localBody(other)), 'the hub keeps the first history only');

  const port = await freePort();
  const down = await run(['push', file, '--hub', `http://127.0.0.1:${port}`, '--db', 'x', '--token', token]);
  assert.equal(down.code, 1);
  assert.match(down.stderr, /cannot reach the hub at http:\/\/127\.0\.0\.1:\d+/);

  const none = await run(['push', file, '--hub', h.url, '--db', 'x']);
  assert.equal(none.code, 2, 'a missing token is a usage error');
  assert.match(none.stderr, /no token: pass --token or set MYCELITE_TOKEN/);
});

test('push while another writer holds the lease: refused with when it expires', async () => {
  const h = await hub();
  const token = await h.token('held', 'writer');
  const a = await open(path.join(tempDir(), 'a.db'), { hub: { url: h.url, db: 'held', token } });
  closers.push(async () => {
    await a.sync?.close();
    a.close();
  });
  const file = path.join(tempDir(), 'b.db');
  await makeDb(file, 1);
  const r = await run(['push', file, '--hub', h.url, '--db', 'held', '--token', token]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /another writer holds the write lease of database held .*expires at/);
});

async function waitForHub(h: TestHub, name: string, db: MyceliteDatabase, timeoutMs = 20_000): Promise<void> {
  const client = new HubClient({ url: h.url, db: name, token: await h.token(name, 'reader') });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const st = await client.state();
    if (st && st.head.txid === db.position().txid) {
      assert.equal(st.head.checksum, db.position().checksum);
      return;
    }
    if (Date.now() > deadline) throw new Error(`hub at ${st?.head.txid}, local at ${db.position().txid}`);
    await sleep(20);
  }
}

test('push --watch pushes what another process commits, as it commits; once-push works beside a writer too', async () => {
  const h = await hub();
  const token = await h.token('live', 'writer');
  const file = path.join(tempDir(), 'live.db');
  const db = await open(file);
  closers.push(() => {
    if (db.open) db.close();
  });
  db.pragma('busy_timeout = 5000');
  db.exec('create table t(a, b)');
  for (let i = 0; i < 5; i++) db.exec(`insert into t values (${i}, randomblob(100))`);
  // Not --watch: the writer lock is held here, so push reads the journal instead of opening it.
  const once = await run(['push', file, '--hub', h.url, '--db', 'live', '--token', token]);
  assert.equal(once.code, 0, once.stderr);
  assert.match(once.stdout, /pushed 6 snapshots .* txid 6/);

  const proc = spawn(
    process.execPath,
    [MYCELITE_BIN, 'push', file, '--hub', h.url, '--db', 'live', '--watch'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, MYCELITE_TOKEN: token },
    },
  );
  children.push(proc);
  let out = '';
  let err = '';
  proc.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  proc.stderr.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  const exited = new Promise<number | null>((resolve) => proc.on('close', resolve));
  while (!err.includes('watching')) {
    if (proc.exitCode !== null) assert.fail(`push --watch exited: ${err}`);
    await sleep(20);
  }
  for (let burst = 0; burst < 5; burst++) {
    for (let i = 0; i < 20; i++) db.prepare('insert into t values (?, randomblob(?))').run(i, 50 + i * 40);
    await waitForHub(h, 'live', db);
  }
  assert.ok(hubBody(h, 'live').equals(localBody(file)), 'hub journal == local journal');
  assert.match(out, /pushed \d+ snapshots?: the hub is at txid \d+/);
  proc.kill('SIGTERM');
  assert.equal(await exited, 0, err);
  assert.match(err, /stopped: the hub is at txid 106/);
});
