/**
 * better-sqlite3's open options on `open()`: `timeout` (busy timeout, 5000 ms by default), `fileMustExist`
 * and `readonly`, against real files and a native SQLite process (better-sqlite3) holding the lock.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import BetterSqlite3 from 'better-sqlite3';
import { OpenError, open, openReadonly } from '../src/node/index.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
let dir: string;

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-open-options-'));
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A native SQLite process that takes an EXCLUSIVE lock on `file`, says "locked", and ends it after `ms`. */
async function nativeLock(file: string, ms: number): Promise<ChildProcess> {
  const code = `
    import Database from 'better-sqlite3';
    const db = new Database(${JSON.stringify(file)});
    db.exec('BEGIN EXCLUSIVE');
    console.log('locked');
    setTimeout(() => { db.exec('ROLLBACK'); db.close(); }, ${ms});`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { cwd: ROOT });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('locked')) resolve();
    });
    child.on('exit', (c) => reject(new Error(`lock holder exited ${c}`)));
  });
  return child;
}

const exited = (c: ChildProcess): Promise<unknown> =>
  c.exitCode !== null ? Promise.resolve() : new Promise((r) => c.on('exit', r));

describe('timeout', () => {
  test('5000 ms by default, as better-sqlite3; the option sets it', async () => {
    const a = await open(path.join(dir, 'timeout-a.db'));
    assert.equal(a.pragma('busy_timeout', { simple: true }), 5000);
    a.close();
    const b = await open(path.join(dir, 'timeout-a.db'), { timeout: 250 });
    assert.equal(b.pragma('busy_timeout', { simple: true }), 250);
    b.close();
    const r = await openReadonly(path.join(dir, 'timeout-a.db'));
    assert.equal(r.pragma('busy_timeout', { simple: true }), 5000);
    r.close();
  });

  test('a write waits for a native process to let go of its lock', async () => {
    const file = path.join(dir, 'busy.db');
    const db = await open(file);
    db.exec('create table t(a)');
    const holder = await nativeLock(file, 400);
    const started = performance.now();
    db.prepare('insert into t values (1)').run();
    assert.ok(performance.now() - started > 100, 'the write did not wait for the lock');
    await exited(holder);
    assert.equal((db.prepare('select count(*) as n from t').get() as { n: number }).n, 1);
    db.close();
  });

  test('timeout 0: the write fails at once with SQLITE_BUSY', async () => {
    const file = path.join(dir, 'busy0.db');
    const db = await open(file, { timeout: 0 });
    db.exec('create table t(a)');
    const holder = await nativeLock(file, 60_000);
    try {
      assert.throws(() => db.prepare('insert into t values (1)').run(), { code: 'SQLITE_BUSY' });
    } finally {
      holder.kill();
      await exited(holder);
    }
    db.close();
  });

  test('a bad timeout is an OpenError and creates nothing', async () => {
    const file = path.join(dir, 'bad-timeout.db');
    for (const timeout of [-1, 1.5, Number.NaN, '100' as unknown as number]) {
      await assert.rejects(
        open(file, { timeout }),
        (e) => e instanceof OpenError && /timeout must be/.test(e.message),
      );
    }
    assert.equal(fs.existsSync(file), false);
    assert.equal(fs.existsSync(`${file}-mycelite`), false);
  });
});

describe('fileMustExist', () => {
  test('a missing file is an OpenError and nothing is created', async () => {
    const file = path.join(dir, 'missing.db');
    await assert.rejects(open(file, { fileMustExist: true }), (e) => {
      assert.ok(e instanceof OpenError);
      assert.match(e.message, /^cannot open .*missing\.db: it does not exist \(fileMustExist\)$/);
      return true;
    });
    assert.deepEqual(
      fs.readdirSync(dir).filter((f) => f.startsWith('missing')),
      [],
    );
  });

  test('an existing file opens', async () => {
    const file = path.join(dir, 'exists.db');
    const native = new BetterSqlite3(file);
    native.exec('create table t(a); insert into t values (7)');
    native.close();
    const db = await open(file, { fileMustExist: true, onWarning: () => {} });
    assert.equal((db.prepare('select a from t').get() as { a: number }).a, 7);
    db.close();
  });
});

describe('a failed open creates nothing', () => {
  test('a file that is not SQLite: OpenError, and no -mycelite directory', async () => {
    const file = path.join(dir, 'notes.db');
    fs.writeFileSync(file, 'hello, no database here\n');
    await assert.rejects(
      open(file),
      (e) => e instanceof OpenError && /not a SQLite database/.test(e.message),
    );
    assert.equal(fs.existsSync(`${file}-mycelite`), false);
    assert.equal(fs.readFileSync(file, 'utf8'), 'hello, no database here\n');
  });
});

describe('a failed open removes only what holds nothing and no one holds', () => {
  test("two opens of one new database at once: the one that lost keeps the winner's files", async () => {
    const file = path.join(dir, 'race.db');
    const [a, b] = await Promise.allSettled([open(file), open(file)]);
    const won = a.status === 'fulfilled' ? a.value : b.status === 'fulfilled' ? b.value : undefined;
    const lost = a.status === 'rejected' ? a.reason : b.status === 'rejected' ? b.reason : undefined;
    assert.ok(won && lost, 'one open wins, one loses');
    assert.match(String(lost), /already open for writing/);
    won.exec('create table t(a); insert into t values (1)');
    won.close();
    assert.equal(fs.existsSync(`${file}-mycelite/journal`), true, "the loser removed the winner's journal");
    const again = await open(file);
    assert.equal((again.prepare('select count(*) as n from t').get() as { n: number }).n, 1);
    again.close();
  });
});

describe('readonly', () => {
  test('reads a plain SQLite file, refuses writes, creates no journal', async () => {
    const file = path.join(dir, 'plain.db');
    const native = new BetterSqlite3(file);
    native.exec('create table t(a); insert into t values (1), (2)');
    native.close();
    const db = await open(file, { readonly: true });
    assert.equal(db.readonly, true);
    assert.equal((db.prepare('select count(*) as n from t').get() as { n: number }).n, 2);
    assert.throws(() => db.exec('insert into t values (3)'), { code: 'SQLITE_READONLY' });
    db.close();
    assert.equal(fs.existsSync(`${file}-mycelite`), false);
  });

  test('a missing file is an OpenError and nothing is created', async () => {
    const file = path.join(dir, 'missing-ro.db');
    await assert.rejects(
      open(file, { readonly: true }),
      /^OpenError: cannot open .* read-only: it does not exist$/,
    );
    assert.equal(fs.existsSync(file), false);
  });

  test("reads a writer's database while the writer has it open", async () => {
    const file = path.join(dir, 'live.db');
    const writer = await open(file);
    writer.exec('create table t(a); insert into t values (1)');
    const reader = await open(file, { readonly: true });
    writer.exec('insert into t values (2)');
    assert.equal((reader.prepare('select count(*) as n from t').get() as { n: number }).n, 2);
    reader.close();
    writer.close();
  });
});
