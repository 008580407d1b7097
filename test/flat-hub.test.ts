// Issue 22, the hub and replica half: the hub keeps no per-snapshot state in memory (its offsets are on
// disk, checked against the journal), and a replica far behind takes the hub's image instead of replaying
// the history since its position, keeping its old journal (and its points in time) aside.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { concatBytes, FILE_HEADER_SIZE, JournalReader, memorySource } from '../src/format/index.js';
import { FsStorage } from '../src/hub/index.js';
import { nodeRuntime, open, openReplica } from '../src/node/index.js';
import { restoreDatabase } from '../src/restore/restore.js';
import { runCli } from './helpers/cli.js';
import { startTestHub } from './helpers/hub.js';
import { cleanupTempDirs, fileHash, tempDir } from './helpers/util.js';

after(cleanupTempDirs);

async function collect(it: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const b of it) parts.push(b);
  return concatBytes(parts);
}

test('the hub keeps its snapshot offsets on disk: after a restart it serves every position the same, also when the offsets file is missing, cut, wrong or of another journal', async () => {
  const data = tempDir('mycelite-hubdata-');
  const dir = tempDir();
  const file = path.join(dir, 'w.db');
  const hub = await startTestHub(data);
  const w = await open(file, { hub: { url: hub.url, db: 'app', token: await hub.token('app', 'writer') } });
  w.exec('create table t(id integer primary key, v blob)');
  for (let i = 0; i < 29; i++) w.exec('insert into t(v) values (randomblob(300))');
  await w.sync!.flush(20_000);
  await w.sync!.close();
  w.close();
  await hub.close();
  const journal = fs.readFileSync(`${file}-mycelite/journal`);
  const snaps = [...new JournalReader(memorySource(journal)).snapshots()];
  assert.equal(snaps.length, 30);
  const offsetsFile = path.join(data, 'dbs', 'app', 'offsets');
  assert.equal(fs.statSync(offsetsFile).size, 32 + 30 * 8, 'one entry per stored snapshot');

  const damage: Record<string, () => void> = {
    'as written': () => {},
    missing: () => fs.rmSync(offsetsFile),
    'cut to 10 entries, with a torn entry': () => {
      fs.truncateSync(offsetsFile, 32 + 10 * 8);
      fs.appendFileSync(offsetsFile, Buffer.from([1, 2, 3]));
    },
    'last entry names the wrong offset': () => {
      const b = fs.readFileSync(offsetsFile);
      b.writeBigUInt64LE(BigInt(snaps[3]!.offset), b.length - 8);
      fs.writeFileSync(offsetsFile, b);
    },
    'entries past the journal (an append cut back)': () => {
      const extra = Buffer.alloc(16);
      extra.writeBigUInt64LE(BigInt(journal.length), 0);
      extra.writeBigUInt64LE(BigInt(journal.length + 500), 8);
      fs.appendFileSync(offsetsFile, extra);
    },
    'another journal id': () => {
      const b = fs.readFileSync(offsetsFile);
      b[8]! ^= 0xff;
      fs.writeFileSync(offsetsFile, b);
    },
  };
  for (const [what, harm] of Object.entries(damage)) {
    harm();
    const s = await FsStorage.open(data, { compaction: false });
    try {
      const st = await s.state('app');
      assert.equal(st?.head.txid, 30n, what);
      for (const afterTxid of [0, 1, 9, 10, 15, 28, 29, 30]) {
        const got = await collect(s.read('app', BigInt(afterTxid), 30n));
        const start = afterTxid === 30 ? journal.length : snaps[afterTxid]!.offset;
        assert.ok(Buffer.from(got).equals(journal.subarray(start)), `${what}: read after ${afterTxid}`);
      }
      for (const t of [1n, 17n, 30n]) assert.equal((await s.snapshotAt('app', t))?.txid, t, `${what}: ${t}`);
    } finally {
      await s.close();
    }
    assert.equal(fs.statSync(offsetsFile).size, 32 + 30 * 8, `${what}: the index is whole again`);
  }
});

test('a replica far behind the head takes the hub image, not the history since its position; its old journal is kept aside and still restores its points', async () => {
  const dir = tempDir();
  const hub = await startTestHub();
  const closers: (() => unknown)[] = [() => hub.close()];
  try {
    const wPath = path.join(dir, 'w.db');
    const w = await open(wPath, {
      hub: { url: hub.url, db: 'app', token: await hub.token('app', 'writer') },
    });
    closers.unshift(async () => {
      await w.sync!.close();
      w.close();
    });
    w.exec('create table t(id integer primary key, v blob)');
    for (let i = 0; i < 5; i++) w.exec('insert into t(v) values (randomblob(200))');
    await w.sync!.flush(20_000);
    const target = { url: hub.url, db: 'app', token: await hub.token('app', 'reader') };
    const options = { hub: target, minBackoffMs: 20, maxBackoffMs: 200, imageBehind: 20 } as const;
    const rPath = path.join(dir, 'r.db');
    const slowPath = path.join(dir, 'slow.db');
    let r = await openReplica(rPath, options);
    await r.ready();
    const slow = await openReplica(slowPath, { ...options, imageBehind: false });
    await slow.ready();
    await r.close();
    await slow.close();
    const leftAt = 6n;

    for (let i = 0; i < 50; i++) w.exec('insert into t(v) values (randomblob(200))');
    await w.sync!.flush(20_000);
    const head = w.position().txid;
    assert.equal(head, leftAt + 50n);

    r = await openReplica(rPath, options);
    closers.unshift(() => r.close());
    const resets: { from?: { txid: bigint }; otherHistory: boolean; keptAt?: string }[] = [];
    const applied: bigint[] = [];
    r.on('reset', (e) => resets.push(e));
    r.on('snapshot', (s) => applied.push(s.txid));
    await r.waitFor(head, 20_000);
    assert.equal(fileHash(rPath), fileHash(wPath), 'byte for byte');
    assert.equal(resets.length, 1, 'one reset');
    assert.equal(resets[0]!.otherHistory, false);
    assert.equal(resets[0]!.from?.txid, leftAt);
    assert.deepEqual(applied, [head], 'the image only: none of the 50 snapshots since was replayed');
    // The replica's own points before the image are in its kept journal (a whole replica).
    const keptDb = resets[0]!.keptAt!;
    assert.ok(fs.existsSync(`${keptDb}-mycelite/journal`), 'the old journal is kept');
    const fromKept = path.join(dir, 'kept-6.db');
    const fromWriter = path.join(dir, 'writer-6.db');
    await restoreDatabase(nodeRuntime.fs, keptDb, fromKept, { target: { txid: leftAt } });
    await restoreDatabase(nodeRuntime.fs, wPath, fromWriter, { target: { txid: leftAt } });
    assert.equal(fileHash(fromKept), fileHash(fromWriter), 'its last point restores from the kept journal');

    // Close behind, it follows snapshot by snapshot again.
    for (let i = 0; i < 5; i++) w.exec('insert into t(v) values (randomblob(200))');
    await w.sync!.flush(20_000);
    await r.waitFor(head + 5n, 20_000);
    assert.deepEqual(
      applied.slice(1),
      [1n, 2n, 3n, 4n, 5n].map((d) => head + d),
    );
    assert.equal(resets.length, 1, 'no other reset');
    assert.equal(fileHash(rPath), fileHash(wPath));

    // With imageBehind: false a replica replays the whole gap, as before.
    const s = await openReplica(slowPath, { ...options, imageBehind: false });
    closers.unshift(() => s.close());
    const slowApplied: bigint[] = [];
    s.on('snapshot', (x) => slowApplied.push(x.txid));
    await s.waitFor(head + 5n, 20_000);
    assert.equal(slowApplied.length, 55, 'every snapshot replayed');
    assert.equal(fileHash(slowPath), fileHash(wPath));
  } finally {
    for (const c of closers) await c();
  }
});

test('mycelite push of a backlog that takes longer than --timeout goes on while the hub takes snapshots, and stores them all', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'w.db');
  const db = await open(file, { history: false });
  db.exec('pragma synchronous = OFF; create table t(id integer primary key, v blob)');
  const insert = db.prepare('insert into t(v) values (randomblob(500))');
  for (let i = 0; i < 6000; i++) insert.run();
  db.close();
  // Bodies of at most 64 KiB (about 100 snapshots each), each append held 100 ms by the storage: the
  // backlog takes 60 requests and 6 s or more, with progress every 100 ms or so.
  const data = tempDir('mycelite-hubdata-');
  const storage = await FsStorage.open(data);
  const append = storage.append.bind(storage);
  storage.append = async (...args) => {
    await new Promise((r) => setTimeout(r, 100));
    return append(...args);
  };
  const hub = await startTestHub(data, { maxBody: 64 * 1024, storage });
  try {
    const started = performance.now();
    const r = await runCli([
      'push',
      file,
      '--hub',
      hub.url,
      '--db',
      'app',
      '--token',
      await hub.token('app', 'writer'),
      '--timeout',
      '2',
    ]);
    const ms = performance.now() - started;
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /pushed 6,?001 snapshots .* txid 6001/);
    assert.ok(ms > 2000, `the push took longer than its --timeout (${ms.toFixed(0)} ms)`);
    const journal = fs.readFileSync(`${file}-mycelite/journal`);
    const stored = fs.readFileSync(path.join(data, 'dbs', 'app', 'journal'));
    const snaps = [...new JournalReader(memorySource(stored)).snapshots()];
    assert.equal(snaps.length, 6001, 'every snapshot is stored');
    const body = stored.subarray(FILE_HEADER_SIZE);
    assert.ok(
      body.equals(journal.subarray(FILE_HEADER_SIZE, stored.length)),
      "the hub's copy is the writer's",
    );
  } finally {
    await hub.close();
  }
});
