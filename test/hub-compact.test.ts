// Compaction at the hub (docs/ARCHITECTURE.md, "Compaction at the hub"): a hub with a tiny threshold
// moves its journals' older snapshots into `history` while a writer pushes and replicas follow; replicas
// stay byte-equal, those left behind the compacted range reset from an image built from history +
// journal, and a restarted hub serves the compacted database.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { decodeFileHeader, JournalReader, loadHash, memorySource } from '../src/format/index.js';
import { openHistory } from '../src/history/source.js';
import type { CompactOutcome } from '../src/hub/compact-worker.js';
import { FsStorage } from '../src/hub/index.js';
import { BeforeBaseError } from '../src/hub/storage.js';
import { type MyceliteDatabase, open, type ReplicaDatabase } from '../src/node/index.js';
import { NodeFileSystem } from '../src/node/node-fs.js';
import { EMPTY_POSITION, type EncodedSnapshot } from '../src/protocol/index.js';
import { replay } from '../src/restore/replay.js';
import { runCli } from './helpers/cli.js';
import {
  caughtUp,
  concatBytes,
  followReplica,
  hubWriter,
  makeHistory,
  spawnHub,
  startTestHub,
  type TestHub,
} from './helpers/hub.js';
import { cleanupTempDirs, fileHash, sha256, tempDir } from './helpers/util.js';

const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanupTempDirs();
});

const nodeFs = new NodeFileSystem();

const writer = (file: string, hub: TestHub): Promise<MyceliteDatabase> => hubWriter(file, hub, cleanups);

function replica(file: string, hub: Pick<TestHub, 'url' | 'token'>): Promise<ReplicaDatabase> {
  return followReplica(file, hub, cleanups);
}

/** Inserts, then rewrites rows: the journal outgrows the database. */
function burst(w: MyceliteDatabase, n: number): void {
  const ins = w.prepare('INSERT INTO t(a, b) VALUES (random(), randomblob(?))');
  const upd = w.prepare('UPDATE t SET b = randomblob(length(b)) WHERE id % 5 = ?');
  for (let i = 0; i < n; i++) {
    ins.run(200 + (i % 7) * 300);
    if (i % 3 === 0) upd.run(i % 5);
  }
}

/** The hub's database files. */
function hubFiles(hubDir: string): { journal: string; history: string } {
  const dir = path.join(hubDir, 'dbs', 'app');
  return { journal: path.join(dir, 'journal'), history: path.join(dir, 'history') };
}

/** The hub's joined history replayed to its head: the database bytes. */
async function replayHub(hubDir: string, dir: string): Promise<string> {
  await loadHash();
  const hs = openHistory(nodeFs, hubFiles(hubDir), () => new Error('no journal'));
  const out = path.join(dir, `replayed-${Date.now()}.db`);
  const f = nodeFs.open(out, { create: true });
  try {
    replay(hs.source, f);
  } finally {
    f.close();
    hs.close();
  }
  return fileHash(out);
}

function journalBase(file: string): bigint {
  return decodeFileHeader(new Uint8Array(fs.readFileSync(file))).baseTxid;
}

test('a hub compacts while a writer pushes and replicas follow: they stay byte-equal, new and lagging replicas reset from history + journal, a restarted hub serves it', async (t) => {
  const dir = tempDir();
  const hubDir = tempDir('mycelite-hub-');
  const outcomes: (CompactOutcome | Error)[] = [];
  const compaction = {
    minBytes: 1024,
    everyMs: 0,
    retain: '2s:all,forever:1h', // points older than 2 s merge into one per hour
    onCompaction: (_db: string, o: CompactOutcome | Error) => outcomes.push(o),
  };
  // followQueueLimit 1: followers read every snapshot from storage, racing with the swaps.
  let hub = await startTestHub(hubDir, { compaction, followQueueLimit: 1 });
  const port = hub.port;
  let hubOpen = true;
  cleanups.push(() => (hubOpen ? hub.close() : undefined));
  const wPath = path.join(dir, 'w.db');
  const w = await writer(wPath, hub);
  w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, a, b)');
  await w.sync!.flush(10_000);
  const live = await replica(path.join(dir, 'live.db'), hub);
  await live.ready();
  const liveResets: unknown[] = [];
  live.on('reset', (e) => liveResets.push(e));
  // A replica that stops early: its position will be inside the compacted range.
  const laggingPath = path.join(dir, 'lagging.db');
  let lagging = await replica(laggingPath, hub);
  burst(w, 10);
  await caughtUp(w, lagging);
  const laggingAt = lagging.position()!.txid;
  await lagging.close();

  for (let round = 0; round < 6; round++) {
    burst(w, 25);
    if (round === 2) await sleep(2100); // what came before is now older than the policy's 2 s
    await caughtUp(w, live);
    assert.equal(fileHash(path.join(dir, 'live.db')), fileHash(wPath), `live replica, round ${round}`);
  }
  // Compactions run in the background: wait for the last one to end, then check the files.
  const deadline = Date.now() + 20_000;
  while (outcomes.length === 0 && Date.now() < deadline) await sleep(20);
  await sleep(200);
  const errors = outcomes.filter((o) => o instanceof Error);
  assert.deepEqual(errors, [], 'no compaction failed');
  const done = outcomes.filter((o): o is CompactOutcome => !(o instanceof Error) && o.end !== undefined);
  assert.ok(done.length >= 2, `the hub compacted more than once while the writer pushed (${done.length})`);
  assert.ok(
    done.some((o) => o.pointsDropped > 0),
    'retention merged points older than 2 s',
  );
  const files = hubFiles(hubDir);
  assert.ok(fs.existsSync(files.history), 'the hub has a compacted history');
  const base = journalBase(files.journal);
  assert.ok(base > BigInt(laggingAt), `the hub's journal starts after the lagging replica (${base})`);
  const last = done[done.length - 1]!;
  // Pushes go on after the last compaction (how many depends on the machine's load): the live journal
  // holds only what followed it.
  assert.ok(
    fs.statSync(files.journal).size < last.bytesBefore,
    `the hub journal shrank (${fs.statSync(files.journal).size} of ${last.bytesBefore} bytes)`,
  );
  await w.sync!.flush(10_000);
  assert.equal(await replayHub(hubDir, dir), fileHash(wPath), 'history + journal replay to the writer');
  t.diagnostic(
    `${done.length} compactions; journal ${fs.statSync(files.journal).size} B from txid ${base}, history ${fs.statSync(files.history).size} B, writer journal ${fs.statSync(`${wPath}-mycelite/journal`).size} B; last: ${JSON.stringify(last, (_k, v) => (typeof v === 'bigint' ? String(v) : v))}`,
  );

  // The lagging replica comes back: its position was compacted away, it resets and converges.
  lagging = await replica(laggingPath, hub);
  const resets: unknown[] = [];
  lagging.on('reset', (e) => resets.push(e));
  await caughtUp(w, lagging);
  assert.equal(fileHash(laggingPath), fileHash(wPath), 'the lagging replica converged');
  assert.ok(resets.length >= 1, 'the lagging replica was reset');

  // A new replica bootstraps from an image of history + journal (the journal alone starts mid-way).
  const fresh = await replica(path.join(dir, 'fresh.db'), hub);
  await caughtUp(w, fresh);
  assert.equal(fileHash(path.join(dir, 'fresh.db')), fileHash(wPath), 'a new replica bootstraps');

  // The hub restarts on the same port: the writer, the live replica and a new one carry on.
  await hub.close();
  hubOpen = false;
  burst(w, 10);
  hub = await startTestHub(hubDir, { compaction: false, port });
  hubOpen = true;
  burst(w, 10);
  await caughtUp(w, live);
  await caughtUp(w, lagging);
  const again = await replica(path.join(dir, 'again.db'), hub);
  await caughtUp(w, again);
  for (const f of ['live.db', 'lagging.db', 'again.db'])
    assert.equal(fileHash(path.join(dir, f)), fileHash(wPath), `${f} after the hub restarted`);
  assert.equal(await replayHub(hubDir, dir), fileHash(wPath), 'the restarted hub holds the writer');
  // A live replica may be reset when its stream was cut mid-compaction (allowed): count them.
  t.diagnostic(`live replica resets: ${liveResets.length}, lagging replica resets: ${resets.length}`);
});

test('FsStorage.compact: a read begun before the swap ends with the old bytes; after it, reads before the base fail and the index starts at the new base', async () => {
  await loadHash();
  const dir = tempDir();
  const h = await makeHistory(
    path.join(dir, 'a.db'),
    ['create table t(id integer primary key, v blob)'].concat(
      Array.from({ length: 40 }, () => 'insert into t(v) values (randomblob(80000))'),
    ),
  );
  const s = await FsStorage.open(path.join(dir, 'data'), { compaction: false });
  cleanups.push(() => s.close());
  const snaps = h.snapshots as EncodedSnapshot[];
  await s.append('x', EMPTY_POSITION, h.journalId, snaps.slice(0, 30));
  const want = concatBytes(snaps.slice(0, 30).map((x) => x.bytes));
  assert.ok(want.length > 2 << 20, 'the read spans several chunks');
  // A reader takes its first chunk, then a compaction swaps the files under it.
  const it = s.read('x', 0n, 30n)[Symbol.asyncIterator]();
  const first = await it.next();
  assert.equal(first.done, false);
  const outcome = await s.compact('x');
  assert.ok(outcome?.end, 'compacted');
  assert.equal(outcome.end.txid, 29n, 'everything but the last snapshot moved');
  const got = [first.value as Uint8Array];
  for (let r = await it.next(); !r.done; r = await it.next()) got.push(r.value);
  assert.equal(sha256(concatBytes(got)), sha256(want), 'the read in flight finished with the old bytes');

  const state = (await s.state('x'))!;
  assert.equal(state.base.txid, 29n);
  assert.equal(state.head.txid, 30n);
  await assert.rejects(
    (async () => {
      for await (const _ of s.read('x', 10n, 30n));
    })(),
    BeforeBaseError,
  );
  assert.equal(await s.snapshotAt('x', 10n), undefined);
  // Appends continue the rebased journal; reads from the base give exactly the stored snapshots.
  const r = await s.append('x', state.head, h.journalId, snaps.slice(30));
  assert.ok(r.ok);
  const tail: Uint8Array[] = [];
  for await (const c of s.read('x', 29n, 41n)) tail.push(c);
  assert.equal(sha256(concatBytes(tail)), sha256(concatBytes(snaps.slice(29).map((x) => x.bytes))));
  assert.equal((await s.snapshotAt('x', 35n))?.postChecksum, snaps[34]!.header.postChecksum);
  // The history holds 1..29 (possibly merged and with checkpoints), the journal 30..41.
  const files = {
    journal: path.join(dir, 'data/dbs/x/journal'),
    history: path.join(dir, 'data/dbs/x/history'),
  };
  const hs = openHistory(nodeFs, files, () => new Error('missing'));
  try {
    assert.equal(hs.historyEnd, 29n);
    const all = [...new JournalReader(hs.source, { merged: true, verify: true }).snapshots()];
    assert.equal(all[all.length - 1]!.txid, 41n);
  } finally {
    hs.close();
  }
  const journal = [
    ...new JournalReader(memorySource(new Uint8Array(fs.readFileSync(files.journal)))).snapshots(),
  ];
  assert.deepEqual(
    journal.map((x) => x.txid),
    Array.from({ length: 12 }, (_, i) => BigInt(30 + i)),
  );
});

test("a hub given its FsStorage logs that storage's compactions, and its settings' onCompaction hears them too", async () => {
  // The server logs compactions through watchCompactions; FsStorage had none (only NatsStorage did), so
  // a hub started with an FsStorage of its own never logged one.
  await loadHash();
  const dir = tempDir();
  const h = await makeHistory(
    path.join(dir, 'a.db'),
    ['create table t(id integer primary key, v blob)'].concat(
      Array.from({ length: 8 }, () => 'insert into t(v) values (randomblob(4000))'),
    ),
  );
  const told: string[] = [];
  const storage = await FsStorage.open(path.join(dir, 'data'), {
    compaction: {
      onCompaction: (db, outcome) => told.push(`${db} ${outcome instanceof Error ? 'failed' : 'ok'}`),
    },
  });
  const lines: string[] = [];
  const hub = await startTestHub(path.join(dir, 'hub'), {
    storage,
    logLevel: 'info',
    logDestination: { write: (l: string) => lines.push(l) },
  });
  cleanups.push(() => hub.close());
  const snaps = h.snapshots as EncodedSnapshot[];
  assert.ok((await storage.append('x', EMPTY_POSITION, h.journalId, snaps)).ok);
  const outcome = await storage.compact('x');
  assert.ok(outcome?.end, 'compacted');
  assert.deepEqual(told, ['x ok'], "the settings' onCompaction heard it");
  const logged = lines.filter((l) => /"msg":"compacted"/.test(l));
  assert.equal(logged.length, 1, `the hub logged it (log: ${lines.join('')})`);
  assert.match(logged[0]!, /"db":"x"/);
});

test('mycelite serve --compact-above/--compact-every/--retain compacts a pushed database; --no-compact keeps the journal whole', async () => {
  const dir = tempDir();
  const args = ['--compact-above', '1KiB', '--compact-every', '1s', '--retain', '1h:all,forever:1d'];
  const hubs = [
    await spawnHub(path.join(dir, 'on'), 0, args),
    await spawnHub(path.join(dir, 'off'), 0, [...args, '--no-compact']),
  ];
  cleanups.push(() => Promise.all(hubs.map((h) => h.kill('SIGTERM'))).then(() => undefined));
  for (const [i, hub] of hubs.entries()) {
    const w = await open(path.join(dir, `w${i}.db`), {
      hub: { url: hub.url, db: 'app', token: await hub.token('app', 'writer') },
    });
    try {
      w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, a, b)');
      for (let round = 0; round < 4; round++) {
        burst(w, 20);
        await w.sync!.flush(20_000);
        await sleep(300);
      }
    } finally {
      w.close();
      await w.sync!.close();
    }
  }
  const [on, off] = hubs.map((h) => hubFiles(h.dir));
  const deadline = Date.now() + 10_000;
  while (!fs.existsSync(on!.history) && Date.now() < deadline) await sleep(50);
  assert.ok(fs.existsSync(on!.history), 'the hub compacted');
  assert.ok(journalBase(on!.journal) > 0n, 'its journal starts after the history');
  assert.equal(fs.existsSync(off!.history), false, '--no-compact: no history');
  assert.equal(journalBase(off!.journal), 0n, '--no-compact: the journal starts at the beginning');
});

test('a mycelite serve process killed (SIGKILL) again and again while it compacts comes back with history and journal that join and hold every push', async (t) => {
  const dir = tempDir();
  const hubDir = path.join(dir, 'hub');
  const args = [
    '--compact-above',
    '1KiB',
    '--compact-every',
    '1s',
    '--retain',
    '1s:all,forever:1h',
    '--log-level',
    'info',
  ];
  let hub = await spawnHub(hubDir, 0, args);
  const port = hub.port;
  cleanups.push(() => hub.kill());
  const wPath = path.join(dir, 'w.db');
  const w = await hubWriter(wPath, hub, cleanups);
  w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, a, b)');
  let compacted = 0;
  for (let cycle = 0; cycle < 5; cycle++) {
    for (let i = 0; i < 4; i++) {
      burst(w, 10);
      await w.sync!.flush(20_000);
      await sleep(150 + ((cycle * 97 + i * 61) % 300));
    }
    burst(w, 5);
    await hub.kill('SIGKILL');
    compacted += (hub.stderr().match(/"msg":"compacted"/g) ?? []).length;
    assert.doesNotMatch(hub.stderr(), /compaction failed/);
    hub = await spawnHub(hubDir, port, args);
    await w.sync!.flush(20_000);
    assert.equal(await replayHub(hubDir, dir), fileHash(wPath), `cycle ${cycle}: the hub holds the writer`);
  }
  const r = await replica(path.join(dir, 'r.db'), hub);
  await caughtUp(w, r);
  assert.equal(
    fileHash(path.join(dir, 'r.db')),
    fileHash(wPath),
    'a new replica bootstraps after the crashes',
  );
  assert.ok(compacted >= 3, `compactions ran between the kills (${compacted})`);
  t.diagnostic(
    `${compacted} compactions logged over 5 SIGKILL cycles; hub journal base ${journalBase(hubFiles(hubDir).journal)}`,
  );
});

test("restore --hub reaches a point the hub compacted into its history (its history file and the snapshots after it): the writer's own restore of that point, byte for byte", async () => {
  const dir = tempDir();
  let compacted: (o: CompactOutcome) => void = () => {};
  const firstCompaction = new Promise<CompactOutcome>((resolve) => {
    compacted = resolve;
  });
  const compaction = {
    minBytes: 1024,
    everyMs: 0,
    retain: 'forever:all',
    onCompaction: (_db: string, o: CompactOutcome | Error) => {
      if (!(o instanceof Error) && o.end) compacted(o);
    },
  };
  const hub = await startTestHub(tempDir('mycelite-hub-'), { compaction });
  cleanups.push(() => hub.close());
  const wPath = path.join(dir, 'w.db');
  const w = await writer(wPath, hub);
  w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, a, b)');
  burst(w, 40);
  await w.sync!.flush(10_000); // the push that creates the database on the hub
  burst(w, 20);
  await w.sync!.flush(10_000); // an append: the hub's journal is due for compaction
  const outcome = await firstCompaction;
  const txid = 5n;
  assert.ok(outcome.end!.txid > txid, `the hub compacted past txid ${txid} (to ${outcome.end!.txid})`);
  const reader = { MYCELITE_TOKEN: await hub.token('app', 'reader') };
  const fromHub = path.join(dir, 'hub-5.db');
  const local = path.join(dir, 'local-5.db');
  const a = await runCli(
    ['restore', '--hub', hub.url, '--db', 'app', '--txid', String(txid), '--output', fromHub],
    reader,
  );
  assert.equal(a.status, 0, a.stderr);
  const b = await runCli(['restore', wPath, '--txid', String(txid), '--output', local]);
  assert.equal(b.status, 0, b.stderr);
  assert.equal(fileHash(fromHub), fileHash(local));
  // The latest point too, and nothing of the scratch space is left.
  const latest = path.join(dir, 'hub-latest.db');
  const c = await runCli(['restore', '--hub', hub.url, '--db', 'app', '--output', latest], reader);
  assert.equal(c.status, 0, c.stderr);
  assert.equal(fileHash(latest), fileHash(wPath));
  assert.deepEqual(
    fs.readdirSync(dir).filter((f) => f.startsWith('.mycelite-restore-')),
    [],
  );
});
