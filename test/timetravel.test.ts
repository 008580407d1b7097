import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import type { Database } from '../src/engine/database.js';
import { JournalReader, loadHash, memorySource, type SnapshotInfo } from '../src/format/index.js';
import { nodeRuntime, open, openAt, openReadonly, ViewRangeError } from '../src/node/index.js';
import { restoreDatabase } from '../src/restore/restore.js';
import { PageIndex } from '../src/timetravel/page-index.js';
import { cleanupTempDirs, journalOf, replayTo, tempDir } from './helpers/util.js';

after(cleanupTempDirs);

type Step =
  | { kind: 'insert'; rows: number; size: number }
  | { kind: 'update'; mod: number; size: number }
  | { kind: 'delete'; mod: number }
  | { kind: 'vacuum' }
  | { kind: 'pageSize'; size: 1024 | 2048 | 4096 | 8192 };

const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('insert' as const),
      rows: fc.integer({ min: 1, max: 60 }),
      size: fc.integer({ min: 0, max: 3000 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('update' as const),
      mod: fc.integer({ min: 1, max: 7 }),
      size: fc.integer({ min: 0, max: 900 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('delete' as const), mod: fc.integer({ min: 1, max: 5 }) }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('vacuum' as const) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('pageSize' as const),
      size: fc.constantFrom(1024, 2048, 4096, 8192),
    }),
  },
);

function run(db: Database, s: Step, seed: number): void {
  switch (s.kind) {
    case 'insert': {
      db.exec('BEGIN');
      const ins = db.prepare('INSERT INTO t(k, v) VALUES (?, ?)');
      for (let i = 0; i < s.rows; i++)
        ins.run(`k${seed}-${i}`, `${seed}:${i}:`.repeat(1 + ((s.size + i * 37) % 300)));
      db.exec('COMMIT');
      return;
    }
    case 'update':
      db.prepare('UPDATE t SET v = hex(randomblob(?)) WHERE id % ? = 0').run(s.size, s.mod);
      return;
    case 'delete':
      db.prepare('DELETE FROM t WHERE id % ? = 1').run(s.mod + 1);
      return;
    case 'vacuum':
      db.exec('VACUUM');
      return;
    case 'pageSize':
      db.exec(`PRAGMA page_size = ${s.size}; VACUUM`);
      return;
  }
}

const QUERIES = [
  'SELECT id, k, v FROM t ORDER BY id',
  'SELECT count(*), sum(length(v)), max(id) FROM t',
  "SELECT k FROM t WHERE k > 'k5' ORDER BY k LIMIT 20",
  'PRAGMA integrity_check',
  'PRAGMA page_size',
];

function answers(db: Database): unknown[] {
  return QUERIES.map((q) => db.prepare(q).raw(true).all());
}

function snapshotsOf(file: string): SnapshotInfo[] {
  return [...new JournalReader(memorySource(new Uint8Array(fs.readFileSync(journalOf(file))))).snapshots()];
}

test('a view at N equals the restored file at N: every page, and the answers of queries', async () => {
  await loadHash();
  await fc.assert(
    fc.asyncProperty(
      fc.array(step, { minLength: 3, maxLength: 14 }),
      fc.array(fc.nat(), { minLength: 3, maxLength: 3 }),
      async (steps, picks) => {
        const file = path.join(tempDir(), 'p.db');
        const db = await open(file);
        db.exec(
          'PRAGMA page_size = 1024; CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v TEXT); CREATE INDEX t_k ON t(k)',
        );
        for (const [i, s] of steps.entries()) run(db, s, i);
        db.close();
        const all = snapshotsOf(file);
        const journal = memorySource(new Uint8Array(fs.readFileSync(journalOf(file))));
        const targets = [all[all.length - 1]!, ...picks.map((p) => all[p % all.length]!)];
        for (const s of targets) {
          const restored = await replayTo(file, { txid: s.txid });
          const bytes = new Uint8Array(fs.readFileSync(restored));
          const index = new PageIndex(journal, s.txid);
          assert.equal(index.pageSize * index.dbPages, bytes.length, `size at txid ${s.txid}`);
          const page = new Uint8Array(index.pageSize);
          for (let p = 1; p <= index.dbPages; p++) {
            index.readPage(p, page);
            const want = bytes.subarray((p - 1) * index.pageSize, p * index.pageSize);
            assert.ok(
              Buffer.from(page).equals(want),
              `page ${p} at txid ${s.txid} differs from the restored file`,
            );
          }
          if (s.dbPages === 0) continue;
          const view = await openAt(file, s.txid);
          const ref = await openReadonly(restored);
          try {
            assert.deepEqual(answers(view), answers(ref), `answers at txid ${s.txid}`);
          } finally {
            view.close();
            ref.close();
          }
        }
      },
    ),
    { numRuns: 12 },
  );
});

test('a Date picks the last snapshot at or before it, like restore --at', async () => {
  const file = path.join(tempDir(), 'd.db');
  const db = await open(file);
  db.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v TEXT)');
  for (let i = 0; i < 6; i++) {
    db.prepare('INSERT INTO t(k, v) VALUES (?, ?)').run(`k${i}`, 'x'.repeat(i * 500));
    await new Promise((r) => setTimeout(r, 5));
  }
  db.close();
  for (const s of snapshotsOf(file)) {
    const view = await openAt(file, new Date(s.timestamp));
    const ref = await openReadonly(await replayTo(file, { at: s.timestamp }));
    try {
      assert.deepEqual(answers(view), answers(ref), `answers at ${new Date(s.timestamp).toISOString()}`);
    } finally {
      view.close();
      ref.close();
    }
  }
});

test('targets outside the journal are a ViewRangeError naming the restorable range; views are read-only', async () => {
  const file = path.join(tempDir(), 'r.db');
  const db = await open(file);
  db.exec('CREATE TABLE t(a); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)');
  db.close();
  const all = snapshotsOf(file);
  const first = all[0]!;
  const last = all[all.length - 1]!;
  const range = new RegExp(`restorable range is txid ${first.txid} \\(.*\\) \\.\\. txid ${last.txid} \\(`);
  for (const at of [0n, last.txid + 1n, new Date(first.timestamp - 1), new Date(last.timestamp + 1)]) {
    await assert.rejects(openAt(file, at), (e) => e instanceof ViewRangeError && range.test(e.message));
  }
  await assert.rejects(openAt(path.join(tempDir(), 'none.db'), 1n), /no Mycelite journal/);
  const view = await openAt(file, last.txid - 1n);
  try {
    assert.deepEqual(view.prepare('SELECT a FROM t').raw(true).all(), [[1]]);
    assert.throws(() => view.exec('INSERT INTO t VALUES (3)'), /readonly/);
  } finally {
    view.close();
  }
  const again = await open(file);
  assert.deepEqual(again.prepare('SELECT a FROM t').raw(true).all(), [[1], [2]]);
  again.close();
});

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/mycelite.js');

function cli(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
}

test('mycelite exec --at TXID|ISO-8601 queries the past; a bad --at exits 2 (usage) naming what to give', async () => {
  const file = path.join(tempDir(), 'cli.db');
  const db = await open(file);
  db.exec('CREATE TABLE t(a)');
  for (let i = 1; i <= 4; i++) db.prepare('INSERT INTO t VALUES (?)').run(i);
  db.close();
  const all = snapshotsOf(file);
  const second = all[2]!; // CREATE, then two inserts
  const byTxid = cli('exec', file, '--at', String(second.txid), 'select count(*) n from t', '--json');
  assert.equal(byTxid.status, 0, byTxid.stderr);
  assert.equal(byTxid.stdout, '{"n":2}\n');
  const last = all[all.length - 1]!;
  const byTime = cli('exec', file, '--at', new Date(last.timestamp).toISOString(), 'select sum(a) from t');
  assert.equal(byTime.status, 0, byTime.stderr);
  assert.equal(byTime.stdout, 'sum(a)\n10\n');
  const before = cli('exec', file, '--at', '2001-01-01T00:00:00Z', 'select 1');
  assert.equal(before.status, 1);
  assert.match(before.stderr, /restorable range is txid 1/);
  const bad = cli('exec', file, '--at', 'last tuesday', 'select 1');
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /give a txid \(digits\) or an ISO-8601 time/);
});

test('a view opens while the writer has the database open, and does not move when the writer commits', async () => {
  const file = path.join(tempDir(), 'w.db');
  const db = await open(file);
  db.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v TEXT)');
  for (let i = 0; i < 5; i++)
    db.prepare('INSERT INTO t(k, v) VALUES (?, ?)').run(`k${i}`, `v${i}`.repeat(100));
  const at = db.position().txid - 2n;
  const view = await openAt(file, at);
  try {
    const before = answers(view);
    db.exec('DELETE FROM t; VACUUM');
    for (let i = 0; i < 3; i++) db.prepare('INSERT INTO t(k, v) VALUES (?, ?)').run('k', 'new');
    assert.deepEqual(answers(view), before, 'the view moved when the writer committed');
    const ref = await openReadonly(await replayTo(file, { txid: at }));
    try {
      assert.deepEqual(answers(view), answers(ref));
    } finally {
      ref.close();
    }
    assert.deepEqual(db.prepare('SELECT count(*) FROM t').raw(true).get(), [3]);
  } finally {
    view.close();
    db.close();
  }
});

test('one shape for a point in time: openAt, revert and restoreDatabase all take { txid } and { at }', async () => {
  const file = path.join(tempDir(), 'shape.db');
  const db = await open(file);
  db.exec('create table t(a)');
  db.exec('insert into t values (1)');
  const second = Date.now(); // txid 2 committed at or before it, txid 3 after it:
  while (Date.now() <= second) {}
  db.exec('insert into t values (2)');
  db.close();
  const count = (d: Database): unknown => d.prepare('select count(*) from t').pluck().get();
  for (const at of [{ txid: 2n }, 2n, { at: new Date(second) }, { at: second }, new Date(second)] as const) {
    const view = await openAt(file, at);
    assert.equal(count(view), 1, `openAt(${String(at)})`);
    view.close();
  }
  const out = path.join(path.dirname(file), 'then.db');
  await restoreDatabase(nodeRuntime.fs, file, out, { target: { at: new Date(second) } });
  const then = await openReadonly(out);
  assert.equal(count(then), 1);
  then.close();
  await assert.rejects(
    openAt(file, { when: 2 } as never),
    /a point in time is \{ txid: 3n \} or \{ at: new Date/,
  );
  const w = await open(file);
  assert.equal(w.revert({ txid: 2n }).target.txid, 2n);
  assert.equal(count(w), 1);
  w.close();
});
