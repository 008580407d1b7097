// Fsync failure semantics (PostgreSQL's "fsyncgate"): Linux may mark the pages a failed fsync could not
// write as clean and report success at the next fsync, so after a failed fsync a writer must never take
// the data it covered as durable. The file system here is PowerLossFileSystem over FaultyFileSystem: a
// sync that fails (EIO) makes nothing durable, and a later sync that succeeds does not make those writes
// durable either (src/files/power-loss.ts). Each case fails one fsync, goes on as a program would, cuts
// the power, recovers the files and reopens: the failed commit is absent, no acknowledged commit is lost,
// replay == database, integrity ok. docs/RELIABILITY.md, "Fsync failure".
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { FaultyFileSystem } from '../src/files/faulty-fs.js';
import { PowerLossFileSystem, type RecoverOptions } from '../src/files/power-loss.js';
import { loadHash } from '../src/format/index.js';
import { nodeRuntime } from '../src/node/index.js';
import { NodeFileSystem } from '../src/node/node-fs.js';
import { verifyDatabase } from '../src/restore/restore.js';
import { type MyceliteDatabase, openWith } from '../src/writer/open.js';
import { powerRuntime, scratchDir } from './helpers/power-loss.js';
import { nativeIntegrity } from './helpers/util.js';

// One for the process: SQLite's VFS keeps the first runtime's file system.
const faulty = new FaultyFileSystem(new NodeFileSystem());
const power = new PowerLossFileSystem(faulty);
const rt = powerRuntime(power);
const base = scratchDir('mycelite-fsync-');
after(() => fs.rmSync(base, { recursive: true, force: true }));
let n = 0;

type Durability = 'journal' | 'sqlite';
const DURABILITIES: Durability[] = ['journal', 'sqlite'];

/** A fresh tracked directory and the database path in it. */
function fresh(): string {
  faulty.disarm();
  faulty.fired.length = 0;
  const dir = path.join(base, `c${n++}`);
  fs.mkdirSync(dir);
  power.track(dir);
  return path.join(dir, 'f.db');
}

async function openDb(file: string, durability: Durability): Promise<MyceliteDatabase> {
  const db = await openWith(rt, file, { durability, history: false });
  db.exec('PRAGMA synchronous = EXTRA'); // durability 'sqlite' in DELETE mode needs it (power-loss.test.ts)
  return db;
}

/** Commits row `n` (a transaction of its own); true once COMMIT returned. */
function commit(db: MyceliteDatabase, n: number): boolean {
  db.exec('BEGIN');
  db.prepare('INSERT INTO acks(n, v) VALUES (?, randomblob(3000))').run(n);
  db.exec('COMMIT');
  return true;
}

/** Cuts the power, recovers the files (strict), and checks the database with the plain file system. */
async function afterPowerLoss(
  file: string,
  durability: Durability,
  options: RecoverOptions = {},
): Promise<{ rows: number[]; problems: string[] }> {
  faulty.disarm();
  power.recover(options);
  power.untrack();
  const problems: string[] = [];
  const again = await openWith(rt, file, { durability });
  let rows: number[] = [];
  try {
    rows = (again.prepare('SELECT n FROM acks ORDER BY n').pluck().all() as number[]).map(Number);
  } finally {
    again.close();
  }
  const v = await verifyDatabase(nodeRuntime.fs, file, `${file}.verify`);
  if (!v.ok) problems.push(`replay != database: ${v.problem}`);
  const integrity = nativeIntegrity(file);
  if (integrity !== 'ok') problems.push(`integrity: ${integrity}`);
  return { rows, problems };
}

/** The fsyncs of a commit, per durability: ours, and SQLite's database fsync (durability 'sqlite'). */
const COMMIT_SYNCS: Record<Durability, string[]> = {
  journal: ['journal.sync'],
  sqlite: ['journal.sync', 'db.sync', 'rollback.sync'],
};

for (const durability of DURABILITIES)
  for (const label of COMMIT_SYNCS[durability])
    for (const goOn of [false, true])
      test(`durability ${durability}: a commit whose ${label} fails is an error and never becomes durable${goOn ? '; commits after it do' : ' (the program stops there)'}`, async () => {
        await loadHash();
        const file = fresh();
        const db = await openDb(file, durability);
        db.exec('CREATE TABLE acks(n INTEGER PRIMARY KEY, v)');
        for (let i = 1; i <= 3; i++) commit(db, i);
        faulty.arm({ label, nth: 1, kind: 'EIO' });
        assert.throws(
          () => commit(db, 4),
          (e: Error) => /EIO|I\/O|disk/i.test(`${e.message} ${(e.cause as Error)?.message ?? ''}`),
          'the commit reports the failed fsync',
        );
        assert.equal(faulty.fired.length, 1);
        faulty.fired.length = 0;
        if (db.inTransaction) db.exec('ROLLBACK');
        // The connection goes on (the failed snapshot was cut; later commits write and fsync their own bytes).
        const acked: number[] = [1, 2, 3];
        if (goOn)
          for (let i = 5; i <= 6; i++)
            if (commit(db, i)) acked.push(i);
            else db.close();
        power.crash();
        try {
          db.close();
        } catch {
          // the power is off
        }
        const { rows, problems } = await afterPowerLoss(file, durability);
        assert.deepEqual(problems, []);
        assert.deepEqual(rows, acked, 'every acknowledged commit, and not the failed one');
      });

test("durability sqlite: a commit whose journal deletion cannot be made durable (EXTRA's directory fsync fails) is reported failed, put back durably, and absent after a power loss", async () => {
  await loadHash();
  const file = fresh();
  const db = await openDb(file, 'sqlite');
  db.exec('CREATE TABLE acks(n INTEGER PRIMARY KEY, v)');
  db.exec('CREATE INDEX acks_v ON acks(v)');
  for (let i = 1; i <= 3; i++) commit(db, i);
  // Each commit: the journal's directory fsync when it is created, then again after it is deleted.
  faulty.arm({ label: 'rollback.syncDir', nth: 2, kind: 'EIO' });
  assert.throws(() => commit(db, 4), /EIO|disk I\/O/);
  assert.equal(faulty.fired.length, 1);
  faulty.fired.length = 0;
  power.crash();
  try {
    db.close();
  } catch {
    // the power is off
  }
  // The unlink of SQLite's journal survives (no hot journal brings the old pages back); data not synced
  // does not: the pages put back over the commit must have been made durable.
  const { rows, problems } = await afterPowerLoss(file, 'sqlite', { keepDirectoryChanges: true });
  assert.deepEqual(problems, []);
  assert.deepEqual(rows, [1, 2, 3]);
});

test('durability journal: close() reports a final checkpoint whose fsync failed; nothing is lost', async () => {
  await loadHash();
  const file = fresh();
  const db = await openDb(file, 'journal');
  db.exec('CREATE TABLE acks(n INTEGER PRIMARY KEY, v)');
  for (let i = 1; i <= 3; i++) commit(db, i);
  faulty.arm({ label: 'db.sync', nth: 1, kind: 'EIO' });
  assert.throws(() => db.close(), /durable failed .*EIO/);
  assert.equal(faulty.fired.length, 1);
  faulty.fired.length = 0;
  const { rows, problems } = await afterPowerLoss(file, 'journal');
  assert.deepEqual(problems, []);
  assert.deepEqual(rows, [1, 2, 3]);
});

test('durability journal: a failed checkpoint fsync of the database makes the writer refuse further access; a later fsync that succeeds is never taken for the lost write-backs (fsyncgate)', async () => {
  await loadHash();
  const file = fresh();
  let db = await openDb(file, 'journal');
  db.exec('CREATE TABLE acks(n INTEGER PRIMARY KEY, v)');
  const acked: number[] = [];
  for (let i = 1; i <= 5; i++) if (commit(db, i)) acked.push(i);
  // A checkpoint (here the one before a compaction) fsyncs the written-back database: it fails.
  faulty.arm({ label: 'db.sync', nth: 1, kind: 'EIO' });
  assert.throws(() => db.compact({}), /EIO/);
  assert.equal(faulty.fired.length, 1, 'the database fsync failed');
  faulty.fired.length = 0;
  // The pages written back before it may never reach the disk: the file lags its journal until reopened.
  let refused: unknown;
  try {
    if (commit(db, 6)) acked.push(6);
  } catch (e) {
    refused = e;
  }
  try {
    db.close();
  } catch {
    // a close after the failure may report it again
  }
  // Reopened (redo rewrites what may be missing, then fsyncs and moves the synced marker), closed; then
  // the power goes. Had the marker been moved over the lost write-backs, nothing would redo them now.
  db = await openDb(file, 'journal');
  db.close();
  power.crash();
  const { rows, problems } = await afterPowerLoss(file, 'journal');
  assert.deepEqual(problems, []);
  assert.deepEqual(rows, acked);
  // SQLite reports the VFS's DatabaseBehindError as a disk I/O error carrying its message.
  assert.match(
    String(refused),
    /durable failed .*EIO.*close it and open it again/,
    'the next commit was refused',
  );
});
