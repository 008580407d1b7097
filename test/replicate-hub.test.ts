// The WAL sidecar pushing to a real hub (issue 16): a native writer in another process, the sidecar
// SIGKILLed and restarted with --hub; a replica through the hub converges byte-identical with the
// writer's database after a full checkpoint; restores of random past txids, from the local journal and
// straight from the hub (`mycelite restore --hub`), match the state the writer had then.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import BetterSqlite3 from 'better-sqlite3';
import { HubClient } from '../src/client/hub-client.js';
import { openReplica, type ReplicaDatabase } from '../src/node/index.js';
import { replicate } from '../src/sidecar/replicate.js';
import { runCli } from './helpers/cli.js';
import { startTestHub } from './helpers/hub.js';
import { prng } from './helpers/prng.js';
import { type Sidecar, spawnSidecar } from './helpers/sidecar.js';
import { cleanupTempDirs, journalOf, tempDir } from './helpers/util.js';
import {
  checkJournal,
  checkpointed,
  createWalDb,
  expectedState,
  startWriter,
  stateOfImage,
} from './helpers/wal-app.js';

const running: Sidecar[] = [];
const closers: (() => Promise<unknown> | unknown)[] = [];
after(async () => {
  for (const s of running) if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGKILL');
  for (const c of closers.reverse()) await c();
  cleanupTempDirs();
});

test('sidecar with --hub, SIGKILLed and restarted: a replica follows live (read, reopened) and ends byte-identical; restores from journal and hub match the writer', {
  timeout: 120_000,
  // The end is events only: the last sidecar is stopped once it said it is ready (its start copied every
  // transaction the application, then gone, committed), and its clean stop is awaited.
}, async () => {
  const hub = await startTestHub(tempDir('mycelite-hubdata-'));
  closers.push(() => hub.close());
  const dir = tempDir('mycelite-replicate-hub-');
  const db = path.join(dir, 'app.db');
  createWalDb(db);
  const env = { MYCELITE_TOKEN: await hub.token('app', 'writer') };
  const args = [db, '--hub', hub.url, '--db', 'app'];
  const w = startWriter('node', db, 600, 'auto', 2);
  let writing = true;
  const written = w.done.finally(() => {
    writing = false;
  });
  const rand = prng(7);
  let kills = 0;
  // A replica that follows live from the start, read while it follows.
  const reader = await hub.token('app', 'reader');
  const replicaPath = path.join(dir, 'replica.db');
  let replica: ReplicaDatabase | undefined;
  const reads: number[] = [];
  while (writing) {
    const s = spawnSidecar(args, env);
    running.push(s);
    await Promise.race([s.ready, s.exited]);
    if (!replica) {
      const r = await openReplica(replicaPath, { hub: { url: hub.url, db: 'app', token: reader } });
      closers.push(() => r.close());
      await r.waitFor(1n, 20_000);
      replica = r;
    }
    await sleep(100 + rand() * 300);
    reads.push((replica.prepare('select k from meta').get() as { k: number }).k);
    s.proc.kill('SIGKILL');
    assert.equal(await s.exited, null, s.err());
    kills++;
  }
  await written;
  const last = spawnSidecar(args, env);
  running.push(last);
  await last.ready;
  last.proc.kill('SIGTERM');
  assert.equal(await last.exited, 0, last.err());
  assert.ok(kills >= 1);

  // Every sidecar's messages, for the report when the journal is not the application's.
  const logs = running.map((r, i) => `sidecar ${i}: ${r.err().trim()}`).join('\n');
  // The sidecar's own check (journal head = database, at start and at a clean stop) never fires.
  assert.doesNotMatch(logs, /check at (start|stop)/);
  const check = await checkJournal(journalOf(db));
  assert.equal(check.ks.at(-1), 600, logs);
  const head = check.last.txid;
  const state = await new HubClient({ url: hub.url, db: 'app', token: env.MYCELITE_TOKEN }).state();
  assert.equal(state?.head.txid, head, 'the hub holds the whole journal');

  await replica!.waitFor(head, 20_000);
  assert.equal(
    (replica!.prepare('select k from meta').get() as { k: number }).k,
    600,
    'the live replica reads the head',
  );
  await replica!.close();
  assert.ok(reads.length >= 1 && reads.every((k, i) => k >= (reads[i - 1] ?? 0)), `reads ${reads}`);
  const again = await openReplica(replicaPath, { hub: { url: hub.url, db: 'app', token: reader } });
  await again.waitFor(head, 20_000);
  assert.equal((again.prepare('select k from meta').get() as { k: number }).k, 600);
  await again.close();
  assert.ok(fs.readFileSync(replicaPath).equals(checkpointed(db)), 'the replica is the writer database');

  // Random past points, restored from the local journal and from the hub alone.
  for (let i = 0; i < 5; i++) {
    const txid = 1 + Math.floor(rand() * Number(head));
    const k = check.ks[txid - 1]!;
    const local = path.join(dir, `local-${txid}.db`);
    const fromHub = path.join(dir, `hub-${txid}.db`);
    const a = await runCli(['restore', db, '--txid', String(txid), '--output', local]);
    assert.equal(a.status, 0, a.stderr);
    const b = await runCli(
      ['restore', '--hub', hub.url, '--db', 'app', '--txid', String(txid), '--output', fromHub],
      { MYCELITE_TOKEN: reader },
    );
    assert.equal(b.status, 0, b.stderr);
    assert.match(b.stdout, new RegExp(`restored txid ${txid} .* from app on `));
    assert.ok(
      fs.readFileSync(local).equals(fs.readFileSync(fromHub)),
      `txid ${txid}: local and hub restores differ`,
    );
    const got = stateOfImage(fs.readFileSync(fromHub));
    assert.equal(got.k, k);
    assert.equal(got.s, expectedState(k));
  }
  // Nothing of the hub restore's scratch space is left beside the output.
  assert.deepEqual(
    fs.readdirSync(dir).filter((f) => f.startsWith('.mycelite-restore-')),
    [],
  );
});

test('a replica of a sidecar history, read while it follows, reads each applied transaction (also those that leave page 1 as it was)', {
  timeout: 60_000,
  // The replica's connection kept the pages it read across applied snapshots that leave page 1's bytes
  // 24-39 (change counter, page count, freelist) as they were, which is most transactions of an
  // application in WAL mode (native SQLite does not move its change counter there): SQLite saw no change
  // and read its cache. Found as the hub test's "569 of 600" (that workload's page 1 has the same bytes
  // 24-39 after transactions 569 to 574 and after 600). Now each apply drops the reader's page cache.
}, async () => {
  const hub = await startTestHub(tempDir('mycelite-hubdata-'));
  closers.push(() => hub.close());
  const dir = tempDir('mycelite-replicate-hub-read-');
  const db = path.join(dir, 'app.db');
  createWalDb(db);
  const r = await replicate(db, {
    hub: { url: hub.url, db: 'app', token: await hub.token('app', 'writer') },
  });
  closers.push(() => r.close());
  const app = new BetterSqlite3(db);
  closers.push(() => app.close());
  const replica = await openReplica(path.join(dir, 'replica.db'), {
    hub: { url: hub.url, db: 'app', token: await hub.token('app', 'reader') },
  });
  closers.push(() => replica.close());
  const read: number[] = [];
  for (let k = 1; k <= 5; k++) {
    app.prepare('update meta set k = ?').run(k);
    await r.catchUp();
    await replica.waitFor(r.position().txid, 20_000);
    read.push((replica.prepare('select k from meta').get() as { k: number }).k);
  }
  assert.deepEqual(read, [1, 2, 3, 4, 5]);
});

test('restore --hub: usage errors exit 2, a missing database exits 1, nothing is left behind', async () => {
  const hub = await startTestHub(tempDir('mycelite-hubdata-'));
  closers.push(() => hub.close());
  const dir = tempDir('mycelite-hub-restore-');
  const out = path.join(dir, 'out.db');
  const env = { MYCELITE_TOKEN: await hub.token('nothere', 'reader') };
  const onlyHub = await runCli(['restore', '--hub', hub.url, '--output', out], env);
  assert.equal(onlyHub.status, 2, onlyHub.stderr);
  const both = await runCli(['restore', 'x.db', '--hub', hub.url, '--db', 'nothere', '--output', out], env);
  assert.equal(both.status, 2, both.stderr);
  const missing = await runCli(['restore', '--hub', hub.url, '--db', 'nothere', '--output', out], env);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /has no database nothere/);
  assert.deepEqual(fs.readdirSync(dir), []);
});
