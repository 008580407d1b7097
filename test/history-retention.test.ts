// Retention boundaries (src/history/policy.ts): with a fake clock, snapshots exactly at a tier's age
// boundary and at the edges of interval buckets are kept or dropped as the policy says — per tier, the
// last point of each bucket floor(ts / every); a point exactly `age` old belongs to the next tier; older
// than the last tier, dropped; the newest moved point always kept. After compaction `mycelite log` lists
// exactly those points; a dropped txid or a time inside a merged range fails with TargetNotFoundError
// naming the nearest restorable txids; a time before a point that is a single transaction restores.
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseRetention } from '../src/history/policy.js';
import { open } from '../src/node/index.js';
import { TargetNotFoundError } from '../src/restore/replay.js';
import { logDatabase, verifyDatabase } from '../src/restore/restore.js';
import { compact, loggedTxids, nodeFs, points, restoreHash, withClock } from './helpers/history.js';
import { cleanupTempDirs, tempDir } from './helpers/util.js';

after(() => cleanupTempDirs());

const M = 60_000;
const H = 60 * M;
const D = 24 * H;
const N = Date.UTC(2026, 0, 10); // "now": a multiple of every interval below
const POLICY = parseRetention('1h:all,1d:10m,7d:1h');

/** One commit per entry, at `at` (ms before N), and whether the policy keeps it. */
const PLAN: { at: number; keep: boolean; why: string }[] = [
  { at: 7 * D + 1, keep: false, why: 'older than the last tier' },
  { at: 7 * D, keep: false, why: 'exactly the last tier’s age: older than every tier' },
  { at: 7 * D - 1, keep: false, why: 'not the last of its hour' },
  { at: 7 * D - H + 1, keep: true, why: 'last ms of its hour bucket' },
  { at: 7 * D - H, keep: true, why: 'first ms of the next hour bucket, alone in it' },
  { at: D + 1, keep: true, why: 'last 1h-tier point of its hour' },
  { at: D, keep: true, why: 'exactly 1d old: 1h tier, last of its hour in that tier' },
  { at: D - 1, keep: false, why: '10m tier, not the last of its 10 minutes' },
  { at: D - 10 * M + 1, keep: true, why: 'last ms of its 10-minute bucket' },
  { at: D - 10 * M, keep: false, why: 'first ms of the next bucket, not its last' },
  { at: D - 20 * M + 1, keep: true, why: 'last of that bucket' },
  { at: 2 * H - 5 * M, keep: true, why: 'alone in its 10 minutes' },
  { at: H + 1, keep: true, why: 'last 10m-tier point of its bucket' },
  { at: H, keep: true, why: 'exactly 1h old: 10m tier, alone there in its bucket' },
  { at: H - 1, keep: true, why: 'younger than 1h: every point' },
  { at: H - 2, keep: true, why: 'every point' },
  { at: 30 * M, keep: true, why: 'every point' },
  { at: 1, keep: true, why: 'every point; the last moved point' },
  { at: 0, keep: true, why: 'the journal’s last snapshot (not moved)' },
];

let dir: string;
let db: string;
/** sha256 of each txid's database before compaction. */
const hashes = new Map<bigint, string>();

/** Commits the table (at `start`), then one row per plan entry at its time. */
async function writePlan(file: string, start: number, plan: { at: number }[]): Promise<void> {
  await withClock(start, async (clock) => {
    const c = await open(file, { history: false });
    try {
      c.exec('create table t(i integer primary key, v blob)');
      const ins = c.prepare('insert into t(v) values (randomblob(?))');
      for (const [i, p] of plan.entries()) {
        clock.now = N - p.at;
        ins.run(100 + i * 50);
      }
    } finally {
      c.close();
    }
  });
}

describe('retention boundaries', () => {
  before(async () => {
    dir = tempDir('mycelite-retention-');
    db = path.join(dir, 'a.db');
    await writePlan(db, N - 8 * D, PLAN);
    const all = await points(db);
    for (const s of all) hashes.set(s.txid, await restoreHash(db, { txid: s.txid }));
  });

  test('compaction keeps exactly the points the policy names', async () => {
    const all = await points(db);
    // txid 1 is the create table (8 days old, dropped); then one snapshot per plan entry.
    assert.equal(all.length, PLAN.length + 1);
    assert.deepEqual(
      all.slice(1).map((s) => N - s.timestamp),
      PLAN.map((p) => p.at),
    );
    const txidOf = (i: number): bigint => all[i + 1]!.txid;
    const kept = PLAN.flatMap((p, i) => (p.keep ? [txidOf(i)] : []));
    const r = compact(db, { policy: POLICY, now: N });
    assert.equal(r.pointsAfter, kept.length);
    const logged = await loggedTxids(db);
    const why = (t: bigint): string => PLAN[all.findIndex((s) => s.txid === t) - 1]?.why ?? 'create table';
    assert.deepEqual(
      logged.map((t) => `${t}: ${why(t)}`),
      kept.map((t) => `${t}: ${why(t)}`),
    );
    // Merged points name the transactions they stand for.
    const merged: Record<string, string> = {};
    for await (const e of logDatabase(nodeFs, db)) {
      if (e.mergedFrom !== undefined) merged[String(e.txid)] = `${e.mergedFrom}..${e.txid}`;
    }
    assert.deepEqual(merged, { 5: '1..5', 10: '9..10', 12: '11..12' });
    const v = await verifyDatabase(nodeFs, db, `${db}.verify`);
    assert.ok(v.ok, v.problem);
    for (const t of kept) assert.equal(await restoreHash(db, { txid: t }), hashes.get(t), `txid ${t}`);
  });

  test('a dropped txid names the nearest restorable points', async () => {
    // txid 9 (1d - 1 ms old) was merged into txid 10; txid 2 was dropped before the oldest point (5).
    await assert.rejects(
      restoreHash(db, { txid: 9n }),
      (e: Error) =>
        e instanceof TargetNotFoundError &&
        /merged txids 9\.\.10/.test(e.message) &&
        /txid 8 .*txid 10 /.test(e.message),
    );
    await assert.rejects(
      restoreHash(db, { txid: 11n }),
      (e: Error) => e instanceof TargetNotFoundError && /txid 10 .*txid 12 /.test(e.message),
    );
    await assert.rejects(
      restoreHash(db, { txid: 2n }),
      (e: Error) =>
        e instanceof TargetNotFoundError && /before the oldest restorable point, txid 5 /.test(e.message),
    );
  });

  test('a time inside a merged range fails; a time before a single transaction restores', async () => {
    // N - 1d + 1 ms: txid 8 (exactly 1d old) is the last point before it, txid 10 stands for 9..10.
    await assert.rejects(
      restoreHash(db, { at: N - D + 1 }),
      (e: Error) => e instanceof TargetNotFoundError && /txid 8 .*txid 10 /.test(e.message),
    );
    // Between txid 17 (1h - 2 ms old) and txid 18 (30 min old, one transaction): the state at 17.
    assert.equal(await restoreHash(db, { at: N - 45 * M }), hashes.get(17n));
    // Exactly at kept points' times; before the oldest point:
    assert.equal(await restoreHash(db, { at: N - H + 2 }), hashes.get(17n));
    // Exactly at txid 8's time, with the merged 9..10 next: 9 may share that millisecond (timestamps only
    // never decrease), so the state at that time is not known either.
    await assert.rejects(
      restoreHash(db, { at: N - D }),
      (e: Error) => e instanceof TargetNotFoundError && /txid 8 .*txid 10 /.test(e.message),
    );
    assert.equal(await restoreHash(db, { at: N - 2 * H + 5 * M }), hashes.get(13n));
    await assert.rejects(restoreHash(db, { at: N - 8 * D }), TargetNotFoundError);
  });

  test('the newest moved point is kept even when every tier would drop it', async () => {
    const d2 = path.join(tempDir('mycelite-retention-'), 'b.db');
    await writePlan(d2, N - 10 * H, [{ at: 6 * H }, { at: 5 * H }, { at: 4 * H }, { at: 0 }]);
    const all = await points(d2);
    const before = await restoreHash(d2, { txid: all.at(-2)!.txid });
    compact(d2, { policy: parseRetention('1h:all'), now: N });
    // Everything moved is older than 1h: only the last moved point (4h old) stays, merged, then the journal's.
    assert.deepEqual(await loggedTxids(d2), [all.at(-2)!.txid, all.at(-1)!.txid]);
    assert.equal(await restoreHash(d2, { txid: all.at(-2)!.txid }), before);
    await assert.rejects(restoreHash(d2, { txid: all.at(-3)!.txid }), TargetNotFoundError);
  });
});
