// Flat with time (issue 22): what open() reads does not grow with the length of the history. The synced
// marker names where its snapshot starts in the journal; open() reads only what follows it, and checks
// that the snapshot is there as the marker says, or reads the whole journal.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { FaultyFileSystem } from '../src/files/faulty-fs.js';
import type { Runtime } from '../src/files/file-system.js';
import { JournalReader, memorySource, xxh64 } from '../src/format/index.js';
import { readSyncedMarker, type SyncedMarker, writeSyncedMarker } from '../src/journal/synced-marker.js';
import { nodeRuntime } from '../src/node/index.js';
import { NodeFileSystem } from '../src/node/node-fs.js';
import { type MyceliteDatabase, type OpenWarning, openWith } from '../src/writer/open.js';
import { startTestHub } from './helpers/hub.js';
import { cleanupTempDirs, journalOf, replayMatches, tempDir } from './helpers/util.js';

after(cleanupTempDirs);

// One for the whole process: SQLite's VFS is installed once, with the file system of the first open.
const counting = new FaultyFileSystem(new NodeFileSystem());
const runtime: Runtime = { fs: counting, resolve: nodeRuntime.resolve, tempPath: nodeRuntime.tempPath };
const NODE_INDEX = fileURLToPath(new URL('../src/node/index.js', import.meta.url));

/** Reads of the journal file during `run`. */
async function journalReads<T>(run: () => Promise<T>): Promise<{ value: T; reads: number }> {
  const before = counting.calls.get('journal.read') ?? 0;
  const value = await run();
  return { value, reads: (counting.calls.get('journal.read') ?? 0) - before };
}

/** A database of `n` one-row transactions after its table, closed cleanly. */
async function history(n: number): Promise<string> {
  const file = path.join(tempDir(), 'h.db');
  const db = await openWith(runtime, file, { history: false });
  db.exec('create table t(id integer primary key, v blob)');
  const insert = db.prepare('insert into t(v) values (randomblob(32))');
  for (let i = 0; i < n; i++) insert.run();
  await db.historyCheck;
  db.close();
  return file;
}

function count(db: MyceliteDatabase): number {
  return Number(db.prepare('select count(*) from t').pluck().get());
}

function rewriteMarker(file: string, change: Partial<SyncedMarker>): SyncedMarker {
  const m = readSyncedMarker(nodeRuntime.fs, `${file}-mycelite/synced`);
  assert.ok(m && m !== 'bad');
  const f = nodeRuntime.fs.open(`${file}-mycelite/synced`);
  try {
    writeSyncedMarker(f, { ...m, fingerprint: m.fingerprint!, ...change });
  } finally {
    f.close();
  }
  return m;
}

describe('open() reads only what follows the synced marker', () => {
  test('a cleanly closed history of 2,000 transactions opens with a handful of journal reads', async () => {
    const file = await history(2000);
    const marker = readSyncedMarker(nodeRuntime.fs, `${file}-mycelite/synced`);
    assert.ok(
      marker && marker !== 'bad' && marker.txid === 2001n && marker.offset! > 64,
      'the marker names its offset',
    );
    const { value: db, reads } = await journalReads(() => openWith(runtime, file, { history: false }));
    try {
      assert.ok(reads < 20, `journal reads at open: ${reads} (a whole scan reads 2,000 headers)`);
      assert.equal(count(db), 2000);
      const check = await journalReads(() => db.historyCheck);
      assert.ok(check.value.ok && check.value.checkedTxid === 2001n);
      assert.equal(check.reads, 0, 'a history checked before is not read again');
      db.prepare('insert into t(v) values (1)').run();
    } finally {
      db.close();
    }
    assert.ok((await replayMatches(file)).ok, 'the journal still replays to the database');
  });

  test('after a SIGKILL, open reads what follows the last checkpoint, and loses nothing', async () => {
    const file = path.join(tempDir(), 'k.db');
    // 5,100 commits: a checkpoint (and marker) every 1,000; the last 100 or so only in the journal.
    const child = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const { open } = await import(${JSON.stringify(NODE_INDEX)});
         const db = await open(${JSON.stringify(file)}, { history: false });
         db.exec('create table t(id integer primary key, v blob)');
         const insert = db.prepare('insert into t(v) values (randomblob(32))');
         for (let i = 0; i < 5100; i++) insert.run();
         process.kill(process.pid, 'SIGKILL');`,
      ],
      { encoding: 'utf8' },
    );
    assert.equal(child.signal, 'SIGKILL', child.stderr);
    const marker = readSyncedMarker(nodeRuntime.fs, `${file}-mycelite/synced`);
    assert.ok(marker && marker !== 'bad' && marker.txid < 5101n && marker.offset !== undefined);
    const behind = 5101 - Number(marker.txid);
    const { value: db, reads } = await journalReads(() => openWith(runtime, file, { history: false }));
    try {
      assert.equal(count(db), 5100, 'every acknowledged commit is there');
      // The snapshots after the marker are read to find the head and redone, some reads each; the 5,000
      // before it are not read at all (a whole scan alone reads each of their headers).
      assert.ok(behind <= 200, `the last checkpoint came at the 5,000th commit: ${behind} after it`);
      assert.ok(
        reads < 20 * behind + 50,
        `journal reads at open: ${reads} for ${behind} snapshots after the marker`,
      );
    } finally {
      db.close();
    }
    assert.ok((await replayMatches(file)).ok);
  });

  test('a marker whose offset names no snapshot (the journal was rewritten) makes open read the whole journal', async () => {
    const file = await history(300);
    const m = rewriteMarker(file, { offset: 64 + 7 });
    const { value: db, reads } = await journalReads(() => openWith(runtime, file, { history: false }));
    try {
      assert.ok(reads >= 300, `the whole journal was read: ${reads}`);
      assert.equal(count(db), 300);
      assert.deepEqual(db.warnings, [], 'nothing to warn about');
    } finally {
      db.close();
    }
    const fresh = readSyncedMarker(nodeRuntime.fs, `${file}-mycelite/synced`);
    assert.ok(
      fresh && fresh !== 'bad' && fresh.offset === m.offset,
      'the next marker names the right offset',
    );
  });

  test('a version 2 marker (no offset) is still read; the next one is version 3', async () => {
    const file = await history(50);
    const synced = `${file}-mycelite/synced`;
    const m = readSyncedMarker(nodeRuntime.fs, synced) as SyncedMarker;
    // A version 2 marker, as the previous release wrote it.
    const b = Buffer.alloc(64);
    b.write('MYCSYNC2', 0, 'latin1');
    b.writeBigUInt64LE(m.txid, 8);
    b.writeBigUInt64LE(m.checksum, 16);
    b.writeBigUInt64LE(BigInt(m.fingerprint!.size), 24);
    b.writeBigUInt64LE(m.fingerprint!.page1, 32);
    b.writeBigUInt64LE(m.checkedTxid, 40);
    b.writeUInt32LE(m.holdsWrites ? 1 : 0, 48);
    b.writeBigUInt64LE(xxh64(new Uint8Array(b.subarray(0, 56))), 56);
    fs.writeFileSync(synced, b);
    const v2 = readSyncedMarker(nodeRuntime.fs, synced);
    assert.ok(v2 && v2 !== 'bad' && v2.txid === m.txid && v2.offset === undefined);
    const db = await openWith(runtime, file, { history: false });
    try {
      assert.equal(count(db), 50);
      assert.deepEqual(db.warnings, []);
    } finally {
      db.close();
    }
    assert.equal(fs.statSync(synced).size, 72);
    assert.equal((readSyncedMarker(nodeRuntime.fs, synced) as SyncedMarker).offset, m.offset);
  });

  test('damage before the marker is found by the background check of what was not checked yet', async () => {
    const file = await history(40);
    // Snapshot 10's header damaged, and the marker saying nothing was checked yet.
    const log = journalOf(file);
    const reader = new JournalReader(memorySource(new Uint8Array(fs.readFileSync(log))));
    const at = [...reader.snapshots()].find((s) => s.txid === 10n)!.offset;
    const bytes = fs.readFileSync(log);
    rewriteMarker(file, { checkedTxid: 0n });
    const fd = fs.openSync(log, 'r+');
    fs.writeSync(fd, Buffer.from([bytes[at + 20]! ^ 0xff]), 0, 1, at + 20);
    fs.closeSync(fd);
    const warnings: OpenWarning[] = [];
    const db = await openWith(runtime, file, { history: false, onWarning: (w) => warnings.push(w) });
    try {
      assert.equal(count(db), 40, 'every row is there');
      const check = await db.historyCheck;
      assert.equal(check.ok, false);
      assert.equal(check.damage?.txid, 10n);
      assert.deepEqual(
        warnings.map((w) => w.code),
        ['history_damaged'],
      );
    } finally {
      db.close();
    }
  });

  test('a writer with a hub indexes its journal from the head; a hub behind it still gets everything', async () => {
    const h = await startTestHub();
    try {
      const file = path.join(tempDir(), 'w.db');
      const hub = { url: h.url, db: 'flat', token: await h.token('flat', 'writer'), holder: 'flat-writer' };
      const first = await openWith(runtime, file, { history: false, hub });
      first.exec('create table t(id integer primary key, v blob)');
      const insert = first.prepare('insert into t(v) values (randomblob(32))');
      for (let i = 0; i < 1000; i++) insert.run();
      await first.sync!.flush(30_000);
      first.close();
      // The hub holds the head: open and the pusher read a handful of snapshots, not 1,001.
      const { value: again, reads } = await journalReads(async () => {
        const db = await openWith(runtime, file, { history: false, hub });
        await db.sync!.flush(30_000);
        return db;
      });
      assert.ok(reads < 20, `journal reads at open with a hub at the head: ${reads}`);
      again.close();
      // 300 commits the hub has not seen (written without it): indexed and pushed all the same.
      const offline = await openWith(runtime, file, { history: false });
      const more = offline.prepare('insert into t(v) values (randomblob(32))');
      for (let i = 0; i < 300; i++) more.run();
      offline.close();
      const last = await openWith(runtime, file, { history: false, hub });
      try {
        await last.sync!.flush(30_000);
        assert.equal(last.sync!.status().hubTxid, 1301n);
      } finally {
        last.close();
      }
    } finally {
      await h.close();
    }
  });

  test("a shared device's sync round reads its journal after the base, not the whole history", async () => {
    const h = await startTestHub();
    try {
      const file = path.join(tempDir(), 'd.db');
      const hub = { url: h.url, db: 'flat-shared', token: await h.token('flat-shared', 'writer') };
      const db = await openWith(runtime, file, { history: false, shared: true, hub });
      try {
        db.exec('create table t(id integer primary key, v blob)');
        const insert = db.prepare('insert into t(v) values (randomblob(32))');
        db.transaction(() => {
          for (let i = 0; i < 10; i++) insert.run();
        })();
        for (let i = 0; i < 1000; i++) insert.run();
        await db.sync!.flush(60_000);
        const { reads } = await journalReads(async () => {
          insert.run();
          await db.sync!.flush(30_000);
        });
        assert.ok(
          reads < 50,
          `journal reads for one more commit's sync round: ${reads} (1,002 snapshots before it)`,
        );
      } finally {
        db.close();
      }
    } finally {
      await h.close();
    }
  });
});

describe("open() does not read the compacted history's snapshots", () => {
  /** Reads of the history file during `run`. */
  async function historyReads<T>(run: () => Promise<T>): Promise<{ value: T; reads: number }> {
    const before = counting.calls.get('history.read') ?? 0;
    const value = await run();
    return { value, reads: (counting.calls.get('history.read') ?? 0) - before };
  }

  test('where the history ends is noted beside it by the compaction (checked against its last header at open): a damaged note is found by a scan again, with the same result', async () => {
    const file = path.join(tempDir(), 'c.db');
    const db = await openWith(runtime, file, {});
    db.exec('create table t(id integer primary key, v blob)');
    const insert = db.prepare('insert into t(v) values (randomblob(32))');
    for (let i = 0; i < 1500; i++) insert.run();
    db.compact({});
    db.close();
    const history = `${file}-mycelite/history`;
    assert.ok(fs.existsSync(history), 'compacted');
    const opens: { reads: number; rows: number; txid: bigint }[] = [];
    const openOnce = async (): Promise<void> => {
      const { value: d, reads } = await historyReads(() => openWith(runtime, file, {}));
      try {
        opens.push({ reads, rows: count(d), txid: d.position().txid });
      } finally {
        d.close();
      }
    };
    await openOnce(); // the compaction noted where its history ends
    await openOnce();
    const note = `${history}.end`;
    const bytes = fs.readFileSync(note);
    bytes[20]! ^= 1;
    fs.writeFileSync(note, bytes);
    await openOnce(); // a damaged note: scanned again
    await openOnce();
    assert.ok(opens[0]!.reads <= 2, `open reads the history's last header only: ${opens[0]!.reads} reads`);
    assert.ok(opens[1]!.reads <= 2, `and again: ${opens[1]!.reads} reads`);
    assert.ok(opens[2]!.reads > 1000, `a damaged note is not trusted: ${opens[2]!.reads} reads`);
    assert.ok(opens[3]!.reads <= 2, `and is written again: ${opens[3]!.reads} reads`);
    for (const o of opens) {
      assert.equal(o.rows, 1500);
      assert.equal(o.txid, opens[0]!.txid);
    }
    assert.ok((await replayMatches(file)).ok, 'the history and journal still replay to the database');
  });
});
