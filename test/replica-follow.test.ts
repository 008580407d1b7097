// Following a hub: replicas made with openReplica() and `mycelite follow` reach the writer's file byte
// for byte, live and after network drops, and continue from their own position after a restart (never
// from the start of history). Resets (the hub no longer has their position, or holds another history)
// are in test/replica-reset.test.ts.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { encodeFileHeader, JournalReader, memorySource } from '../src/format/index.js';
import { type MyceliteDatabase, open, openReplica, type ReplicaDatabase } from '../src/node/index.js';
import { parseJournalId } from '../src/protocol/index.js';
import { type CliRun, runCli } from './helpers/cli.js';
import { caughtUp, startTestHub, type TestHub } from './helpers/hub.js';
import { snapshotsAfter } from './helpers/replica.js';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.js';
import { cleanupTempDirs, fileHash, nativeIntegrity, tempDir } from './helpers/util.js';

const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanupTempDirs();
});

async function hubAndProxy(dir?: string): Promise<{ hub: TestHub; proxy: TcpProxy }> {
  const hub = await startTestHub(dir);
  const proxy = await startTcpProxy(hub.port);
  cleanups.push(
    () => proxy.close(),
    () => hub.close(),
  );
  return { hub, proxy };
}

async function writer(file: string, url: string, token: string): Promise<MyceliteDatabase> {
  const w = await open(file, { hub: { url, db: 'app', token } });
  cleanups.push(async () => {
    if (w.open) w.close();
    await w.sync?.close();
  });
  return w;
}

async function replica(file: string, url: string, token: string): Promise<ReplicaDatabase> {
  const r = await openReplica(file, { hub: { url, db: 'app', token }, minBackoffMs: 20, maxBackoffMs: 200 });
  cleanups.push(() => r.close());
  return r;
}

function burst(w: MyceliteDatabase, n: number, size = 200): void {
  const ins = w.prepare('INSERT INTO t(a, b) VALUES (random(), randomblob(?))');
  for (let i = 0; i < n; i++) ins.run(size + (i % 7) * 500);
}

test('replicas follow live, byte for byte, and can be queried while they follow', async () => {
  const dir = tempDir();
  const { hub, proxy } = await hubAndProxy();
  const w = await writer(path.join(dir, 'w.db'), hub.url, await hub.token('app', 'writer'));
  w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, a, b)');
  await w.sync!.flush(10_000);
  const rt = await hub.token('app', 'reader');
  const rs = [
    await replica(path.join(dir, 'r1.db'), proxy.url, rt),
    await replica(path.join(dir, 'r2.db'), hub.url, rt),
  ];
  await Promise.all(rs.map((r) => r.ready()));
  const seen: bigint[] = [];
  rs[0]!.on('snapshot', (s) => seen.push(s.txid));
  for (let round = 0; round < 6; round++) {
    burst(w, 30);
    if (round === 2) w.exec('DELETE FROM t WHERE id % 2 = 0; VACUUM');
    if (round === 3) proxy.cutAll(); // a network drop: the replica reconnects from its position
    if (round === 4) proxy.cutOnceAfter(3000, 'down'); // cut mid-stream
    for (const r of rs) await caughtUp(w, r);
    for (const [i, r] of rs.entries()) {
      assert.equal(
        fileHash(path.join(dir, `r${i + 1}.db`)),
        fileHash(path.join(dir, 'w.db')),
        `replica ${i + 1} round ${round}`,
      );
      assert.equal(
        r.prepare('SELECT count(*) FROM t').pluck().get(),
        w.prepare('SELECT count(*) FROM t').pluck().get(),
      );
      assert.equal(r.status().state, 'live');
    }
  }
  assert.ok(proxy.cuts() >= 1, 'the proxy cut connections');
  for (let i = 1; i < seen.length; i++)
    assert.equal(seen[i], seen[i - 1]! + 1n, 'snapshots arrive in order, once each');
  // The replica is read-only and has the writer lock: no second writer or replica on its file.
  assert.throws(() => rs[0]!.exec('INSERT INTO t(a) VALUES (1)'), /readonly|read-only/i);
  await assert.rejects(open(path.join(dir, 'r1.db')), /is a replica/);
  await assert.rejects(
    openReplica(path.join(dir, 'r1.db'), { hub: { url: hub.url, db: 'app', token: rt } }),
    /already open/,
  );
});

/** Runs the CLI as a child process (asynchronously: the hub lives in this process). */
function cli(args: string[], env: Record<string, string> = {}): Promise<CliRun> {
  return runCli(args, env);
}

test('mycelite follow --once catches up, then continues from its own position', async () => {
  const dir = tempDir();
  const { hub } = await hubAndProxy();
  const wPath = path.join(dir, 'w.db');
  const rPath = path.join(dir, 'r.db');
  const w = await writer(wPath, hub.url, await hub.token('app', 'writer'));
  w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, a, b)');
  burst(w, 20);
  await w.sync!.flush(10_000);
  const rt = await hub.token('app', 'reader');
  let res = await cli(['follow', hub.url, rPath, '--db', 'app', '--token', rt, '--once']);
  assert.equal(res.status, 0, res.stderr);
  assert.match(res.stdout, new RegExp(`txid ${w.position().txid}\\b`));
  assert.equal(fileHash(rPath), fileHash(wPath));
  const first = snapshotsAfter(`${rPath}-mycelite/journal`, 0n).snaps[0]!.header.txid;

  burst(w, 20);
  w.exec('DELETE FROM t WHERE id < 15; VACUUM');
  await w.sync!.flush(10_000);
  res = await cli(['follow', hub.url, rPath, '--db', 'app', '--once'], { MYCELITE_TOKEN: rt });
  assert.equal(res.status, 0, res.stderr);
  assert.equal(fileHash(rPath), fileHash(wPath));
  const again = snapshotsAfter(`${rPath}-mycelite/journal`, 0n).snaps;
  assert.equal(again[0]!.header.txid, first, 'the journal was continued, not bootstrapped again');
  assert.equal(again.at(-1)!.header.txid, w.position().txid);
  assert.equal(nativeIntegrity(rPath), 'ok');
  const verify = await cli(['verify', rPath]);
  assert.equal(verify.status, 0, verify.stderr);

  // Clear refusals.
  res = await cli(['follow', hub.url, path.join(dir, 'x.db'), '--db', 'other', '--token', rt, '--once']);
  assert.equal(res.status, 1);
  assert.match(res.stderr, /not valid for database other.*mycelite token/);
  res = await cli([
    'follow',
    hub.url,
    path.join(dir, 'x.db'),
    '--db',
    'app',
    '--token',
    'nonsense',
    '--once',
  ]);
  assert.equal(res.status, 1);
  assert.match(res.stderr, /refused the token.*mycelite token/);
  const none = await hub.token('nothing', 'reader');
  res = await cli(['follow', hub.url, path.join(dir, 'y.db'), '--db', 'nothing', '--token', none, '--once']);
  assert.equal(res.status, 1);
  assert.match(res.stderr, /has no database nothing/);
  res = await cli([
    'follow',
    'http://127.0.0.1:9',
    path.join(dir, 'z.db'),
    '--db',
    'app',
    '--token',
    rt,
    '--once',
  ]);
  assert.equal(res.status, 1);
  assert.match(res.stderr, /cannot reach the hub/);
  res = await cli(['follow', hub.url, wPath, '--db', 'app', '--token', rt, '--once']);
  assert.equal(res.status, 1);
  assert.match(res.stderr, /is a writer's database|already open/);
  await sleep(0);
});

test('a stream that goes silent is given up and reconnected; a refused token stops the replica', async () => {
  const dir = tempDir();
  // A hub stand-in that answers the state and then sends a stream header and nothing more.
  let reads = 0;
  const journal = '0123456789abcdef0123456789abcdef';
  const server = http.createServer((req, res) => {
    if (req.headers.authorization !== 'Bearer good') {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'unauthorized', message: 'the token is malformed' }));
      return;
    }
    if (req.url === '/v1/db/app') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          name: 'app',
          journal,
          head: { txid: '5', checksum: '0000000000000001' },
          lease: null,
        }),
      );
      return;
    }
    reads++;
    res.writeHead(200, { 'content-type': 'application/vnd.mycelite.stream' });
    res.write(
      encodeFileHeader({
        version: 1,
        journalId: parseJournalId(journal)!,
        createdAt: Date.now(),
        baseTxid: 4n,
        baseChecksum: 2n,
      }),
    );
    // ... and silence.
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const r = await openReplica(path.join(dir, 'r.db'), {
    hub: { url, db: 'app', token: 'good' },
    deadStreamMs: 200,
    minBackoffMs: 10,
  });
  cleanups.push(() => r.close());
  const states: string[] = [];
  r.on('status', (s) => states.push(`${s.state}:${s.lastError ?? ''}`));
  const until = Date.now() + 10_000;
  while (reads < 3 && Date.now() < until) await sleep(20);
  assert.ok(reads >= 3, `the replica reconnected after silent streams (${reads} reads)`);
  assert.ok(
    states.some((s) => /^offline:.*no byte/.test(s)),
    states.join(', '),
  );
  await r.close();
  assert.equal(r.status().state, 'closed');

  const bad = await openReplica(path.join(dir, 'r2.db'), { hub: { url, db: 'app', token: 'bad' } });
  cleanups.push(() => bad.close());
  await assert.rejects(bad.ready(), /malformed/);
  assert.equal(bad.status().state, 'error');
});

/** The txid of the last whole snapshot of a journal another process may be appending to (0n: none yet). */
function lastTxid(journal: string): bigint {
  let last = 0n;
  try {
    const reader = new JournalReader(memorySource(new Uint8Array(fs.readFileSync(journal))), {
      merged: true,
    });
    for (const s of reader.snapshots()) last = s.txid;
  } catch {
    // a snapshot being written: the ones before it count
  }
  return last;
}

test("a read transaction held on the replica's own handle delays an apply, which then completes", async () => {
  const dir = tempDir();
  const { hub } = await hubAndProxy();
  const w = await writer(path.join(dir, 'w.db'), hub.url, await hub.token('app', 'writer'));
  w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, a, b)');
  burst(w, 100);
  const r = await replica(path.join(dir, 'r.db'), hub.url, await hub.token('app', 'reader'));
  await caughtUp(w, r);
  const it = r.prepare('SELECT id FROM t').pluck().iterate() as IterableIterator<number>;
  const firstId = it.next().value; // a read transaction is now open on the replica
  const at = r.position()!.txid;
  burst(w, 5);
  await w.sync!.flush(10_000);
  // The event: a new snapshot reached the replica's journal (it is appended before its apply, which
  // waits for the read). Only then is "not applied" a fact rather than "not applied yet".
  const rJournal = path.join(dir, 'r.db-mycelite', 'journal');
  const until = Date.now() + 20_000;
  while (lastTxid(rJournal) <= at) {
    assert.ok(Date.now() < until, 'the new snapshots reach the replica');
    await sleep(20);
  }
  assert.equal(r.position()!.txid, at, 'nothing is applied while the read lasts');
  assert.equal(
    r.prepare('SELECT count(*) FROM t').pluck().get(),
    100,
    'the open read still sees its snapshot',
  );
  it.return?.();
  await r.waitFor(w.position().txid, 20_000);
  await sleep(100);
  assert.equal(firstId, 1);
  assert.equal(r.prepare('SELECT count(*) FROM t').pluck().get(), 105);
  assert.equal(fileHash(path.join(dir, 'r.db')), fileHash(path.join(dir, 'w.db')));
});
