// Applying snapshots to a replica: every snapshot the real writer makes (inserts, updates, deletes,
// overflow pages, VACUUM shrinks, auto_vacuum, page size changes) applied one by one gives the writer's
// file byte for byte; a lying snapshot or a damaged replica is refused with nothing applied; a native
// SQLite reader in another process never sees a half-applied snapshot.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import BetterSqlite3 from 'better-sqlite3';
import { nodeRuntime, open } from '../src/node/index.js';
import { ChecksumMismatchError } from '../src/replica/apply.js';
import { ReplicaStore } from '../src/replica/replica.js';
import { prng, reencode, snapshotsAfter } from './helpers/replica.js';
import { cleanupTempDirs, fileHash, HELPERS, nativeIntegrity, tempDir } from './helpers/util.js';

const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  cleanupTempDirs();
});

/** A replica fed from a writer's journal. */
async function replicaOf(writerPath: string, replicaPath: string) {
  const store = await ReplicaStore.open(nodeRuntime, replicaPath);
  const journal = `${writerPath}-mycelite/journal`;
  let applied = 0;
  return {
    store,
    get applied() {
      return applied;
    },
    /** Applies every new snapshot of the writer, checking the files are equal after each one. */
    async sync(check = true): Promise<void> {
      const at = store.position?.txid ?? 0n;
      const { file, snaps } = snapshotsAfter(journal, at);
      for (const s of snaps) {
        if (store.position) await store.append(s.bytes, s.header);
        else await store.reset(file, s.bytes, s.header);
        applied++;
      }
      if (check && snaps.length > 0) {
        assert.equal(
          fileHash(replicaPath),
          fileHash(writerPath),
          `replica equals writer at txid ${store.position?.txid}`,
        );
      }
    },
  };
}

test('every snapshot of random workloads applies to a byte-identical replica', async () => {
  const dir = tempDir();
  for (const seed of [1, 2, 3]) {
    const rnd = prng(seed);
    const wPath = path.join(dir, `w${seed}.db`);
    const rPath = path.join(dir, `r${seed}.db`);
    const w = await open(wPath);
    const r = await replicaOf(wPath, rPath);
    try {
      if (seed === 2) w.pragma('auto_vacuum = FULL');
      if (seed === 3) w.pragma('journal_mode = TRUNCATE');
      w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, a INTEGER, b BLOB)');
      w.exec('CREATE INDEX ta ON t(a)');
      await r.sync();
      const ins = w.prepare('INSERT INTO t(a, b) VALUES (?, randomblob(?))');
      for (let step = 0; step < 60; step++) {
        const op = rnd();
        if (op < 0.45) {
          w.transaction(() => {
            const n = 1 + Math.floor(rnd() * 40);
            // Mostly small rows; some larger than a page (overflow chains).
            for (let i = 0; i < n; i++)
              ins.run(Math.floor(rnd() * 1e6), rnd() < 0.1 ? 20_000 : Math.floor(rnd() * 300));
          })();
        } else if (op < 0.65) {
          w.exec(
            `UPDATE t SET b = randomblob(${Math.floor(rnd() * 2000)}) WHERE a % 7 = ${Math.floor(rnd() * 7)}`,
          );
        } else if (op < 0.85) {
          w.exec(`DELETE FROM t WHERE a % 5 = ${Math.floor(rnd() * 5)}`);
        } else if (op < 0.95) {
          w.exec('VACUUM');
        } else {
          w.pragma(`page_size = ${[1024, 2048, 4096, 8192, 16384][Math.floor(rnd() * 5)]}`);
          w.exec('VACUUM');
        }
        await r.sync();
      }
      w.exec('DELETE FROM t');
      await r.sync();
      w.exec('VACUUM');
      await r.sync();
      assert.ok(r.applied > 40, `applied ${r.applied} snapshots`);
      assert.equal(r.store.checkDatabase().ok, true);
      assert.equal(nativeIntegrity(rPath), 'ok');
    } finally {
      w.close();
      r.store.close();
    }
  }
});

test('a snapshot whose postChecksum lies is refused and leaves the replica unchanged', async () => {
  const dir = tempDir();
  const wPath = path.join(dir, 'w.db');
  const rPath = path.join(dir, 'r.db');
  const w = await open(wPath);
  const r = await replicaOf(wPath, rPath);
  try {
    w.exec('CREATE TABLE t(a, b); INSERT INTO t VALUES (1, randomblob(5000))');
    await r.sync();
    const before = fileHash(rPath);
    const at = r.store.position!;
    w.exec('INSERT INTO t VALUES (2, randomblob(300))');
    const [s] = snapshotsAfter(`${wPath}-mycelite/journal`, at.txid).snaps;
    const lie = reencode(s!, { postChecksum: s!.header.postChecksum ^ 1n });
    await assert.rejects(r.store.append(lie.bytes, lie.header), ChecksumMismatchError);
    assert.equal(fileHash(rPath), before, 'nothing of the refused snapshot was applied');
    assert.equal(nativeIntegrity(rPath), 'ok');
  } finally {
    w.close();
    r.store.close();
  }
  // Reopening resolves the journal holding a snapshot the database does not: the db is rebuilt or the
  // snapshot is redone, and the replica agrees with its journal again.
  const again = await ReplicaStore.open(nodeRuntime, rPath);
  try {
    assert.equal(again.checkDatabase().ok, true);
  } finally {
    again.close();
  }
});

test('a replica database changed behind its back is refused before anything is applied', async () => {
  const dir = tempDir();
  const wPath = path.join(dir, 'w.db');
  const rPath = path.join(dir, 'r.db');
  const w = await open(wPath);
  const r = await replicaOf(wPath, rPath);
  try {
    w.exec('CREATE TABLE t(a, b); INSERT INTO t VALUES (1, randomblob(20000))');
    await r.sync();
    const at = r.store.position!;
    w.exec('UPDATE t SET a = 2, b = randomblob(20000)');
    const [s] = snapshotsAfter(`${wPath}-mycelite/journal`, at.txid).snaps;
    // Someone writes to the replica with native SQLite (the replica's own connection sees the change).
    const other = new BetterSqlite3(rPath);
    other.exec('UPDATE t SET a = 99');
    other.close();
    const damaged = fileHash(rPath);
    await assert.rejects(r.store.append(s!.bytes, s!.header), ChecksumMismatchError);
    assert.equal(fileHash(rPath), damaged, 'the refused snapshot left the file as it was');
  } finally {
    w.close();
    r.store.close();
  }
});

interface ReaderEvent {
  ready?: boolean;
  violation?: string;
  done?: boolean;
  reads?: number;
  checks?: number;
}

test('a native reader in another process never sees a half-applied snapshot', async (t) => {
  const dir = tempDir();
  const wPath = path.join(dir, 'w.db');
  const rPath = path.join(dir, 'r.db');
  const w = await open(wPath);
  const r = await replicaOf(wPath, rPath);
  w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER NOT NULL, pad BLOB)');
  await r.sync();
  const proc = spawn(process.execPath, [path.join(HELPERS, 'native-reader.mjs'), rPath], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  children.push(proc);
  const events: ReaderEvent[] = [];
  let buf = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      events.push(JSON.parse(buf.slice(0, nl)) as ReaderEvent);
      buf = buf.slice(nl + 1);
    }
  });
  const exited = new Promise((resolve) => proc.on('exit', resolve));
  const insert = w.prepare('INSERT INTO t(x, pad) VALUES (?, randomblob(?))');
  try {
    const end = Date.now() + 4000;
    for (let round = 1; Date.now() < end || round < 30; round++) {
      w.transaction(() => {
        // 100 rows whose x sum to 0; some big enough for overflow pages.
        for (let k = 0; k < 50; k++) {
          const v = (round * 7919 + k * 104729) % 1_000_003;
          insert.run(v, k % 10 === 0 ? 3000 : 40);
          insert.run(-v, k % 17 === 0 ? 6000 : 10);
        }
        if (round % 10 === 0) w.exec('DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY id LIMIT 100)');
      })();
      if (round % 15 === 0) w.exec('VACUUM');
      if (round === 20) {
        w.pragma('page_size = 4096');
        w.exec('VACUUM');
      }
      await r.sync(false);
      await sleep(1);
    }
    assert.equal(fileHash(rPath), fileHash(wPath));
    const deadline = Date.now() + 5000;
    while (!events.some((e) => e.ready) && Date.now() < deadline) await sleep(10);
  } finally {
    w.close();
    proc.kill('SIGTERM');
    await exited;
    r.store.close();
  }
  const violations = events.filter((e) => e.violation).map((e) => e.violation);
  assert.deepEqual(violations, [], 'the reader saw no broken invariant and no corrupt page');
  const done = events.find((e) => e.done);
  assert.ok(done && done.reads! > 10, `the reader read (${done?.reads} reads)`);
  t.diagnostic(
    `reader: ${done?.reads} reads, ${done?.checks} integrity checks; ${r.applied} snapshots applied`,
  );
});
