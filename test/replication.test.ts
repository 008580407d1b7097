/**
 * End to end, with real processes over loopback: a hub (`mycelite serve`), a writer (open with `hub`) and
 * three replicas (`mycelite follow`). After every burst of commits each replica's file equals the
 * writer's, byte for byte — through a hub killed with SIGKILL and restarted, a writer committing while
 * the hub is down, and a replica killed with SIGKILL and restarted.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { type MyceliteDatabase, open, openReplica } from '../src/node/index.js';
import { MYCELITE_BIN, readJournal, type SpawnedHub, spawnHub } from './helpers/hub.js';
import { prng } from './helpers/replica.js';
import { cleanupTempDirs, fileHash, tempDir } from './helpers/util.js';

const procs = new Set<ChildProcess>();
after(() => {
  for (const p of procs) p.kill('SIGKILL');
  cleanupTempDirs();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Starts `mycelite follow URL file --db app` as a child process. */
function follow(url: string, file: string, token: string): ChildProcess {
  const p = spawn(process.execPath, [MYCELITE_BIN, 'follow', url, file, '--db', 'app'], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, MYCELITE_TOKEN: token },
  });
  let err = '';
  p.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  p.once('exit', (code, signal) => {
    procs.delete(p);
    if (code !== null && code !== 0) console.error(`follow ${file} exited ${code}: ${err}`);
    void signal;
  });
  procs.add(p);
  return p;
}

async function kill(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill('SIGKILL');
  await exited;
}

function safeHash(file: string): string | undefined {
  try {
    return fileHash(file);
  } catch {
    return undefined;
  }
}

/** Waits until every replica file equals the writer's bytes; fails naming the ones that never did. */
async function converge(writer: string, replicas: string[], what: string): Promise<void> {
  const want = fileHash(writer);
  const deadline = Date.now() + 30_000;
  let behind = replicas;
  while (behind.length > 0 && Date.now() < deadline) {
    behind = behind.filter((r) => safeHash(r) !== want);
    if (behind.length > 0) await sleep(50);
  }
  assert.deepEqual(
    behind.map((r) => path.basename(r)),
    [],
    `${what}: replicas still differ from the writer after 30 s`,
  );
}

/** A burst of mixed transactions: inserts of random blobs, updates, deletes, now and then a VACUUM. */
function burst(db: MyceliteDatabase, rand: () => number, commits: number): void {
  const insert = db.prepare('insert into t(k, v, at) values (?, randomblob(?), current_timestamp)');
  for (let i = 0; i < commits; i++) {
    const r = rand();
    if (r < 0.6) {
      db.transaction(() => {
        for (let j = 0; j < 1 + Math.floor(rand() * 5); j++)
          insert.run(Math.floor(rand() * 1e6), 10 + Math.floor(rand() * 3000));
      })();
    } else if (r < 0.8) {
      db.prepare('update t set v = randomblob(?) where id % 7 = ?').run(
        Math.floor(rand() * 500),
        Math.floor(rand() * 7),
      );
    } else if (r < 0.97) {
      db.prepare('delete from t where id % 11 = ?').run(Math.floor(rand() * 11));
    } else {
      db.exec('vacuum');
    }
  }
}

test('a writer and three replica processes stay byte-identical through a hub crash, an offline writer and a replica crash', async () => {
  const dir = tempDir();
  const rand = prng(20261127);
  let hub: SpawnedHub = await spawnHub(path.join(dir, 'hub'));
  const reader = await hub.token('app', 'reader');
  const writerPath = path.join(dir, 'app.db');
  const db = await open(writerPath, {
    hub: { url: hub.url, db: 'app', token: await hub.token('app', 'writer') },
  });
  try {
    db.exec('create table t(id integer primary key, k integer, v blob, at text); create index t_k on t(k)');
    const replicas = [1, 2, 3].map((i) => path.join(dir, `replica-${i}.db`));
    const followers = replicas.map((r) => follow(hub.url, r, reader));

    // Bursts while everything runs.
    for (let b = 0; b < 3; b++) {
      burst(db, rand, 25);
      await db.sync!.flush(20_000);
      await converge(writerPath, replicas, `burst ${b + 1}`);
    }

    // The hub dies mid-stream (SIGKILL); the writer keeps committing offline; the hub comes back.
    burst(db, rand, 10);
    await hub.kill('SIGKILL');
    burst(db, rand, 30);
    assert.notEqual(
      db.sync!.status().hubTxid,
      db.position().txid,
      'the hub cannot hold commits made while it was down',
    );
    hub = await spawnHub(hub.dir, hub.port);
    burst(db, rand, 10);
    await db.sync!.flush(30_000);
    await converge(writerPath, replicas, 'after the hub restarted');

    // A replica dies (SIGKILL) while snapshots arrive; restarted, it resumes from its own position.
    burst(db, rand, 10);
    await kill(followers[1]!);
    burst(db, rand, 20);
    followers[1] = follow(hub.url, replicas[1]!, reader);
    burst(db, rand, 10);
    await db.sync!.flush(20_000);
    await converge(writerPath, replicas, 'after a replica restarted');

    // The hub's journal holds exactly the writer's snapshots, and each replica's journal verifies.
    const mine = await readJournal(path.join(writerPath + '-mycelite', 'journal'));
    const hubs = await readJournal(path.join(hub.dir, 'dbs', 'app', 'journal'));
    assert.equal(hubs.snapshots.length, mine.snapshots.length);
    assert.deepEqual(hubs.journalId, mine.journalId);
    for (let i = 0; i < mine.snapshots.length; i++) {
      assert.deepEqual(
        hubs.snapshots[i]!.bytes,
        mine.snapshots[i]!.bytes,
        `snapshot ${i + 1} differs on the hub`,
      );
    }
    for (const f of followers) await kill(f);
    for (const r of replicas) {
      const v = spawnSync(process.execPath, [MYCELITE_BIN, 'verify', r], { encoding: 'utf8' });
      assert.equal(v.status, 0, `mycelite verify ${path.basename(r)}: ${v.stdout}${v.stderr}`);
      assert.ok(fs.existsSync(`${r}-mycelite/journal`));
    }
  } finally {
    await db.sync?.close();
    db.close();
    await hub.kill('SIGKILL');
  }
});

test('roles do not mix: a replica refuses a writer database, a writer refuses a replica, bad hub options fail fast', async () => {
  const dir = tempDir();
  const { startTestHub } = await import('./helpers/hub.js');
  const th = await startTestHub(path.join(dir, 'hub'));
  try {
    const hub = { url: th.url, db: 'roles' };
    const writerPath = path.join(dir, 'w.db');
    const w = await open(writerPath, { hub: { ...hub, token: await th.token('roles', 'writer') } });
    w.exec('create table t(a); insert into t values (1)');
    await w.sync!.flush(10_000);
    await w.sync!.close();
    w.close();
    const reader = await th.token('roles', 'reader');
    await assert.rejects(openReplica(writerPath, { hub: { ...hub, token: reader } }), (e: Error) => {
      assert.equal(e.name, 'ReplicaOpenError');
      assert.match(e.message, /is a writer's database/);
      return true;
    });
    const replicaPath = path.join(dir, 'r.db');
    const r = await openReplica(replicaPath, { hub: { ...hub, token: reader } });
    await r.ready();
    await r.close();
    assert.equal(fileHash(replicaPath), fileHash(writerPath));
    await assert.rejects(open(replicaPath), /is a replica \(it follows a hub/);
    assert.equal(fileHash(replicaPath), fileHash(writerPath), 'the refused writer changed nothing');
    await assert.rejects(
      openReplica(path.join(dir, 'x.db'), { hub: { url: 'localhost:1', db: 'roles', token: reader } }),
      /not an http\(s\) URL/,
    );
    await assert.rejects(
      openReplica(path.join(dir, 'x.db'), { hub: { url: th.url, db: 'roles', token: '' } }),
      /no token \(a reader token/,
    );
    assert.equal(fs.existsSync(path.join(dir, 'x.db')), false, 'a refused replica creates no file');
  } finally {
    await th.close();
  }
});

test('a hub that cannot listen gives its data directory back', async () => {
  const dir = tempDir();
  const { startHub } = await import('../src/hub/index.js');
  const first = await startHub({ dataDir: path.join(dir, 'a'), port: 0, logLevel: 'silent' });
  try {
    await assert.rejects(
      startHub({ dataDir: path.join(dir, 'b'), port: first.port, logLevel: 'silent' }),
      /EADDRINUSE/,
    );
    const again = await startHub({ dataDir: path.join(dir, 'b'), port: 0, logLevel: 'silent' });
    await again.close();
  } finally {
    await first.close();
  }
});
