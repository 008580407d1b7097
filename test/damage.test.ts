// The database file is the user's data: a damaged or missing journal, or a change another program made,
// is never a reason to change it (issue 15, case 1 and 2). Each case is reproduced as a user would, with
// the `mycelite` command and real files; the database must keep every row, the damaged journal must be
// set aside (never deleted), and the user must hear about it in one line.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { readSyncedMarker, type SyncedMarker, writeSyncedMarker } from '../src/journal/synced-marker.js';
import { nodeRuntime, type OpenWarning, open, verifyDatabase } from '../src/node/index.js';
import { runCli } from './helpers/cli.js';
import { startTestHub } from './helpers/hub.js';
import { cleanupTempDirs, fileHash, journalEnd, journalOf, replayMatches, tempDir } from './helpers/util.js';

after(cleanupTempDirs);

/** A database with 5 rows written by 6 transactions (a table, then one row each). */
async function fiveRows(): Promise<{ dir: string; db: string; journal: string; offsets: number[] }> {
  const dir = tempDir();
  const db = path.join(dir, 'a.db');
  const r = await runCli(['exec', db, 'create table t(x); insert into t values (1)']);
  assert.equal(r.status, 0, r.stderr);
  for (let i = 2; i <= 5; i++) {
    const more = await runCli(['exec', db, `insert into t values (${i})`]);
    assert.equal(more.status, 0, more.stderr);
  }
  const log = await runCli(['log', db, '--json']);
  const offsets: number[] = [];
  let at = 64;
  for (const line of log.stdout.trim().split('\n')) {
    offsets.push(at);
    at += (JSON.parse(line) as { bytes: number }).bytes;
  }
  assert.equal(offsets.length, 6);
  return { dir, db, journal: journalOf(db), offsets };
}

/** Files set aside beside the journal. */
function asides(journal: string): string[] {
  return fs.readdirSync(path.dirname(journal)).filter((f) => f.startsWith('journal.damaged-'));
}

/** After the damage: the next exec keeps all 5 rows, says so, and the journal agrees with the file. */
async function keepsEveryRow(db: string, journal: string, expect: RegExp, asideSize?: number): Promise<void> {
  const before = fileHash(db);
  const r = await runCli(['exec', db, 'select count(*) from t']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'count(*)\n5\n');
  assert.match(r.stderr, /^mycelite: warning: /m);
  assert.match(r.stderr, expect);
  assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  assert.equal(fileHash(db), before, 'the database file was not changed');
  if (asideSize !== undefined) {
    const found = asides(journal);
    assert.equal(found.length, 1, 'the damaged journal was set aside');
    assert.equal(fs.statSync(path.join(path.dirname(journal), found[0]!)).size, asideSize);
  }
  const m = await replayMatches(db);
  assert.ok(m.ok, 'the journal replays to the database');
  const v = await runCli(['verify', db]);
  assert.equal(v.status, 0, v.stdout + v.stderr);
  const log = await runCli(['log', db]);
  assert.match(log.stdout.trim().split('\n').at(-1)!, /outside change/);
  // Writing goes on, and a second open says nothing more.
  const w = await runCli(['exec', db, 'insert into t values (6); select count(*) from t']);
  assert.equal(w.status, 0, w.stderr);
  assert.equal(w.stdout, 'count(*)\n6\n');
  assert.equal(w.stderr, '');
  assert.ok((await replayMatches(db)).ok);
}

describe('a damaged or missing journal never changes the database', () => {
  test('journal deleted: the database is kept and a new history starts from it', async () => {
    const { db, journal } = await fiveRows();
    fs.rmSync(journal);
    const before = fileHash(db);
    const r = await runCli(['exec', db, 'select count(*) from t']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'count(*)\n5\n');
    assert.match(r.stderr, /^mycelite: warning: .*journal was missing.*kept as it is/);
    assert.equal(fileHash(db), before);
    assert.ok((await replayMatches(db)).ok);
    const v = await runCli(['verify', db]);
    assert.equal(v.status, 0, v.stdout + v.stderr);
  });

  test('journal cut to its header (truncate -s 64)', async () => {
    const { db, journal } = await fiveRows();
    const size = fs.statSync(journal).size;
    fs.truncateSync(journal, 64);
    await keepsEveryRow(db, journal, /journal lost committed snapshots .*copied to /, 64);
    assert.ok(size > 64);
  });

  test('journal cut at a snapshot boundary (the last two snapshots gone)', async () => {
    const { db, journal, offsets } = await fiveRows();
    fs.truncateSync(journal, offsets[4]!);
    await keepsEveryRow(
      db,
      journal,
      /journal lost committed snapshots \(it ends at txid 4; the database was at txid 6\)/,
      offsets[4],
    );
  });

  test('journal cut in the middle of a snapshot', async () => {
    const { db, journal, offsets } = await fiveRows();
    fs.truncateSync(journal, offsets[4]! + 40);
    await keepsEveryRow(db, journal, /journal lost committed snapshots/, offsets[4]! + 40);
  });

  test("journal's tail zeroed (the last two snapshots)", async () => {
    const { db, journal, offsets } = await fiveRows();
    const size = fs.statSync(journal).size;
    const fd = fs.openSync(journal, 'r+');
    fs.writeSync(fd, Buffer.alloc(size - offsets[4]!), 0, size - offsets[4]!, offsets[4]!);
    fs.closeSync(fd);
    await keepsEveryRow(db, journal, /journal lost committed snapshots/, size);
  });

  test('one byte flipped in the last snapshot', async () => {
    const { db, journal, offsets } = await fiveRows();
    const size = fs.statSync(journal).size;
    const fd = fs.openSync(journal, 'r+');
    const b = Buffer.alloc(1);
    const at = offsets[5]! + 70;
    fs.readSync(fd, b, 0, 1, at);
    b[0] = b[0]! ^ 0x40;
    fs.writeSync(fd, b, 0, 1, at);
    fs.closeSync(fd);
    await keepsEveryRow(db, journal, /journal lost committed snapshots/, size);
  });

  test('garbage after the last snapshot of a cleanly closed journal (an append a crash cut short) is cut silently', async () => {
    const { db, journal } = await fiveRows();
    fs.appendFileSync(journal, Buffer.from('SNAP and then nothing useful'));
    const r = await runCli(['exec', db, 'select count(*) from t']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'count(*)\n5\n');
    assert.equal(r.stderr, '');
    assert.deepEqual(asides(journal), []);
  });

  test("durability 'sqlite': a journal cut at a snapshot boundary is reported to the API and the file kept", async () => {
    const dir = tempDir();
    const file = path.join(dir, 'a.db');
    let db = await open(file, { durability: 'sqlite' });
    db.exec('create table t(x)');
    for (let i = 1; i <= 5; i++) db.prepare('insert into t values (?)').run(i);
    const cut = journalEnd(journalOf(file));
    db.exec('insert into t values (6)');
    db.close();
    fs.truncateSync(journalOf(file), cut);
    const before = fileHash(file);
    const warnings: OpenWarning[] = [];
    db = await open(file, { durability: 'sqlite', onWarning: (w) => warnings.push(w) });
    try {
      assert.equal(db.prepare('select count(*) from t').pluck().get(), 6);
      assert.equal(warnings.length, 1);
      assert.equal(warnings[0]!.code, 'journal_damaged');
      assert.ok(warnings[0]!.aside && fs.existsSync(warnings[0]!.aside));
      assert.deepEqual(db.warnings, warnings);
    } finally {
      db.close();
    }
    assert.equal(fileHash(file), before);
    const v = await verifyDatabase(nodeRuntime.fs, file, path.join(dir, 'v.tmp'));
    assert.ok(v.ok, v.problem);
  });
});

describe('a change another program makes is recorded, not lost and not poisoning the history', () => {
  test('written by native SQLite while no Mycelite process has it open', async () => {
    const { db } = await fiveRows();
    const Native = (await import('better-sqlite3')).default;
    const n = new Native(db);
    n.exec('insert into t values (100), (101)');
    n.close();
    const before = fileHash(db);
    const r = await runCli(['exec', db, 'select count(*) from t']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'count(*)\n7\n');
    assert.match(
      r.stderr,
      /^mycelite: warning: .*changed by another program.*recorded as snapshot 7 \(an outside change\)\n$/,
    );
    assert.equal(fileHash(db), before);
    assert.ok((await replayMatches(db)).ok);
    const log = await runCli(['log', db, '--json']);
    const last = JSON.parse(log.stdout.trim().split('\n').at(-1)!) as {
      txid: number;
      outside: boolean;
      pages: number;
    };
    assert.equal(last.txid, 7);
    assert.equal(last.outside, true);
    assert.ok(last.pages <= 3, `a diff of the pages that changed, not an image (${last.pages} pages)`);
    const v = await runCli(['verify', db]);
    assert.equal(v.status, 0, v.stdout + v.stderr);
  });

  test('the outside change is pushed, and a new replica equals the writer (the hub is not poisoned)', async () => {
    const { dir, db } = await fiveRows();
    const h = await startTestHub();
    try {
      const token = await h.token('app', 'writer');
      const push = ['push', db, '--hub', h.url, '--db', 'app', '--token', token];
      assert.equal((await runCli(push)).status, 0);
      const Native = (await import('better-sqlite3')).default;
      const n = new Native(db);
      n.exec('update t set x = x * 10 where x > 2');
      n.close();
      const w = await runCli(['exec', db, 'insert into t values (6)']);
      assert.equal(w.status, 0, w.stderr);
      assert.match(w.stderr, /changed by another program/);
      const p = await runCli(push);
      assert.equal(p.status, 0, p.stderr);
      const replica = path.join(dir, 'replica.db');
      const f = await runCli([
        'follow',
        h.url,
        replica,
        '--db',
        'app',
        '--token',
        await h.token('app', 'reader'),
        '--once',
      ]);
      assert.equal(f.status, 0, f.stderr);
      assert.equal(fileHash(replica), fileHash(db));
    } finally {
      await h.close();
    }
  });

  test('written by native SQLite between two transactions of an open writer', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'a.db');
    const warnings: OpenWarning[] = [];
    const db = await open(file, { onWarning: (w) => warnings.push(w) });
    try {
      db.exec('create table t(x); insert into t values (1)');
      const Native = (await import('better-sqlite3')).default;
      const n = new Native(file);
      n.exec('insert into t values (2)');
      n.close();
      assert.equal(warnings.length, 0);
      assert.equal(db.prepare('select count(*) from t').pluck().get(), 2);
      assert.equal(warnings.length, 1, 'the next transaction noticed it');
      assert.equal(warnings[0]!.code, 'outside_change');
      assert.equal(db.position().txid, 3n);
      db.exec('insert into t values (3)');
      assert.equal(db.position().txid, 4n);
    } finally {
      db.close();
    }
    assert.ok((await replayMatches(file)).ok);
    const v = await verifyDatabase(nodeRuntime.fs, file, path.join(dir, 'v.tmp'));
    assert.ok(v.ok, v.problem);
  });
});

describe('verify after a crash: recovery pending is not damage (issue 15, case 6)', () => {
  /**
   * A writer SIGKILLed after 40 commits and before any checkpoint, its file left as the marker saw it:
   * what a kill between each commit's journal fsync and its write-back leaves (the page cache keeps
   * write-backs a SIGKILL interrupts only rarely, so the test puts the file back itself).
   */
  async function killedWriter(): Promise<string> {
    const file = path.join(tempDir(), 'k.db');
    const first = await open(file);
    first.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)');
    first.close();
    const atMarker = fs.readFileSync(file);
    const src = new URL('../src/node/index.js', import.meta.url).href;
    const script = `
      const { open } = await import(${JSON.stringify(src)});
      const db = await open(${JSON.stringify(file)});
      for (let i = 0; i < 40; i++) db.prepare('INSERT INTO t(v) VALUES (randomblob(300))').run();
      process.stdout.write('done\\n');
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      let out = '';
      child.stdout!.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        if (out.includes('done\n')) resolve();
      });
      child.on('exit', () => reject(new Error('the writer exited before it committed')));
    });
    const exited = new Promise((r) => child.on('exit', r));
    child.kill('SIGKILL');
    await exited;
    fs.writeFileSync(file, atMarker);
    return file;
  }

  test('a file that lags a whole journal: exit 0, "recovery pending", and what the next open redoes', async () => {
    const file = await killedWriter();
    // The crash left the file behind (else this test proves nothing).
    assert.equal((await replayMatches(file)).ok, false);
    const before = fileHash(file);
    const v = await runCli(['verify', file]);
    assert.equal(v.status, 0, v.stdout + v.stderr);
    assert.match(
      v.stdout,
      /^ok: 41 snapshots, last txid 41 .*recovery pending: the database file lags its journal since txid \d+ .*redoes txids \d+\.\.41\n$/,
    );
    const j = await runCli(['verify', file, '--json']);
    assert.equal(j.status, 0);
    assert.match((JSON.parse(j.stdout) as { pending: string }).pending, /^recovery pending/);
    assert.equal(fileHash(file), before, 'verify wrote nothing');
    // The next open does what verify said.
    const r = await runCli(['exec', file, 'select count(*) from t']);
    assert.equal(r.stdout, 'count(*)\n40\n');
    assert.equal(r.stderr, '');
    const again = await runCli(['verify', file]);
    assert.match(again.stdout, /^ok: 41 snapshots, last txid 41\n$/);
  });

  test('real damage while recovery is pending is still damage: exit 1, with the offset and txid', async () => {
    const file = await killedWriter();
    const journal = journalOf(file);
    const log = await runCli(['log', file, '--json']);
    const sizes = log.stdout
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { bytes: number }).bytes);
    const offset = 64 + sizes.slice(0, 19).reduce((a, b) => a + b, 0);
    const fd = fs.openSync(journal, 'r+');
    fs.writeSync(fd, Buffer.from([0xff, 0xfe]), 0, 2, offset + 80);
    fs.closeSync(fd);
    const v = await runCli(['verify', file, '--json']);
    assert.equal(v.status, 1);
    const out = JSON.parse(v.stdout) as { ok: boolean; offset: number; txid: number };
    assert.equal(out.ok, false);
    assert.equal(out.offset, offset);
    assert.equal(out.txid, 20);
  });
});

describe('damage in the middle of the history is reported, not built upon silently (issue 15, case 5)', () => {
  test('one flipped body byte in snapshot 25 of 50: exec warns in one line, every time, and the rows stay', async () => {
    const file = path.join(tempDir(), 'h.db');
    const db = await open(file);
    db.exec('create table t(x)');
    for (let i = 0; i < 49; i++) db.prepare('insert into t values (randomblob(200))').run();
    await db.historyCheck;
    db.close();
    const marker = readSyncedMarker(nodeRuntime.fs, `${file}-mycelite/synced`);
    assert.ok(
      marker && marker !== 'bad' && marker.checkedTxid === 50n,
      'a clean history is checked once, then remembered',
    );
    const log = await runCli(['log', file, '--json']);
    const sizes = log.stdout
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { bytes: number }).bytes);
    const at = 64 + sizes.slice(0, 24).reduce((a, b) => a + b, 0) + 64 + 10;
    const journal = journalOf(file);
    const fd = fs.openSync(journal, 'r+');
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, at);
    b[0] = b[0]! ^ 0x01;
    fs.writeSync(fd, b, 0, 1, at);
    fs.closeSync(fd);
    // The marker remembers snapshots up to 50 as checked: a damage found later is found by a full check.
    const fresh = readSyncedMarker(nodeRuntime.fs, `${file}-mycelite/synced`) as SyncedMarker;
    const m = nodeRuntime.fs.open(`${file}-mycelite/synced`);
    writeSyncedMarker(m, { ...fresh, fingerprint: fresh.fingerprint!, checkedTxid: 0n });
    m.close();
    for (const sql of ['select count(*) from t', 'insert into t values (1); select count(*) from t']) {
      const r = await runCli(['exec', file, sql]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /^count\(\*\)\n(49|50)\n$/);
      assert.match(
        r.stderr,
        /^mycelite: warning: .*snapshot 25 of its history is damaged .*the database itself is fine/,
      );
      assert.equal(r.stderr.trim().split('\n').length, 1);
    }
    const v = await runCli(['verify', file]);
    assert.equal(v.status, 1);
  });
});
