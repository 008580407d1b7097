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
