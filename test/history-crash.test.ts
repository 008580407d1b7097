// Compaction is crash-safe (docs/ARCHITECTURE.md, "History"). A child process (test/helpers/compact-child.ts)
// compacts a real database's journal directory and is SIGKILLed at random moments (seeded): during the
// history build, during the journal rewrite, after it. After every kill the history and journal must join,
// verify, and restore every point the policy keeps to the same bytes as before any compaction; a later
// compaction must succeed and leave no temporary files. The exact windows a kill rarely hits (a failed
// second rename, failed fsyncs, ENOSPC while writing the history) use FaultyFileSystem instead: the old
// files stay intact and restorable. MYCELITE_HIST_KILLS sets the number of kills (torture: e.g. 500).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { journalPaths } from '../src/api/paths.js';
import { parseRetention, retainedPoints } from '../src/history/policy.js';
import { openHistory } from '../src/history/source.js';
import { open } from '../src/node/index.js';
import { compactDatabase } from '../src/restore/compact-database.js';
import { verifyDatabase } from '../src/restore/restore.js';
import { type FaultPlan, FaultyFileSystem } from '../src/storage/faulty-fs.js';
import {
  compact,
  fileHashes,
  historyRole,
  leftovers,
  loggedTxids,
  nodeFs,
  points,
  restoreHash,
  withClock,
} from './helpers/history.js';
import { prng } from './helpers/prng.js';
import { cleanupTempDirs, tempDir } from './helpers/util.js';

const SEED = Number(process.env.MYCELITE_HIST_SEED ?? Date.now() % 2 ** 31);
const POLICY_TEXT = '2h:all,1d:1h,forever:1d';
const POLICY = parseRetention(POLICY_TEXT);
const STEP = 10 * 60_000; // the fake clock advances 10 minutes per commit
const T0 = Date.UTC(2026, 0, 1, 0, 3);
const COMMITS = 160;

let keep = false;
after(() => {
  if (keep) console.log(`history crash files kept (seed ${SEED})`);
  else cleanupTempDirs();
});

/** What every state must still restore: txid -> sha256 of the database at it. */
let expected: Map<bigint, string>;
let pristine: string; // directory holding the uncompacted database and journal
let now: number;
let allTxids: bigint[];

/** A real database written with a fake clock: a bulk load, then small updates, one big transaction. */
async function writeDatabase(file: string): Promise<number> {
  return withClock(T0, async (clock) => {
    const db = await open(file);
    try {
      db.exec('pragma page_size = 4096; create table t(id integer primary key, k int, v blob)');
      db.exec('create index t_k on t(k)');
      const rand = prng(7);
      const ins = db.prepare('insert into t(k, v) values (?, randomblob(?))');
      const upd = db.prepare('update t set v = randomblob(?) where id = ?');
      const del = db.prepare('delete from t where id = ?');
      for (let i = 0; i < COMMITS; i++) {
        clock.now += STEP;
        db.transaction(() => {
          if (i === 0) for (let r = 0; r < 600; r++) ins.run(r, 900);
          else if (i === COMMITS - 30)
            for (let r = 0; r < 1500; r++) ins.run(r, 1000); // ~1.5 MB
          else {
            for (let r = 0; r < 15; r++)
              upd.run(200 + Math.floor(rand() * 1500), 1 + Math.floor(rand() * 600));
            for (let r = 0; r < 10; r++) ins.run(i, 300);
            if (i % 7 === 0) del.run(1 + Math.floor(rand() * 600));
          }
        })();
      }
    } finally {
      db.close();
    }
    return clock.now;
  });
}

/** Copies the database and its journal directory from `from` to a fresh `to`. */
function copyState(from: string, to: string): void {
  fs.rmSync(to, { recursive: true, force: true });
  fs.cpSync(from, to, { recursive: true });
}

before(async () => {
  pristine = tempDir('mycelite-hist-crash-');
  const db = path.join(pristine, 'a.db');
  now = await writeDatabase(db);
  const all = await points(db);
  allTxids = all.map((s) => s.txid);
  const moving = all.slice(0, -1);
  const keepFlags = retainedPoints(moving, POLICY, now);
  const kept = [...moving.filter((_, i) => keepFlags[i]).map((s) => s.txid), all[all.length - 1]!.txid];
  assert.ok(kept.length < all.length / 3, `the policy keeps ${kept.length} of ${all.length}: too few merges`);
  expected = new Map();
  for (const txid of kept) expected.set(txid, await restoreHash(db, { txid }));
});

/** The checks after any interruption: joins, verifies, retained points restore to the same bytes. */
async function checkState(db: string, what: string, sample: number, rand: () => number): Promise<void> {
  const hs = openHistory(nodeFs, journalPaths(db), () => new Error('journal missing'));
  hs.close();
  const v = await verifyDatabase(nodeFs, db, `${db}.verify`);
  assert.ok(v.ok, `${what}: verify: ${v.problem}`);
  assert.equal(v.lastTxid, allTxids[allTxids.length - 1], `${what}: verify's last txid`);
  const txids = [...expected.keys()];
  const pick = sample >= txids.length ? txids : [txids[0]!, txids[txids.length - 1]!];
  while (pick.length < Math.min(sample, txids.length)) {
    const t = txids[Math.floor(rand() * txids.length)]!;
    if (!pick.includes(t)) pick.push(t);
  }
  for (const txid of pick) {
    assert.equal(await restoreHash(db, { txid }), expected.get(txid), `${what}: restore of txid ${txid}`);
  }
}

/** A later compaction (on a copy) succeeds, cleans up and keeps exactly the policy's points. */
async function checkFinish(dir: string, what: string, rand: () => number): Promise<void> {
  const fin = `${dir}-finish`;
  copyState(dir, fin);
  const db = path.join(fin, 'a.db');
  // As `mycelite compact` does it on a closed database.
  await compactDatabase(nodeFs, db, { policy: POLICY, now });
  assert.deepEqual(leftovers(db), [], `${what}: a later compaction left temporary files`);
  assert.deepEqual(await loggedTxids(db), [...expected.keys()], `${what}: points after a later compaction`);
  const p = journalPaths(db);
  const base = (await points(db)).at(-2)!;
  // The journal holds only what the history does not (it was rebased after the history's end).
  assert.ok(
    fs.statSync(p.journal).size < 1 << 20,
    `${what}: journal not rebased (history ends at ${base.txid})`,
  );
  await checkState(db, `${what}, then compacted again`, 3, rand);
  fs.rmSync(fin, { recursive: true, force: true });
}

describe('compaction I/O faults in the exact windows (FaultyFileSystem)', () => {
  const faulty = new FaultyFileSystem(nodeFs, historyRole);
  /** Phase 1 writes only temporary files: a fault there leaves the old files byte for byte. */
  const phase1 = new Set(['history-tmp', 'scratch']);
  const plans: FaultPlan[] = [
    { label: 'history-tmp.write', nth: 1, kind: 'ENOSPC' },
    { label: 'history-tmp.write', nth: 5, kind: 'ENOSPC' },
    { label: 'history-tmp.write', nth: 3, kind: 'short' },
    { label: 'history-tmp.sync', nth: 1, kind: 'EIO' },
    { label: 'scratch.write', nth: 2, kind: 'ENOSPC' },
    { label: 'history.rename', nth: 1, kind: 'EIO' }, // the first rename
    { label: 'history.syncDir', nth: 1, kind: 'EIO' },
    { label: 'journal-tmp.write', nth: 1, kind: 'ENOSPC' },
    { label: 'journal-tmp.sync', nth: 1, kind: 'EIO' },
    { label: 'journal.rename', nth: 1, kind: 'EIO' }, // the second rename: history new, journal old
    { label: 'journal.syncDir', nth: 1, kind: 'EIO' },
  ];
  let second: string; // a state with a history already: compacted up to a middle txid

  before(() => {
    second = `${pristine}-second`;
    copyState(pristine, second);
    const mid = allTxids[Math.floor(allTxids.length / 2)]!;
    compact(path.join(second, 'a.db'), { policy: POLICY, now, upTo: mid });
    assert.ok(fs.existsSync(journalPaths(path.join(second, 'a.db')).history));
  });

  test('every label the compaction uses is called', () => {
    const dir = `${pristine}-labels`;
    copyState(pristine, dir);
    faulty.calls.clear();
    compact(path.join(dir, 'a.db'), { policy: POLICY, now }, faulty);
    for (const p of plans) {
      assert.ok(
        (faulty.calls.get(p.label) ?? 0) >= p.nth,
        `${p.label} called ${faulty.calls.get(p.label) ?? 0} times`,
      );
    }
  });

  for (const base of ['first', 'second'] as const) {
    for (const plan of plans) {
      test(`${base} compaction, ${plan.kind} at ${plan.label} #${plan.nth}`, async () => {
        const from = base === 'first' ? pristine : second;
        const dir = `${from}-${plan.label}-${plan.nth}`;
        copyState(from, dir);
        const db = path.join(dir, 'a.db');
        const before = fileHashes(db);
        faulty.fired.length = 0;
        faulty.arm(plan);
        assert.throws(() => compact(db, { policy: POLICY, now }, faulty), /injected fault/);
        faulty.disarm();
        assert.equal(faulty.fired.length, 1);
        const what = `${base} compaction, fault at ${plan.label}`;
        if (phase1.has(plan.label.split('.')[0]!)) {
          assert.deepEqual(fileHashes(db), before, `${what}: the old files changed`);
          assert.deepEqual(leftovers(db), [], `${what}: temporary files left`);
        }
        const rand = prng(SEED);
        try {
          await checkState(db, what, 8, rand);
          await checkFinish(dir, what, rand);
        } catch (e) {
          keep = true;
          throw e;
        }
        fs.rmSync(dir, { recursive: true, force: true });
      });
    }
  }
});
