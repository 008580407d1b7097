// I/O fault injection on a replica (src/files/faulty-fs.ts): snapshots of a real writer (inserts, deletes,
// VACUUM, a page size change) are applied to a replica whose file system fails one labelled operation —
// each label the apply uses, at its first, middle and last call, with EIO, ENOSPC or a short write. The
// fault must reach the caller; after it clears, the replica reopened (recovery) continues from its own
// position and ends byte-identical to the writer, its journal verifying.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { type FaultKind, type FaultPlan, FaultyFileSystem } from '../src/files/faulty-fs.js';
import type { Runtime } from '../src/files/file-system.js';
import { JournalReader, loadHash, memorySource } from '../src/format/index.js';
import { nodeRuntime } from '../src/node/index.js';
import { NodeFileSystem } from '../src/node/node-fs.js';
import { ReplicaStore } from '../src/replica/replica.js';
import { openWith } from '../src/writer/open.js';
import { snapshotsAfter } from './helpers/replica.js';
import { cleanupTempDirs, fileHash, tempDir } from './helpers/util.js';

after(() => cleanupTempDirs());

// One for the process: SQLite's VFS is installed once, with the first runtime's file system.
const faulty = new FaultyFileSystem(new NodeFileSystem());
const rt: Runtime = { fs: faulty, resolve: nodeRuntime.resolve, tempPath: nodeRuntime.tempPath };

/** Applies every snapshot of `journal` after the store's position. */
async function feed(store: ReplicaStore, journal: string): Promise<void> {
  const { file, snaps } = snapshotsAfter(journal, store.position?.txid ?? 0n);
  for (const s of snaps) {
    if (store.position) await store.append(s.bytes, s.header);
    else await store.reset(file, s.bytes, s.header);
  }
}

async function runCase(
  journal: string,
  writer: string,
  file: string,
  plan: FaultPlan | undefined,
): Promise<{ surfaced: unknown; fired: boolean; calls: Map<string, number>; problems: string[] }> {
  faulty.calls.clear();
  faulty.fired.length = 0;
  if (plan) faulty.arm(plan);
  let surfaced: unknown;
  let store: ReplicaStore | undefined;
  try {
    store = await ReplicaStore.open(rt, file);
    await feed(store, journal);
  } catch (e) {
    surfaced = e;
  }
  faulty.disarm();
  const calls = new Map(faulty.calls);
  try {
    store?.close();
  } catch {
    // may report the fault again
  }
  const problems: string[] = [];
  try {
    const again = await ReplicaStore.open(rt, file);
    try {
      await feed(again, journal);
      const check = again.checkDatabase();
      if (!check.ok) problems.push(`database ${check.checksum} != journal ${check.expected}`);
    } finally {
      again.close();
    }
    if (fileHash(file) !== fileHash(writer)) problems.push('the replica differs from the writer');
    const bytes = new Uint8Array(fs.readFileSync(`${file}-mycelite/journal`));
    const r = new JournalReader(memorySource(bytes), { verify: true });
    for (const _ of r.snapshots());
    if (r.tornBytes > 0) problems.push(`journal has a torn tail of ${r.tornBytes} bytes after reopening`);
  } catch (e) {
    problems.push(`after the fault: ${(e as Error).message}`);
  }
  return { surfaced, fired: faulty.fired.length > 0, calls, problems };
}

test('every labelled file operation of a replica, failed with EIO, ENOSPC or a short write: an error, then recovery to the writer bytes', async (t) => {
  await loadHash();
  const dir = tempDir();
  const writer = path.join(dir, 'w.db');
  const w = await openWith(rt, writer);
  w.exec('create table t(id integer primary key, k, v)');
  for (let i = 0; i < 6; i++) w.exec(`insert into t(k, v) values (${i}, randomblob(${300 + i * 900}))`);
  w.exec('delete from t where k % 2 = 0');
  w.exec('vacuum');
  w.pragma('page_size = 8192');
  w.exec('vacuum');
  w.exec('insert into t(k, v) values (99, randomblob(5000)); update t set v = randomblob(10) where k = 1');
  w.close();
  const journal = `${writer}-mycelite/journal`;

  const dry = await runCase(journal, writer, path.join(dir, 'dry.db'), undefined);
  assert.equal(dry.surfaced, undefined);
  assert.deepEqual(dry.problems, []);
  const counts = [...dry.calls.entries()].filter(([l]) =>
    /\.(open|read|write|truncate|sync|delete|syncDir|rename|mkdir)$/.test(l),
  );
  let cases = 0;
  let fired = 0;
  const silent: string[] = [];
  const failures: string[] = [];
  for (const [label, calls] of counts) {
    const kinds: FaultKind[] = label.endsWith('.write') ? ['EIO', 'ENOSPC', 'short'] : ['EIO', 'ENOSPC'];
    for (const kind of kinds) {
      for (const nth of [...new Set([1, Math.ceil(calls / 2), calls])]) {
        const r = await runCase(journal, writer, path.join(dir, `c${cases++}.db`), { label, nth, kind });
        if (r.fired) fired++;
        if (r.fired && r.surfaced === undefined) silent.push(`${label}#${nth}/${kind}`);
        for (const p of r.problems) failures.push(`${label}#${nth}/${kind}: ${p}`);
      }
    }
  }
  t.diagnostic(
    `${counts.length} labels (${counts.map(([l]) => l).join(' ')}), ${cases} cases, ${fired} faults fired; absorbed: ${silent.join(' ') || 'none'}`,
  );
  assert.deepEqual(failures, []);
  assert.ok(fired >= counts.length);
});

test('a commit whose rollback journal cannot be deleted did not happen: recover() in the same process (as the follower does) settles the database first', async () => {
  await loadHash();
  const dir = tempDir();
  const writer = path.join(dir, 'w.db');
  const w = await openWith(rt, writer);
  w.exec('create table t(id integer primary key, v)');
  w.exec('insert into t(v) values (randomblob(3000))');
  w.exec('update t set v = randomblob(5000)');
  w.close();
  const { file, snaps } = snapshotsAfter(`${writer}-mycelite/journal`, 0n);
  const r = path.join(dir, 'r.db');
  let store = await ReplicaStore.open(rt, r);
  try {
    await store.reset(file, snaps[0]!.bytes, snaps[0]!.header);
    await store.append(snaps[1]!.bytes, snaps[1]!.header);
    // SQLite's COMMIT fails to delete its journal: the journal is hot, the commit will be rolled back.
    faulty.arm({ label: 'rollback.delete', nth: 1, kind: 'EIO' });
    await assert.rejects(store.append(snaps[2]!.bytes, snaps[2]!.header), /EIO/);
    faulty.disarm();
    assert.ok(fs.existsSync(`${r}-journal`), 'a hot journal is left');
    await store.recover();
    store.close();
    // Opening rolls a hot journal back: the database must still be where the replica says it is.
    store = await ReplicaStore.open(rt, r);
    assert.ok(store.checkDatabase().ok, 'the database is at the position the replica claims');
    assert.equal(store.position!.txid, snaps[2]!.header.txid);
  } finally {
    faulty.disarm();
    store.close();
  }
  assert.equal(fileHash(r), fileHash(writer));
});
