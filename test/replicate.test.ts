// The WAL sidecar (`mycelite replicate`, issue 16) against real native applications in other processes:
// python3's sqlite3 module and better-sqlite3, WAL mode, default auto-checkpoint and the application's
// own wal_checkpoint(TRUNCATE); the sidecar SIGKILLed at random moments and restarted. Every snapshot of
// the journal must be a state the writer committed (each transaction's state is known from its number),
// none missed or merged except where a re-bootstrap says so, and the last one the writer's database.
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { prng } from './helpers/prng.js';
import { type Sidecar, spawnSidecar } from './helpers/sidecar.js';
import { cleanupTempDirs, journalOf, tempDir } from './helpers/util.js';
import { checkJournal, checkpointed, createWalDb, python, startWriter } from './helpers/wal-app.js';

const running: Sidecar[] = [];
after(() => {
  for (const s of running) if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGKILL');
  cleanupTempDirs();
});

const PYTHON = python();

/**
 * Runs `writer` over a fresh database while sidecars are started and SIGKILLed at random moments (some
 * before they are even ready), then lets a last one catch up and stop cleanly; checks the journal.
 */
async function killRun(
  kind: 'python' | 'node',
  mode: 'auto' | 'truncate',
  n: number,
  seed: number,
): Promise<{ outside: number; kills: number; out: string }> {
  const dir = tempDir('mycelite-replicate-');
  const db = path.join(dir, 'app.db');
  createWalDb(db);
  const rand = prng(seed);
  const w = startWriter(kind, db, n, mode, 1);
  let writing = true;
  const out = w.done.finally(() => {
    writing = false;
  });
  let kills = 0;
  while (writing) {
    const s = spawnSidecar([db]);
    running.push(s);
    if (rand() < 0.3) {
      await sleep(rand() * 300);
    } else {
      await Promise.race([s.ready, s.exited]);
      await sleep(50 + rand() * 400);
    }
    s.proc.kill('SIGKILL');
    assert.equal(await s.exited, null, `the sidecar failed: ${s.err()}`);
    kills++;
  }
  const text = await out;
  const last = spawnSidecar([db]);
  running.push(last);
  await last.ready;
  last.proc.kill('SIGTERM');
  assert.equal(await last.exited, 0, last.err());
  assert.match(last.err(), /stopped at txid \d+/);
  const check = await checkJournal(journalOf(db));
  assert.equal(check.ks.at(-1), n, 'the journal ends at the last transaction');
  assert.ok(check.image.equals(checkpointed(db)), "the journal's replay is the writer's database");
  return { outside: check.outside.length, kills, out: text };
}

test('python3 application, auto-checkpoint: sidecar SIGKILLed and restarted, every transaction captured', {
  skip: PYTHON ? false : 'python3 with its sqlite3 module is not installed',
  timeout: 120_000,
}, async () => {
  const r = await killRun('python', 'auto', 1500, 1601);
  console.log(`python/auto: ${r.kills} kills, ${r.outside} re-bootstraps`);
  assert.ok(r.kills >= 2, `the sidecar was killed ${r.kills} times`);
});

test('better-sqlite3 application running wal_checkpoint(TRUNCATE) itself: never blocked for its busy timeout, nothing lost', {
  timeout: 120_000,
}, async () => {
  const r = await killRun('node', 'truncate', 1500, 1602);
  console.log(`node/truncate: ${r.kills} kills, ${r.outside} re-bootstraps`);
  const checkpoints = r.out
    .split('\n')
    .filter((l) => l.startsWith('checkpoint '))
    .map((l) => l.split(' ').map(Number));
  assert.ok(checkpoints.length >= 30);
  // busy, log, checkpointed, ms: the application's checkpoint never waited out its 10 s busy timeout.
  for (const [, , , , ms] of checkpoints) assert.ok(ms! < 5000, `a checkpoint took ${ms} ms`);
  const truncated = checkpoints.filter(([, busy, log]) => busy === 0 && log === 0).length;
  assert.ok(
    truncated > checkpoints.length / 2,
    `${truncated} of ${checkpoints.length} checkpoints truncated`,
  );
});

/**
 * Kills at chosen moments rather than random ones, in turn: at once (before the sidecar even opened the
 * database), as it says it is ready, a while after, and after being frozen (SIGSTOP: a loaded machine
 * that does not run it) at some point of its work — while it holds SQLite's write lock for a swap, say —
 * sometimes thawed and frozen again first. The application checkpoints on its own every few pages (its
 * WAL restarts many times while the sidecar is down) or runs its own TRUNCATE.
 */
async function killAt(mode: 'auto' | 'truncate', n: number, seed: number): Promise<{ kills: number }> {
  const dir = tempDir('mycelite-replicate-kill-at-');
  const db = path.join(dir, 'app.db');
  createWalDb(db);
  const rand = prng(seed);
  const w = startWriter('node', db, n, mode, 1, mode === 'auto' ? 40 : undefined);
  let writing = true;
  const out = w.done.finally(() => {
    writing = false;
  });
  const mine: Sidecar[] = [];
  let kills = 0;
  while (writing) {
    const s = spawnSidecar([db]);
    running.push(s);
    mine.push(s);
    const when = kills % 4;
    if (when === 0) await sleep(rand() * 50);
    else await Promise.race([s.ready, s.exited]);
    if (when === 2) await sleep(rand() * 300);
    if (when === 3) {
      for (let stops = 1 + Math.floor(rand() * 3); stops > 0; stops--) {
        await sleep(rand() * 100);
        s.proc.kill('SIGSTOP');
        await sleep(50 + rand() * 150);
        if (stops > 1) s.proc.kill('SIGCONT');
      }
    }
    s.proc.kill('SIGKILL');
    assert.equal(await s.exited, null, `the sidecar failed: ${s.err()}`);
    kills++;
  }
  await out;
  const last = spawnSidecar([db]);
  running.push(last);
  mine.push(last);
  await last.ready;
  last.proc.kill('SIGTERM');
  assert.equal(await last.exited, 0, last.err());
  const logs = mine.map((r, i) => `sidecar ${i}: ${r.err().trim()}`).join('\n');
  assert.doesNotMatch(logs, /check at (start|stop)/);
  const check = await checkJournal(journalOf(db));
  assert.equal(check.ks.at(-1), n, logs);
  assert.ok(check.image.equals(checkpointed(db)), "the journal's replay is the writer's database");
  return { kills };
}

test('sidecar killed at chosen moments (at once, when ready, later, frozen then killed) while the application checkpoints every 40 pages: every transaction captured', {
  timeout: 60_000,
}, async () => {
  const r = await killAt('auto', 1200, 1603);
  console.log(`auto, every 40 pages: ${r.kills} kills`);
  assert.ok(r.kills >= 4, `the sidecar was killed ${r.kills} times`);
});

test('sidecar killed at chosen moments while the application runs wal_checkpoint(TRUNCATE) itself: every transaction captured', {
  timeout: 60_000,
}, async () => {
  const r = await killAt('truncate', 1200, 1604);
  console.log(`truncate: ${r.kills} kills`);
  assert.ok(r.kills >= 4, `the sidecar was killed ${r.kills} times`);
});
