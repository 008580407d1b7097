// Compaction is crash-safe (docs/ARCHITECTURE.md, "History"). A child process (test/helpers/compact-child.ts)
// compacts a real database's journal directory and is SIGKILLed at random moments (seeded): during the
// history build, during the journal rewrite, after it. After every kill the history and journal must join,
// verify, and restore every point the policy keeps to the same bytes as before any compaction; a later
// compaction must succeed and leave no temporary files. The exact windows a kill rarely hits (a failed
// second rename, failed fsyncs, ENOSPC while writing the history) use FaultyFileSystem instead: the old
// files stay intact and restorable. MYCELITE_HIST_KILLS sets the number of kills (torture: e.g. 500); with
// the default 30 each kill restores 8 retained points (first, last, 6 at random), with more every one.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type FaultPlan, FaultyFileSystem } from '../src/files/faulty-fs.js';
import { parseRetention, retainedPoints } from '../src/history/policy.js';
import { openHistory } from '../src/history/source.js';
import { journalPaths } from '../src/journal/paths.js';
import { open } from '../src/node/index.js';
import { compactDatabase } from '../src/restore/compact-database.js';
import { verifyDatabase } from '../src/restore/restore.js';
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
const KILLS = Number(process.env.MYCELITE_HIST_KILLS ?? 30);
const CHILD = new URL('./helpers/compact-child.js', import.meta.url).pathname;
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

interface Killed {
  lines: string[];
  /** Milliseconds from the child's `start` line to its exit. */
  ran: number;
  killed: boolean;
  stderr: string;
}

/** Runs the compaction child on `db`; `kill(lines, child)` decides when to SIGKILL it. */
function runChild(
  db: string,
  upTo: bigint | undefined,
  killAfter: (line: string) => number | 'wait' | { tmp: number },
): Promise<Killed> {
  return new Promise((resolve, reject) => {
    const args = [CHILD, db, POLICY_TEXT, String(now), ...(upTo === undefined ? [] : [String(upTo)])];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: string[] = [];
    let stderr = '';
    let killed = false;
    let buf = '';
    let started = 0;
    const kill = (): void => {
      if (child.exitCode === null && !killed) {
        killed = child.kill('SIGKILL');
      }
    };
    const tmp = `${journalPaths(db).journal}.tmp`;
    const pollTmp = (deadline: number, delay: number): void => {
      if (child.exitCode !== null) return;
      if (fs.existsSync(tmp)) setTimeout(kill, delay);
      else if (Date.now() < deadline) setImmediate(() => pollTmp(deadline, delay));
    };
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        lines.push(line);
        if (line === 'start') started = Date.now();
        const action = killAfter(line);
        if (typeof action === 'number') setTimeout(kill, action);
        else if (action !== 'wait') pollTmp(Date.now() + 10_000, action.tmp);
      }
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (!killed && code !== 0) reject(new Error(`compaction child failed (${code ?? signal}): ${stderr}`));
      else resolve({ lines, killed, stderr, ran: Date.now() - started });
    });
  });
}

describe('compaction killed at random moments (SIGKILL)', () => {
  test(`${KILLS} kills leave a history that joins, verifies and restores every retained point`, {
    timeout: 600_000,
  }, async () => {
    const rand = prng(SEED);
    const work = path.join(pristine, '..', `${path.basename(pristine)}-work`);
    const db = path.join(work, 'a.db');
    // How long one whole compaction takes here: kills are spread over it.
    copyState(pristine, work);
    const sizes = ['a.db', 'a.db-mycelite/journal'].map((f) => fs.statSync(path.join(work, f)).size);
    const full = await runChild(db, undefined, () => 'wait');
    const took = full.ran;
    assert.ok(
      full.lines.some((l) => l.startsWith('done')),
      `a whole compaction did not finish: ${full.lines}`,
    );
    assert.deepEqual(await loggedTxids(db), [...expected.keys()]);
    await checkState(db, 'one whole compaction', expected.size, rand);

    const stats = { killed: 0, inBuild: 0, inInstall: 0, finished: 0, rewrite: 0 };
    copyState(pristine, work);
    try {
      for (let k = 0; k < KILLS; k++) {
        const rewrite = k % 3 === 2;
        // Start fresh now and then (and always for a rewrite kill); otherwise continue from the last kill.
        if (rewrite || rand() < 0.3) copyState(pristine, work);
        const mid = allTxids[Math.floor(rand() * (allTxids.length - 1))]!;
        const upTo = rewrite ? allTxids[1 + Math.floor(rand() * 20)]! : rand() < 0.5 ? undefined : mid;
        const delay = Math.floor(rand() * Math.max(300, took));
        const r = await runChild(db, upTo, (line) => {
          if (rewrite) return line.startsWith('built') ? { tmp: delay % 4 } : 'wait';
          return line === 'start' ? delay : 'wait';
        });
        const what = `kill ${k} (seed ${SEED}, ${rewrite ? 'in the journal rewrite' : `${delay} ms`}, upTo ${upTo ?? 'default'}, lines ${r.lines.join('|')})`;
        if (r.killed) stats.killed++;
        if (!r.lines.some((l) => l.startsWith('built'))) stats.inBuild++;
        else if (!r.lines.some((l) => l.startsWith('done'))) stats.inInstall++;
        else stats.finished++;
        if (rewrite && r.killed && fs.existsSync(`${journalPaths(db).journal}.tmp`)) stats.rewrite++;
        try {
          await checkState(db, what, KILLS > 30 ? expected.size : 8, rand);
          await checkFinish(work, what, rand);
        } catch (e) {
          keep = true;
          throw e;
        }
      }
    } finally {
      console.log(
        `history crash (seed ${SEED}): ${JSON.stringify(stats)}, one compaction ${took} ms, db/journal bytes ${sizes}`,
      );
    }
    assert.ok(stats.killed >= KILLS / 2, `only ${stats.killed} of ${KILLS} children were killed`);
    assert.ok(stats.inBuild > 0 && stats.inInstall > 0, `kills missed a phase: ${JSON.stringify(stats)}`);
  });
});

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
