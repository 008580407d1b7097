// The writer's push side against a real hub over loopback: open(path, {hub}) pushes every commit, works
// offline and catches up, refuses a second writer and a reader token, and stops on a stale epoch.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { HubClient } from '../src/client/hub-client.js';
import type { SyncState } from '../src/client/pusher.js';
import { type MyceliteDatabase, OpenError, open, SyncError } from '../src/node/index.js';
import {
  concatBytes,
  makeHistory,
  sampleStatements,
  startTestHub,
  TestClock,
  type TestHub,
} from './helpers/hub.js';
import { freePort, startTcpProxy } from './helpers/tcp-proxy.js';
import { cleanupTempDirs, journalEnd, journalOf, tempDir } from './helpers/util.js';

const hubs: TestHub[] = [];
const dbs: MyceliteDatabase[] = [];

after(async () => {
  for (const db of dbs) {
    await db.sync?.close();
    if (db.open) db.close();
  }
  for (const h of hubs) await h.close();
  for (const h of hubs) fs.rmSync(h.dir, { recursive: true, force: true });
  cleanupTempDirs();
});

async function hub(dir?: string, options = {}): Promise<TestHub> {
  const h = await startTestHub(dir, options);
  hubs.push(h);
  return h;
}

async function writer(file: string, options: Parameters<typeof open>[1]): Promise<MyceliteDatabase> {
  const db = await open(file, options);
  dbs.push(db);
  return db;
}

/** The hub's stored journal of `name`, without its 64-byte file header. */
function hubBody(h: { dir: string }, name: string): Buffer {
  return fs.readFileSync(path.join(h.dir, 'dbs', name, 'journal')).subarray(64);
}

function localBody(file: string): Buffer {
  // Up to the last snapshot: a live writer keeps zeros written ahead past it.
  return fs.readFileSync(journalOf(file)).subarray(64, journalEnd(journalOf(file)));
}

/** Asserts that the hub holds exactly the local journal (same snapshots, byte for byte, nothing twice). */
async function assertHubEqualsLocal(
  h: TestHub,
  name: string,
  db: MyceliteDatabase,
  file: string,
): Promise<void> {
  const st = await new HubClient({ url: h.url, db: name, token: await h.token(name, 'reader') }).state();
  assert.ok(st, 'the hub has the database');
  assert.equal(st.head.txid, db.position().txid);
  assert.equal(st.head.checksum, db.position().checksum);
  assert.ok(hubBody(h, name).equals(localBody(file)), 'hub journal bytes equal the local journal bytes');
}

function waitForState(db: MyceliteDatabase, state: SyncState, timeoutMs = 20_000): Promise<void> {
  return new Promise((resolve, reject) => {
    if (db.sync!.status().state === state) return resolve();
    const t = setTimeout(() => {
      off();
      reject(
        new Error(`state ${db.sync!.status().state}, waited for ${state}: ${db.sync!.status().lastError}`),
      );
    }, timeoutMs);
    const off = db.sync!.on('status', (s) => {
      if (s.state === state) {
        clearTimeout(t);
        off();
        resolve();
      }
    });
  });
}

test('every commit reaches the hub, byte for byte', async () => {
  const h = await hub();
  const file = path.join(tempDir(), 'app.db');
  const pushed: bigint[] = [];
  const db = await writer(file, { hub: { url: h.url, db: 'app', token: await h.token('app', 'writer') } });
  db.sync!.on('pushed', (e) => pushed.push(e.hubTxid));
  assert.ok(db.sync!.status().lease, 'open() took the lease');
  db.exec('create table t(a, b)');
  for (let i = 0; i < 40; i++) db.prepare('insert into t values (?, ?)').run(i, 'x'.repeat(i * 50));
  await db.sync!.flush(20_000);
  const s = db.sync!.status();
  assert.equal(s.state, 'synced');
  assert.equal(s.hubTxid, db.position().txid);
  assert.equal(s.localTxid, 41n);
  assert.ok(pushed.length > 0 && pushed.at(-1) === 41n, `pushed events end at 41: ${pushed}`);
  await assertHubEqualsLocal(h, 'app', db, file);
  // Later commits keep flowing.
  db.exec('update t set b = upper(b)');
  await db.sync!.flush(20_000);
  await assertHubEqualsLocal(h, 'app', db, file);
});

test('offline from the start: commits go on, the backlog goes up once the hub starts', async () => {
  const port = await freePort();
  const dir = tempDir('mycelite-hubdata-');
  // Tokens are signed with the hub's key: make the key before the hub runs.
  const { loadOrCreateKey, mintToken } = await import('../src/hub/index.js');
  const token = await mintToken(loadOrCreateKey(dir), { db: 'off', role: 'writer', ttlSeconds: 600 });
  const file = path.join(tempDir(), 'off.db');
  const db = await writer(file, { hub: { url: `http://127.0.0.1:${port}`, db: 'off', token } });
  assert.equal(db.sync!.status().state, 'offline');
  assert.match(db.sync!.status().lastError ?? '', /ECONNREFUSED|cannot/);
  db.exec('create table t(a)');
  for (let i = 0; i < 20; i++) db.exec(`insert into t values (${i})`);
  assert.equal(db.position().txid, 21n, 'local commits continue offline');
  assert.equal(db.sync!.status().localTxid, 21n);
  await assert.rejects(db.sync!.flush(300), /flush: after 300 ms/);
  const h = await hub(dir, { port });
  await db.sync!.flush(20_000);
  await assertHubEqualsLocal(h, 'off', db, file);
  // The hub goes away and comes back on the same port (same data): nothing is lost.
  await h.close();
  hubs.splice(hubs.indexOf(h), 1);
  for (let i = 0; i < 10; i++) db.exec(`insert into t values (${100 + i})`);
  await waitForState(db, 'offline');
  const h2 = await hub(dir, { port });
  await db.sync!.flush(20_000);
  await assertHubEqualsLocal(h2, 'off', db, file);
});

test('a second writer of the same hub database is refused with OpenError (lease held)', async () => {
  const h = await hub();
  const token = await h.token('one', 'writer');
  const a = await writer(path.join(tempDir(), 'a.db'), { hub: { url: h.url, db: 'one', token } });
  a.exec('create table t(a)');
  await a.sync!.flush(10_000);
  const bFile = path.join(tempDir(), 'b.db');
  await assert.rejects(
    open(bFile, { hub: { url: h.url, db: 'one', token } }),
    (e: Error) =>
      e instanceof OpenError &&
      /another writer holds the write lease of database one/.test(e.message) &&
      /expires at/.test(e.message),
  );
  // The refused writer released its files: it can be opened again without a hub.
  const b = await open(bFile);
  b.close();
});

test('a reader token cannot push: clear refusal, hub unchanged', async () => {
  const h = await hub();
  const file = path.join(tempDir(), 'r.db');
  await assert.rejects(
    open(file, { hub: { url: h.url, db: 'ro', token: await h.token('ro', 'reader') } }),
    /this token is a reader token; pushing needs a writer token \(mycelite token --db ro --role writer\)/,
  );
  assert.equal(fs.existsSync(path.join(h.dir, 'dbs', 'ro', 'journal')), false, 'nothing stored');
  const other = await h.token('elsewhere', 'writer');
  await assert.rejects(
    open(file, { hub: { url: h.url, db: 'ro', token: other } }),
    /this token is for database elsewhere/,
  );
});

test('a writer whose lease was taken over after expiry stops with an error (stale epoch)', async () => {
  const clock = new TestClock();
  const h = await hub(undefined, { now: clock.now });
  const proxy = await startTcpProxy(h.port);
  const token = await h.token('fence', 'writer');
  const file = path.join(tempDir(), 'fence.db');
  const db = await writer(file, { hub: { url: proxy.url, db: 'fence', token, leaseTtlMs: 1_000 } });
  db.exec('create table t(a)');
  await db.sync!.flush(10_000);
  const epoch = db.sync!.status().lease!.epoch;
  // Cut the writer off until its lease expires, then let another holder take it.
  proxy.setDown(true);
  clock.advance(1_500); // the hub's clock passes the lease's expiry
  const other = new HubClient({ url: h.url, db: 'fence', token });
  const taken = await other.takeLease('someone-else', 60_000);
  assert.ok(taken.epoch > epoch);
  db.exec('insert into t values (1)');
  proxy.setDown(false);
  await waitForState(db, 'error');
  assert.match(db.sync!.status().lastError ?? '', /another writer holds the write lease/);
  await assert.rejects(db.sync!.flush(1_000), /another writer holds the write lease/);
  const st = await other.state();
  assert.equal(st!.head.txid, 1n, 'the fenced writer pushed nothing more');
  db.close();
  await proxy.close();
});

test('an idle writer renews its lease; closing releases it for the next writer', async () => {
  const h = await hub();
  const token = await h.token('idle', 'writer');
  const a = await writer(path.join(tempDir(), 'ia.db'), {
    hub: { url: h.url, db: 'idle', token, leaseTtlMs: 1_200 },
  });
  a.exec('create table t(a)');
  await a.sync!.flush(10_000);
  const first = a.sync!.status().lease!;
  // Without a commit, past the first lease's expiry: renewals (status events) keep the lease a's.
  await new Promise<void>((resolve) => {
    const renewed = (): void => {
      const lease = a.sync!.status().lease;
      if (lease && lease.expiresAt.getTime() - first.expiresAt.getTime() > 1_200) {
        stop();
        resolve();
      }
    };
    const stop = a.sync!.on('status', renewed);
    renewed();
  });
  const other = new HubClient({ url: h.url, db: 'idle', token });
  await assert.rejects(other.takeLease('intruder', 60_000), /lease/);
  const renewed = a.sync!.status().lease!;
  assert.equal(renewed.epoch, first.epoch);
  assert.ok(renewed.expiresAt > first.expiresAt, 'the expiry moved forward');
  // close() stops pushing and releases the lease: another writer gets it at once.
  a.close();
  await a.sync!.close();
  assert.equal(a.sync!.status().state, 'closed');
  const lease = await other.takeLease('next', 60_000);
  assert.ok(lease.epoch > first.epoch);
});

test('a hub that lost its tail (head behind the writer): head mismatch, re-read, resume from its head', async () => {
  const dir = tempDir('mycelite-hubdata-');
  let h = await hub(dir);
  const port = h.port;
  const token = await h.token('tail', 'writer');
  const file = path.join(tempDir(), 'tail.db');
  const db = await writer(file, { hub: { url: h.url, db: 'tail', token } });
  db.exec('create table t(a)');
  for (let i = 0; i < 9; i++) db.exec(`insert into t values (${i})`);
  await db.sync!.flush(10_000);
  const hubJournal = path.join(dir, 'dbs', 'tail', 'journal');
  const keep = fs.readFileSync(hubJournal);
  await h.close();
  hubs.splice(hubs.indexOf(h), 1);
  // Cut the hub's journal back to its first 5 snapshots (as an old backup would be).
  const local = fs.readFileSync(journalOf(file));
  const { JournalReader, memorySource } = await import('../src/format/index.js');
  const snaps = [...new JournalReader(memorySource(local)).snapshots()];
  fs.writeFileSync(hubJournal, keep.subarray(0, snaps[5]!.offset));
  h = await hub(dir, { port });
  db.exec('insert into t values (100)');
  await db.sync!.flush(20_000);
  await assertHubEqualsLocal(h, 'tail', db, file);
  const metrics = await (await fetch(`${h.url}/metrics`)).text();
  assert.match(
    metrics,
    /mycelite_push_rejected_total\{reason="head_mismatch"\} [1-9]/,
    'the push was refused once',
  );
});

test('a single writer is refused clearly by a shared database, and pushes nothing', async () => {
  const h = await hub();
  const dir = tempDir();
  // Device A creates the shared database from its history.
  const source = path.join(dir, 'a.db');
  const hist = await makeHistory(source, sampleStatements(3));
  const token = await h.token('team', 'writer');
  const device = new HubClient({ url: h.url, db: 'team', token });
  const lease = await device.takeLease('device-a');
  const body = concatBytes(hist.snapshots.map((x) => x.bytes));
  const base = { txid: 0n, checksum: 0n };
  await device.push(body, { journalId: hist.journalId, base, epoch: lease.epoch, mode: 'shared' });
  await device.releaseLease(lease.epoch);
  const before = hubBody(h, 'team');
  // A copy of the same database, same history, opened as the single writer of that hub database: the
  // hub's head is in its history, so only the mode can stop it.
  const file = path.join(dir, 'b.db');
  fs.copyFileSync(source, file);
  fs.cpSync(`${source}-mycelite`, `${file}-mycelite`, { recursive: true });
  const db = await writer(file, { hub: { url: h.url, db: 'team', token } });
  db.exec('insert into t(v) values (1)');
  await waitForState(db, 'error');
  const shared =
    /database team on .* is shared \(many devices write it\): open it with \{ shared: true \} or use `mycelite sync --shared`; nothing was pushed/;
  assert.match(db.sync!.status().lastError ?? '', shared);
  await assert.rejects(db.sync!.flush(1_000), (e: unknown) => {
    assert.ok(e instanceof SyncError);
    assert.equal(e.code, 'other_mode');
    assert.match(e.message, shared);
    return true;
  });
  assert.ok(hubBody(h, 'team').equals(before), 'nothing was pushed');
  const metrics = await (await fetch(`${h.url}/metrics`)).text();
  assert.ok(!metrics.includes('reason="other_mode"'), 'it stopped before pushing: no push was refused');
  db.close();
});

test('a single writer whose database became shared before its push stops on the hub’s 409 other_mode', async () => {
  const h = await hub();
  const dir = tempDir();
  const token = await h.token('late', 'writer');
  const file = path.join(dir, 'w.db');
  const db = await writer(file, { hub: { url: h.url, db: 'late', token } });
  await waitForState(db, 'synced'); // it read the hub: no such database yet
  // Meanwhile a shared device creates it (with the writer's epoch: the writer holds the lease).
  const hist = await makeHistory(path.join(dir, 'a.db'), sampleStatements(2));
  const device = new HubClient({ url: h.url, db: 'late', token });
  await device.push(concatBytes(hist.snapshots.map((x) => x.bytes)), {
    journalId: hist.journalId,
    base: { txid: 0n, checksum: 0n },
    epoch: db.sync!.status().lease!.epoch,
    mode: 'shared',
  });
  const before = hubBody(h, 'late');
  db.exec('create table t(a)');
  await waitForState(db, 'error');
  await assert.rejects(db.sync!.flush(1_000), (e: unknown) => {
    assert.ok(e instanceof SyncError);
    assert.equal(e.code, 'other_mode');
    assert.match(
      e.message,
      /database late on .* is shared \(many devices write it\): open it with \{ shared: true \}/,
    );
    return true;
  });
  assert.ok(hubBody(h, 'late').equals(before), 'nothing was stored');
  const metrics = await (await fetch(`${h.url}/metrics`)).text();
  assert.match(
    metrics,
    /mycelite_push_rejected_total\{reason="other_mode"\} 1\b/,
    'refused once, not retried',
  );
  db.close();
});

test('bad hub options are refused before anything is touched', async () => {
  const file = path.join(tempDir(), 'opts.db');
  await assert.rejects(
    open(file, { hub: { url: 'ftp://127.0.0.1:1', db: 'a', token: 't' } }),
    /is not an http\(s\) URL/,
  );
  await assert.rejects(
    open(file, { hub: { url: 'http://127.0.0.1:1', db: '../etc', token: 't' } }),
    /is not allowed/,
  );
  await assert.rejects(open(file, { hub: { url: 'http://127.0.0.1:1', db: 'a', token: '' } }), /no token/);
  assert.equal(fs.existsSync(file), false);
  assert.equal(fs.existsSync(`${file}-mycelite`), false);
});
