/**
 * Compaction and retention (docs/ARCHITECTURE.md, "History", guarantee 14): compact, then every point
 * the history still lists restores to exactly what it restored to before; every other txid is a clear
 * error; views equal restored files; the writer goes on writing after its journal was rewritten; with
 * a hub, only what the hub holds leaves the writer's journal and replicas stay byte-equal.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import fc from 'fast-check';
import type { Database } from '../src/engine/database.js';
import { JournalReader, memorySource } from '../src/format/index.js';
import { parseRetention, retainedPoints } from '../src/history/policy.js';
import { journalPaths } from '../src/journal/paths.js';
import {
  logDatabase,
  nodeRuntime,
  open,
  openAt,
  openReadonly,
  openReplica,
  restoreDatabase,
  verifyDatabase,
} from '../src/node/index.js';
import { compactDatabase } from '../src/restore/compact-database.js';
import { TargetNotFoundError } from '../src/restore/replay.js';
import { startTestHub } from './helpers/hub.js';
import { cleanupTempDirs, fileHash, journalEnd, tempDir } from './helpers/util.js';

after(cleanupTempDirs);

const MINUTE = 60_000;
const START = Date.parse('2026-01-01T00:00:00Z');

/** Runs `fn` with Date.now() answering a clock that only `advance` moves (snapshots take its time). */
function fakeClock(): { now: () => number; advance(ms: number): void; restore(): void } {
  const real = Date.now;
  let t = START;
  Date.now = () => t;
  return {
    now: () => t,
    advance(ms) {
      t += ms;
    },
    restore() {
      Date.now = real;
    },
  };
}

type Step = { kind: 'insert' | 'update' | 'delete' | 'vacuum' | 'shrink'; n: number; gap: number };

const step: fc.Arbitrary<Step> = fc.record({
  kind: fc.constantFrom('insert', 'insert', 'insert', 'update', 'delete', 'vacuum', 'shrink'),
  n: fc.integer({ min: 1, max: 40 }),
  // Minutes to the next transaction: bursts and long gaps, so points fall in many retention buckets.
  gap: fc.oneof(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 30, max: 600 }), fc.constant(3 * 1440)),
});

function run(db: Database, s: Step, i: number): void {
  switch (s.kind) {
    case 'insert': {
      db.exec('BEGIN');
      const ins = db.prepare('INSERT INTO t(k, v) VALUES (?, ?)');
      for (let r = 0; r < s.n; r++) ins.run(`k${i}-${r}`, `${i}:${r}:`.repeat(1 + ((i * 31 + r * 7) % 90)));
      db.exec('COMMIT');
      return;
    }
    case 'update':
      db.prepare('UPDATE t SET v = hex(randomblob(?)) WHERE id % ? = 0').run(20 + s.n * 10, 1 + (s.n % 5));
      return;
    case 'delete':
      db.prepare('DELETE FROM t WHERE id % ? = 1').run(2 + (s.n % 4));
      return;
    case 'vacuum':
      db.exec('VACUUM');
      return;
    case 'shrink':
      // Pages cut off and grown back inside one merged range (the case a merge must write out).
      db.exec('DELETE FROM t WHERE id > 5');
      db.exec('VACUUM');
      return;
  }
}

const POLICIES = [
  '1h:all,1d:1h,forever:1d',
  '30m:all,forever:6h',
  '2h:all,2d:4h,10d:1d',
  '5d:all',
  '1m:all,forever:1w',
];

async function restoredHash(file: string, txid: bigint, dir: string): Promise<string> {
  const out = path.join(dir, `r-${txid}.db`);
  await restoreDatabase(nodeRuntime.fs, file, out, { target: { txid }, force: true });
  const h = fileHash(out);
  fs.rmSync(out);
  return h;
}

async function points(file: string): Promise<bigint[]> {
  const out: bigint[] = [];
  for await (const e of logDatabase(nodeRuntime.fs, file)) out.push(e.txid);
  return out;
}

test('compact then restore(N) == restore(N) before compaction, for every retained N; other txids are errors', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(step, { minLength: 4, maxLength: 24 }),
      fc.constantFrom(...POLICIES),
      fc.integer({ min: 0, max: 20 * 1440 }),
      fc.double({ min: 0.05, max: 2, noNaN: true }),
      async (steps, policy, laterMinutes, ratio) => {
        const dir = tempDir();
        const file = path.join(dir, 'h.db');
        const clock = fakeClock();
        const before = new Map<bigint, string>();
        let timestamps: number[] = [];
        try {
          const db = await open(file, { history: false });
          db.exec(
            'PRAGMA page_size = 1024; CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v TEXT); CREATE INDEX t_k ON t(k)',
          );
          for (const [i, s] of steps.entries()) {
            clock.advance(s.gap * MINUTE);
            run(db, s, i);
          }
          db.close();
          for await (const e of logDatabase(nodeRuntime.fs, file)) timestamps.push(e.timestamp);
          for (const txid of await points(file)) before.set(txid, await restoredHash(file, txid, dir));
          // Compact twice, the second time later (points age into coarser tiers).
          const now = clock.now() + laterMinutes * MINUTE;
          const rules = parseRetention(policy);
          await compactDatabase(nodeRuntime.fs, file, {
            policy: rules,
            now: clock.now(),
            checkpointRatio: ratio,
          });
          const r = await compactDatabase(nodeRuntime.fs, file, {
            policy: rules,
            now,
            checkpointRatio: ratio,
          });
          assert.equal(r.journalRewritten || r.unchanged, true);
          const kept = await points(file);
          // The newest point and every point the policy keeps (as of the second run) remain.
          const all = [...before.keys()];
          assert.equal(kept[kept.length - 1], all[all.length - 1]);
          const expect = retainedPoints(
            timestamps.map((timestamp) => ({ timestamp })),
            rules,
            now,
          );
          for (const [i, txid] of all.entries()) {
            if (expect[i] && i < all.length - 1)
              assert.ok(kept.includes(txid), `txid ${txid} must be kept (${policy})`);
          }
          for (const txid of kept) {
            assert.equal(
              await restoredHash(file, txid, dir),
              before.get(txid),
              `restore of txid ${txid} after compaction`,
            );
          }
          for (const txid of all) {
            if (kept.includes(txid)) continue;
            await assert.rejects(
              restoreDatabase(nodeRuntime.fs, file, path.join(dir, 'x.db'), { target: { txid } }),
              (e) => e instanceof TargetNotFoundError && /restorable/.test(e.message),
            );
          }
          const v = await verifyDatabase(nodeRuntime.fs, file, path.join(dir, 'verify.tmp'));
          assert.equal(v.ok, true, v.problem);
          // Views at retained points answer like restored files.
          for (const txid of [kept[0]!, kept[Math.floor(kept.length / 2)]!]) {
            const restored = path.join(dir, `v-${txid}.db`);
            await restoreDatabase(nodeRuntime.fs, file, restored, { target: { txid } });
            const view = await openAt(file, txid);
            const ref = await openReadonly(restored);
            try {
              for (const q of ['SELECT id, k, v FROM t ORDER BY id', 'PRAGMA integrity_check']) {
                assert.deepEqual(
                  view.prepare(q).raw(true).all(),
                  ref.prepare(q).raw(true).all(),
                  `${q} at ${txid}`,
                );
              }
            } finally {
              view.close();
              ref.close();
            }
          }
          // The writer goes on after its journal was rewritten.
          const again = await open(file, { history: false });
          again.exec("INSERT INTO t(k, v) VALUES ('after', 'compaction')");
          again.close();
          const v2 = await verifyDatabase(nodeRuntime.fs, file, path.join(dir, 'verify.tmp'));
          assert.equal(v2.ok, true, v2.problem);
        } finally {
          clock.restore();
          timestamps = [];
        }
      },
    ),
    { numRuns: 15 },
  );
});

test('a writer compacts automatically past its threshold and keeps committing; restore of kept points is exact', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'auto.db');
  const clock = fakeClock();
  const hashes = new Map<bigint, string>();
  try {
    const db = await open(file, { history: { compactAt: 40_000, retain: '2h:all,1d:1h,forever:1d' } });
    db.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v TEXT)');
    const p = journalPaths(file);
    let rewrites = 0;
    let lastSize = 0;
    for (let i = 0; i < 300; i++) {
      clock.advance(7 * MINUTE);
      // Mostly updates: the journal outgrows the database (compaction waits for that).
      if (i < 40) db.prepare('INSERT INTO t(k, v) VALUES (?, hex(randomblob(150)))').run(`k${i}`);
      else db.prepare('UPDATE t SET v = hex(randomblob(150)) WHERE id = ?').run(1 + (i % 40));
      if (i % 70 === 0) db.exec('DELETE FROM t WHERE id % 9 = 0');
      await new Promise((r) => setImmediate(r)); // automatic compaction runs between transactions
      const size = journalEnd(p.journal);
      if (size < lastSize) rewrites++;
      lastSize = size;
    }
    assert.ok(rewrites >= 2, `the journal was rewritten ${rewrites} times`);
    assert.ok(fs.existsSync(p.history));
    assert.ok(journalEnd(p.journal) < 80_000);
    const dry = db.compact({ dryRun: true });
    assert.equal(fs.existsSync(`${p.history}.tmp`), false, 'a dry run writes nothing');
    assert.ok(dry.pointsAfter <= dry.pointsBefore);
    db.close();
    for (const txid of await points(file)) hashes.set(txid, await restoredHash(file, txid, dir));
    const latest = [...hashes.keys()].pop()!;
    assert.equal(hashes.get(latest), fileHash(file), 'the latest point is the database');
    const v = await verifyDatabase(nodeRuntime.fs, file, path.join(dir, 'verify.tmp'));
    assert.equal(v.ok, true, v.problem);
  } finally {
    clock.restore();
  }
});

test('with a hub, the writer only compacts what the hub holds; offline commits stay in its journal; replicas stay equal', async () => {
  const h = await startTestHub();
  const dir = tempDir();
  const file = path.join(dir, 'w.db');
  try {
    const token = await h.token('app', 'writer');
    const db = await open(file, { hub: { url: h.url, db: 'app', token }, history: { compactAt: 30_000 } });
    db.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)');
    for (let i = 0; i < 150; i++) {
      if (i < 20) db.prepare('INSERT INTO t(v) VALUES (hex(randomblob(200)))').run();
      else db.prepare('UPDATE t SET v = hex(randomblob(200)) WHERE id = ?').run(1 + (i % 20));
      if (i % 10 === 0) await db.sync!.flush(10_000);
      await new Promise((r) => setImmediate(r));
    }
    await db.sync!.flush(10_000);
    const p = journalPaths(file);
    assert.ok(fs.existsSync(p.history), 'the writer compacted');
    db.compact({});
    const base = new JournalReader(memorySource(new Uint8Array(fs.readFileSync(p.journal)))).header.baseTxid;
    assert.ok(base > 0n && base <= db.sync!.status().hubTxid!, `journal base ${base} is held by the hub`);
    // Commits after a compaction are still pushed, and a fresh replica equals the writer.
    for (let i = 0; i < 20; i++) db.prepare('INSERT INTO t(v) VALUES (?)').run(`after ${i}`);
    await db.sync!.flush(10_000);
    const replicaFile = path.join(dir, 'r.db');
    const r = await openReplica(replicaFile, {
      hub: { url: h.url, db: 'app', token: await h.token('app', 'reader') },
    });
    try {
      await r.waitFor(db.position().txid, 10_000);
      assert.equal(fileHash(replicaFile), fileHash(file));
    } finally {
      await r.close();
    }
    db.close();
  } finally {
    await h.close();
  }
});

test('an offline writer compacts nothing out of its journal: the hub has not got it yet', async () => {
  // Offline writer: no hub head known, so nothing leaves the journal however large it grows.
  const dir = tempDir();
  const file = path.join(dir, 'off.db');
  const db = await open(file, {
    hub: { url: 'http://127.0.0.1:9', db: 'app', token: 'x', connectTimeoutMs: 200 },
    history: { compactAt: 10_000 },
  });
  try {
    db.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)');
    for (let i = 0; i < 60; i++) {
      db.prepare('INSERT INTO t(v) VALUES (hex(randomblob(300)))').run();
      await new Promise((r) => setImmediate(r));
    }
    const all = await points(file);
    assert.equal(all[0], 1n, 'every snapshot is still restorable on its own');
    assert.equal(fs.existsSync(journalPaths(file).history), false, 'nothing left the journal');
    assert.equal(db.sync!.status().localTxid, all[all.length - 1], 'and all of it is waiting to be pushed');
  } finally {
    db.close();
  }
});

test('a view starting at a large checkpoint reads its pages in place and equals the restored file', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'big.db');
  const db = await open(file, { history: false });
  db.exec('PRAGMA page_size = 4096; CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)');
  // Over 8 MiB: the checkpoint compaction writes is stored uncompressed (pages found by arithmetic).
  const ins = db.prepare('INSERT INTO t(b) VALUES (randomblob(?))');
  db.transaction(() => {
    for (let i = 0; i < 2600; i++) ins.run(3000 + (i % 7) * 100);
  })();
  db.exec('DELETE FROM t WHERE id % 5 = 0');
  db.close();
  await compactDatabase(nodeRuntime.fs, file, { policy: parseRetention('1s:all'), now: Date.now() + 10_000 });
  const more = await open(file, { history: false });
  more.exec('UPDATE t SET b = randomblob(100) WHERE id % 11 = 0');
  more.exec('DELETE FROM t WHERE id > 2000; VACUUM');
  more.exec('INSERT INTO t(b) VALUES (randomblob(5000))');
  more.close();
  const [first, ...later] = await points(file);
  const entries: { checkpoint: boolean; in: string }[] = [];
  for await (const e of logDatabase(nodeRuntime.fs, file)) entries.push(e);
  assert.ok(entries[0]!.checkpoint && entries[0]!.in === 'history');
  const history = new JournalReader(
    memorySource(new Uint8Array(fs.readFileSync(journalPaths(file).history))),
    {
      merged: true,
    },
  );
  assert.equal([...history.snapshots()][0]!.flags & 2, 0, 'the checkpoint is stored uncompressed');
  for (const txid of [first!, ...later]) {
    const restored = path.join(dir, `v-${txid}.db`);
    await restoreDatabase(nodeRuntime.fs, file, restored, { target: { txid } });
    const view = await openAt(file, txid);
    const ref = await openReadonly(restored);
    try {
      for (const q of ['SELECT id, hex(b) FROM t ORDER BY id', 'PRAGMA integrity_check']) {
        assert.deepEqual(view.prepare(q).raw(true).all(), ref.prepare(q).raw(true).all(), `${q} at ${txid}`);
      }
    } finally {
      view.close();
      ref.close();
    }
  }
});
