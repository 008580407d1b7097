// A `mycelite follow` process killed with SIGKILL at random moments while the writer keeps committing
// (inserts, deletes, VACUUM shrinks, a page size change): each restart recovers (finishing, redoing or
// rebuilding the snapshot it was applying), and in the end the replica equals the writer byte for byte
// and `mycelite verify` passes on it.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { hubWriter, MYCELITE_BIN, startTestHub } from './helpers/hub.js';
import { prng } from './helpers/replica.js';
import { cleanupTempDirs, fileHash, nativeIntegrity, tempDir } from './helpers/util.js';

const children: ChildProcess[] = [];
const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const c of cleanups.reverse()) await c();
  cleanupTempDirs();
});

interface Run {
  proc: ChildProcess;
  /** stdout so far */
  out(): string;
  done: Promise<{ code: number | null; out: string; err: string }>;
}

function run(args: string[]): Run {
  const proc = spawn(process.execPath, [MYCELITE_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(proc);
  let out = '';
  let err = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  const done = new Promise<{ code: number | null; out: string; err: string }>((resolve) =>
    proc.on('close', (code) => resolve({ code, out, err })),
  );
  return { proc, out: () => out, done };
}

test('a follower killed at random moments converges to the writer and verifies', async (t) => {
  const dir = tempDir();
  const hub = await startTestHub();
  cleanups.push(() => hub.close());
  const wPath = path.join(dir, 'w.db');
  const rPath = path.join(dir, 'r.db');
  const w = await hubWriter(wPath, hub, cleanups);
  const rt = await hub.token('app', 'reader');
  w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, a, b)');
  const rnd = prng(42);
  let writing = true;
  let commits = 0;
  const writerLoop = (async () => {
    const ins = w.prepare('INSERT INTO t(a, b) VALUES (random(), randomblob(?))');
    while (writing) {
      w.transaction(() => {
        for (let i = 0; i < 40; i++) ins.run(Math.floor(rnd() * 3000));
      })();
      commits++;
      if (commits % 15 === 0) w.exec('DELETE FROM t WHERE id % 3 = 0');
      if (commits % 25 === 0) w.exec('VACUUM');
      if (commits === 60) {
        w.pragma('page_size = 2048');
        w.exec('VACUUM');
      }
      await sleep(2);
    }
  })();

  const kills = 10;
  let sawOutput = 0;
  for (let k = 0; k < kills; k++) {
    const f = run(['follow', hub.url, rPath, '--db', 'app', '--token', rt]);
    // Let it run a random while (sometimes until it has applied something), then kill it.
    const until = Date.now() + 5000;
    if (k % 2 === 0) while (!/txid \d+/.test(f.out()) && Date.now() < until) await sleep(5);
    await sleep(Math.floor(rnd() * 300));
    f.proc.kill('SIGKILL');
    const r = await f.done;
    if (/txid \d+/.test(r.out)) sawOutput++;
    assert.doesNotMatch(
      r.err,
      /mycelite: (?!live|offline|new replica|the replica's history)/,
      `follower ${k} failed: ${r.err}`,
    );
  }
  writing = false;
  await writerLoop;
  await w.sync!.flush(20_000);
  const once = run(['follow', hub.url, rPath, '--db', 'app', '--token', rt, '--once']);
  const res = await once.done;
  assert.equal(res.code, 0, res.err);
  assert.match(res.out, new RegExp(`txid ${w.position().txid}\\b`));
  assert.equal(fileHash(rPath), fileHash(wPath), 'the replica equals the writer');
  assert.equal(nativeIntegrity(rPath), 'ok');
  const verify = await run(['verify', rPath]).done;
  assert.equal(verify.code, 0, verify.err);
  assert.ok(sawOutput > 0, 'followers applied snapshots before they were killed');
  t.diagnostic(`${commits} commits, ${kills} kills, final txid ${w.position().txid}`);
});
