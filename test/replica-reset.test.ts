// A replica can never be bricked or switched to another history (issue 15, case 4). A hub that tells an
// existing replica to reset and then sends an image whose page lies (valid trailer) changes nothing, and
// the replica then converges against an honest hub; a hub whose database is now another history (another
// journal id) is refused with one line naming `reset: true` / `mycelite follow --reset`, and only with
// that option adopted, the replica's old database and journal kept aside; a reset within the same
// history (a hub restored from an older copy) stays automatic and keeps the old journal aside.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { HubClient } from '../src/client/hub-client.js';
import { isPlainImage, PATCH_HEADER_SIZE, SNAPSHOT_HEADER_SIZE, toHex } from '../src/format/index.js';
import { type MyceliteDatabase, openReplica, type ReplicaEvents } from '../src/node/index.js';
import { StreamParser } from '../src/protocol/index.js';
import { runCli } from './helpers/cli.js';
import { caughtUp, followReplica, hubWriter, startTestHub, type TestHub } from './helpers/hub.js';
import { reencode } from './helpers/replica.js';
import { startTcpProxy } from './helpers/tcp-proxy.js';
import { cleanupTempDirs, fileHash, journalOf, nativeIntegrity, tempDir } from './helpers/util.js';

const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanupTempDirs();
});

async function hub(dir?: string): Promise<TestHub> {
  const h = await startTestHub(dir);
  cleanups.push(() => h.close());
  return h;
}

async function writer(file: string, h: { url: string; token: TestHub['token'] }): Promise<MyceliteDatabase> {
  const w = await hubWriter(file, h, cleanups);
  return w;
}

async function closeWriter(w: MyceliteDatabase): Promise<void> {
  await w.sync!.flush(10_000);
  w.close();
  await w.sync!.close();
}

function burst(w: MyceliteDatabase, n: number, size = 300): void {
  const ins = w.prepare('INSERT INTO t(a, b) VALUES (random(), randomblob(?))');
  w.transaction(() => {
    for (let i = 0; i < n; i++) ins.run(size + (i % 5) * 700);
  })();
}

/** The replica's files as they are: database and journal hashes. */
function filesOf(rPath: string): { db: string; journal: string } {
  return { db: fileHash(rPath), journal: fileHash(journalOf(rPath)) };
}

/** Entries of `dir` whose name starts with the replica's file name, but for the replica's own two. */
function keptBeside(rPath: string): string[] {
  const base = path.basename(rPath);
  return fs
    .readdirSync(path.dirname(rPath))
    .filter((n) => n.startsWith(base) && n !== base && n !== `${base}-mycelite`)
    .sort();
}

/** The read stream `from=image` of the hub's head: its file header bytes and its image snapshot. */
async function imageOf(h: TestHub) {
  const client = new HubClient({ url: h.url, db: 'app', token: await h.token('app', 'reader') });
  const reader = (await client.read({})).getReader();
  const parser = new StreamParser({ stream: true });
  const items = [];
  for (let r = await reader.read(); !r.done; r = await reader.read()) items.push(...parser.push(r.value));
  parser.end();
  const header = items.find((i) => i.kind === 'header');
  const image = items.find((i) => i.kind === 'snapshot');
  assert.ok(header?.kind === 'header' && image?.kind === 'snapshot', 'the hub sent an image');
  return { header: header.header, headerBytes: header.bytes, image };
}

/**
 * A lying hub: its state is `state`, every read from a position is told `409 reset`, and every read
 * `from=image` gets `stream` (a file header and an image); `reads()` counts the latter.
 */
async function lyingHub(state: object, stream: Uint8Array[]) {
  let imageReads = 0;
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/v1/db/app') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(state));
      return;
    }
    if (url.searchParams.get('from') !== 'image') {
      res.writeHead(409, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({ error: 'reset', message: 'not in the history', head: (state as never)['head'] }),
      );
      return;
    }
    imageReads++;
    res.writeHead(200, { 'content-type': 'application/vnd.mycelite.stream' });
    for (const b of stream) res.write(b);
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    reads: () => imageReads,
  };
}

test('an image whose page lies (valid trailer) after a reset changes nothing; the replica then converges against an honest hub', async () => {
  const dir = tempDir();
  const h = await hub();
  const wPath = path.join(dir, 'w.db');
  const rPath = path.join(dir, 'r.db');
  const w = await writer(wPath, h);
  w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, a, b)');
  burst(w, 40);
  const r = await followReplica(rPath, h, cleanups);
  await caughtUp(w, r);
  await r.close();
  burst(w, 30);
  w.exec('DELETE FROM t WHERE id % 3 = 0');
  await w.sync!.flush(10_000);

  // The hub's honest image of its head, with one byte of page 2 flipped and the trailer recomputed:
  // only the database checksum can tell.
  const { headerBytes, image } = await imageOf(h);
  assert.ok(isPlainImage(image.header));
  const ps = image.header.pageSize;
  const flipped = image.bytes.slice();
  flipped[SNAPSHOT_HEADER_SIZE + (PATCH_HEADER_SIZE + ps) + PATCH_HEADER_SIZE + 300]! ^= 0xff;
  const bad = reencode({ header: { ...image.header, offset: 0 }, bytes: flipped }, {});
  assert.notEqual(toHex(bad.bytes), toHex(image.bytes));
  const state = await new HubClient({ url: h.url, db: 'app', token: await h.token('app', 'reader') }).state();
  const liar = await lyingHub(
    {
      name: 'app',
      journal: toHex(state!.journalId),
      head: { txid: String(state!.head.txid), checksum: state!.head.checksum.toString(16).padStart(16, '0') },
      lease: null,
    },
    [headerBytes, bad.bytes],
  );

  const before = filesOf(rPath);
  const onLiar = await openReplica(rPath, {
    hub: { url: liar.url, db: 'app', token: 'any' },
    minBackoffMs: 20,
    maxBackoffMs: 50,
  });
  const statuses: string[] = [];
  const resets: unknown[] = [];
  onLiar.on('reset', (e) => resets.push(e));
  // The first image was handled (refused) once the replica reports a failure and waits to retry.
  await new Promise<void>((resolve) =>
    onLiar.on('status', (s) => {
      statuses.push(`${s.state}: ${s.lastError ?? ''}`);
      if (s.state === 'offline' && liar.reads() > 0) resolve();
    }),
  );
  await onLiar.close();
  assert.deepEqual(resets, [], 'no reset happened');
  assert.deepEqual(filesOf(rPath), before, 'the database and the journal are as they were');
  assert.deepEqual(keptBeside(rPath), [], 'nothing was moved aside');
  assert.ok(
    statuses.some((s) => /^offline: .*image.*(does not|checksum)/.test(s)),
    `the refusal is reported: ${statuses.join(' | ')}`,
  );

  // Against the honest hub, the replica opens, continues from its own position and converges.
  const res = await runCli([
    'follow',
    h.url,
    rPath,
    '--db',
    'app',
    '--token',
    await h.token('app', 'reader'),
    '--once',
  ]);
  assert.equal(res.status, 0, res.stderr);
  assert.equal(fileHash(rPath), fileHash(wPath));
  const again = await followReplica(rPath, h, cleanups);
  burst(w, 5);
  await caughtUp(w, again);
  assert.equal(fileHash(rPath), fileHash(wPath));
  assert.equal(nativeIntegrity(rPath), 'ok');
});

test('a hub whose database is another history is refused, with one line naming the reset option; reset: true adopts it and keeps the old files aside', async (t) => {
  const dir = tempDir();
  const hubDir = tempDir('mycelite-hub-');
  const h1 = await hub(hubDir);
  const proxy = await startTcpProxy(h1.port);
  cleanups.push(() => proxy.close());
  const w1 = await writer(path.join(dir, 'w1.db'), h1);
  w1.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, a, b)');
  burst(w1, 50);
  const rPath = path.join(dir, 'r.db');
  const cliPath = path.join(dir, 'c.db');
  const r = await followReplica(rPath, { url: proxy.url, token: h1.token }, cleanups);
  const c = await followReplica(cliPath, h1, cleanups);
  await caughtUp(w1, r);
  await caughtUp(w1, c);
  await c.close();
  await closeWriter(w1);
  const resets: ReplicaEvents['reset'][] = [];
  r.on('reset', (e) => resets.push(e));
  const before = filesOf(rPath);
  const cliBefore = filesOf(cliPath);

  // The hub loses its data; another writer (another history) pushes to the same name.
  await h1.close();
  fs.rmSync(path.join(hubDir, 'dbs'), { recursive: true, force: true });
  const h2 = await hub(hubDir);
  proxy.retarget(h2.port);
  proxy.cutAll();
  const w2 = await writer(path.join(dir, 'w2.db'), h2);
  w2.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, a, b)');
  burst(w2, 120, 900);
  await w2.sync!.flush(10_000);

  await assert.rejects(
    r.waitFor(r.position()!.txid + 1000n, 20_000),
    /another history.*reset: true.*mycelite follow --reset/,
  );
  assert.equal(r.status().state, 'error');
  assert.doesNotMatch(r.status().lastError!, /\n/);
  assert.equal(resets.length, 0);
  await r.close();
  assert.deepEqual(filesOf(rPath), before, 'the refused replica keeps its files');

  // The same from the command line: one line, exit 1, nothing changed.
  const rt = await h2.token('app', 'reader');
  let res = await runCli(['follow', h2.url, cliPath, '--db', 'app', '--token', rt, '--once']);
  assert.equal(res.status, 1, res.stderr);
  assert.equal(res.stderr.trim().split('\n').length, 1, res.stderr);
  t.diagnostic(res.stderr.trim());
  assert.match(res.stderr, /^mycelite: .*another history.*mycelite follow .*--reset/);
  assert.deepEqual(filesOf(cliPath), cliBefore);

  // Asked to, the replica adopts the hub's history; its old database and journal are kept aside.
  const adopted = await openReplica(rPath, {
    hub: { url: proxy.url, db: 'app', token: rt },
    reset: true,
    minBackoffMs: 20,
    maxBackoffMs: 200,
  });
  cleanups.push(() => adopted.close());
  await new Promise<void>((resolve) =>
    adopted.on('reset', (e) => {
      resets.push(e);
      resolve();
    }),
  );
  await caughtUp(w2, adopted);
  assert.equal(fileHash(rPath), fileHash(path.join(dir, 'w2.db')));
  assert.equal(resets.length, 1);
  const kept = resets[0]!.keptAt!;
  assert.equal(resets[0]!.otherHistory, true);
  assert.deepEqual(keptBeside(rPath), [path.basename(kept), `${path.basename(kept)}-mycelite`]);
  assert.deepEqual(filesOf(kept), before, 'the old database and journal, byte for byte');
  assert.equal((await runCli(['verify', kept])).status, 0, 'the kept copy is a whole replica');
  res = await runCli(['follow', h2.url, cliPath, '--db', 'app', '--token', rt, '--once', '--reset']);
  assert.equal(res.status, 0, res.stderr);
  t.diagnostic(res.stderr.trim());
  assert.equal(fileHash(cliPath), fileHash(path.join(dir, 'w2.db')));
  const cliKept = keptBeside(cliPath)[0]!;
  assert.match(res.stderr, new RegExp(`another history.*${cliKept.replace(/[.]/g, '\\.')}`));
  assert.deepEqual(filesOf(path.join(dir, cliKept)), cliBefore);

  // reset: true was for the history the hub held when the replica connected: a later one is refused.
  await closeWriter(w2);
  await h2.close();
  fs.rmSync(path.join(hubDir, 'dbs'), { recursive: true, force: true });
  const h3 = await hub(hubDir);
  proxy.retarget(h3.port);
  proxy.cutAll();
  const w3 = await writer(path.join(dir, 'w3.db'), h3);
  w3.exec('CREATE TABLE u(x)');
  await w3.sync!.flush(10_000);
  await assert.rejects(adopted.waitFor(w3.position().txid + 1000n), /another history/);
  assert.equal(fileHash(rPath), fileHash(path.join(dir, 'w2.db')));
  assert.equal(resets.length, 1);
});

test('a reset within the same history (the hub restored from an older copy) is automatic and keeps the old journal aside', async () => {
  const dir = tempDir();
  const hubDir = tempDir('mycelite-hub-');
  const oldCopy = tempDir('mycelite-hub-');
  let h = await hub(hubDir);
  const proxy = await startTcpProxy(h.port);
  cleanups.push(() => proxy.close());
  const wPath = path.join(dir, 'w.db');
  const rPath = path.join(dir, 'r.db');
  let w = await writer(wPath, h);
  w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, a, b)');
  burst(w, 30);
  await closeWriter(w);
  await h.close();
  fs.cpSync(hubDir, oldCopy, { recursive: true }); // the hub's backup
  h = await hub(hubDir);
  proxy.retarget(h.port);
  w = await writer(wPath, h);
  for (let i = 0; i < 5; i++) burst(w, 20);
  const r = await followReplica(rPath, { url: proxy.url, token: h.token }, cleanups);
  await caughtUp(w, r);
  const ahead = r.position()!;
  await closeWriter(w);
  const journalBefore = fileHash(journalOf(rPath));
  const resets: ReplicaEvents['reset'][] = [];
  r.on('reset', (e) => resets.push(e));

  // The hub is restored from its backup: same history, but its head is behind the replica.
  await h.close();
  const restored = await hub(oldCopy);
  proxy.retarget(restored.port);
  proxy.cutAll();
  const reset = new Promise<void>((resolve) => r.on('reset', () => resolve()));
  await reset;
  assert.equal(resets.length, 1);
  const e = resets[0]!;
  assert.equal(e.otherHistory, false);
  assert.equal(e.from!.txid, ahead.txid);
  assert.ok(e.to.txid < ahead.txid, 'the replica went back to the hub');
  assert.deepEqual(keptBeside(rPath), [`${path.basename(e.keptAt!)}-mycelite`], 'only the journal is kept');
  assert.equal(fileHash(journalOf(e.keptAt!)), journalBefore, 'the old journal, byte for byte');
  const log = await runCli(['log', e.keptAt!, '--json']);
  assert.equal(log.status, 0, log.stderr);
  assert.equal(JSON.parse(log.stdout.trim().split('\n').at(-1)!).txid, Number(ahead.txid));

  // The writer pushes again what the restored hub lacks; the replica converges.
  w = await writer(wPath, { url: proxy.url, token: restored.token });
  burst(w, 3);
  await caughtUp(w, r);
  assert.equal(fileHash(rPath), fileHash(wPath));
});
