// `mycelite replicate` at its edges (issue 16): bad input (clear one-line errors, exit codes, nothing
// left behind), a second sidecar, the application switching journal mode or dropping its WAL while the
// sidecar is stopped, a damaged WAL frame, and the config-file daemon (SIGHUP reload, /metrics).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { FLAG_OUTSIDE } from '../src/format/index.js';
import { journalPaths } from '../src/journal/paths.js';
import { replicate } from '../src/sidecar/replicate.js';
import { decodeWalHeader, WAL_HEADER_SIZE, WalFile } from '../src/sidecar/wal-file.js';
import { readWalState, WalStateFile } from '../src/sidecar/wal-state.js';
import { runCli } from './helpers/cli.js';
import { startTestHub } from './helpers/hub.js';
import { type Sidecar, spawnSidecar } from './helpers/sidecar.js';
import { cleanupTempDirs, journalOf, replayBytes, tempDir } from './helpers/util.js';
import { checkJournal, checkpointed, createWalDb, startWriter } from './helpers/wal-app.js';

const running: Sidecar[] = [];
after(() => {
  for (const s of running) if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGKILL');
  cleanupTempDirs();
});

function sidecar(args: string[]): Sidecar {
  const s = spawnSidecar(args);
  running.push(s);
  return s;
}

async function stop(s: Sidecar): Promise<void> {
  s.proc.kill('SIGTERM');
  assert.equal(await s.exited, 0, s.err());
}

test('bad input: one line, exit 1 or 2 (usage), nothing left behind', async () => {
  const dir = tempDir('mycelite-replicate-bad-');
  const rollback = path.join(dir, 'rollback.db');
  const n = new BetterSqlite3(rollback);
  n.exec('create table t(a)');
  n.close();
  const before = fs.readdirSync(dir).sort();
  const notWal = await runCli(['replicate', rollback]);
  assert.equal(notWal.status, 1);
  assert.match(notWal.stderr, /^mycelite: .*rollback\.db is not in WAL mode/);
  assert.equal(notWal.stderr.trim().split('\n').length, 1, notWal.stderr);
  const missing = await runCli(['replicate', path.join(dir, 'missing.db')]);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /missing\.db does not exist/);
  const text = path.join(dir, 'text.db');
  fs.writeFileSync(text, 'hello, this is not a database at all, not even close to one; '.repeat(4));
  const notDb = await runCli(['replicate', text]);
  assert.equal(notDb.status, 1);
  assert.match(notDb.stderr, /is not a SQLite database/);
  for (const args of [
    ['replicate'],
    ['replicate', rollback, '--hub', 'http://127.0.0.1:1'],
    ['replicate', rollback, '--metrics', '127.0.0.1:0'],
    ['replicate', rollback, '--config', 'x.json'],
  ]) {
    const r = await runCli(args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
  }
  fs.rmSync(text);
  assert.deepEqual(fs.readdirSync(dir).sort(), before);
});

test('a second sidecar on the same database is refused; the first goes on', async () => {
  const dir = tempDir('mycelite-replicate-two-');
  const db = path.join(dir, 'app.db');
  createWalDb(db);
  const first = sidecar([db]);
  await first.ready;
  const second = await runCli(['replicate', db]);
  assert.equal(second.status, 1);
  assert.match(second.stderr, /journal is held by another process/);
  await startWriter('node', db, 20, 'auto').done;
  await stop(first);
  const check = await checkJournal(journalOf(db));
  assert.equal(check.ks.at(-1), 20);
});

test('journal mode: refused while the sidecar runs; switched and back while it is stopped, recorded as one outside snapshot', async () => {
  const dir = tempDir('mycelite-replicate-mode-');
  const db = path.join(dir, 'app.db');
  createWalDb(db);
  const s = sidecar([db]);
  await s.ready;
  const app = new BetterSqlite3(db, { timeout: 200 });
  // SQLite needs every other connection closed to leave WAL mode: the sidecar's read transaction keeps it.
  assert.throws(() => app.pragma('journal_mode = DELETE'), /database is locked/);
  app.exec("insert into t values (1, 'a')");
  app.close();
  await stop(s);
  assert.match(s.err(), /stopped at txid 2/);

  const off = new BetterSqlite3(db);
  assert.equal(off.pragma('journal_mode = DELETE', { simple: true }), 'delete');
  off.exec("insert into t values (2, 'b')");
  off.close();
  const refused = await runCli(['replicate', db]);
  assert.equal(refused.status, 1);
  assert.match(refused.stderr, /not in WAL mode/);
  const back = new BetterSqlite3(db);
  assert.equal(back.pragma('journal_mode = WAL', { simple: true }), 'wal');
  back.exec("insert into t values (3, 'c')");
  back.close();

  const again = sidecar([db]);
  await again.ready;
  assert.match(again.err(), /came from is gone.*txid 3, one outside snapshot/);
  await stop(again);
  const replay = await replayBytes(db);
  assert.ok(replay.equals(checkpointed(db)), "the journal's replay is the database");
});

test('the WAL removed by the application while the sidecar is stopped: nothing lost, no snapshot added', async () => {
  const dir = tempDir('mycelite-replicate-gone-');
  const db = path.join(dir, 'app.db');
  createWalDb(db);
  const s = sidecar([db]);
  await s.ready;
  await startWriter('node', db, 30, 'auto').done;
  await stop(s);
  // The last connection to close checkpoints and deletes the WAL.
  new BetterSqlite3(db).close();
  assert.equal(fs.existsSync(`${db}-wal`), false);
  const again = sidecar([db]);
  await again.ready;
  assert.match(again.err(), /but the database is the journal's head: nothing was lost/);
  await stop(again);
  const check = await checkJournal(journalOf(db));
  assert.equal(check.ks.at(-1), 30);
  assert.equal(check.outside.length, 0);
});

test('library call: every commit of an application in the same process becomes one snapshot', async () => {
  const dir = tempDir('mycelite-replicate-lib-');
  const db = path.join(dir, 'app.db');
  createWalDb(db);
  const r = await replicate(db);
  const seen: bigint[] = [];
  r.on('snapshot', (s) => seen.push(s.txid));
  const app = new BetterSqlite3(db);
  for (let k = 1; k <= 50; k++) app.prepare("insert into t values (?, 'v')").run(k);
  await r.catchUp();
  assert.deepEqual(
    seen,
    Array.from({ length: 50 }, (_, i) => BigInt(i + 2)),
  );
  await r.close();
  app.close();
  const replay = await replayBytes(db);
  assert.ok(replay.equals(fs.readFileSync(db)));
  assert.equal((await checkJournalFlags(db)).outside, 0);
});

async function checkJournalFlags(db: string): Promise<{ outside: number }> {
  const { JournalReader, memorySource, loadHash } = await import('../src/format/index.js');
  await loadHash();
  let outside = 0;
  for (const s of new JournalReader(memorySource(fs.readFileSync(journalOf(db)))).snapshots()) {
    if (s.flags & FLAG_OUTSIDE) outside++;
  }
  return { outside };
}

test('WAL reader: a frame whose checksum does not check ends the committed part before its transaction', () => {
  const dir = tempDir('mycelite-wal-reader-');
  const db = path.join(dir, 'app.db');
  const app = new BetterSqlite3(db);
  app.pragma('journal_mode = WAL');
  app.pragma('wal_autocheckpoint = 0');
  app.exec('create table t(a)');
  for (let i = 0; i < 3; i++) app.prepare('insert into t values (?)').run(i);
  const copy = path.join(dir, 'copy-wal');
  fs.copyFileSync(`${db}-wal`, copy);
  app.close();
  const header = decodeWalHeader(fs.readFileSync(copy).subarray(0, WAL_HEADER_SIZE))!;
  assert.ok(header);
  const all = [...new WalFile(copy).transactions(header, 0, [header.ck0, header.ck1], 1e9)];
  assert.equal(all.length, 4);
  // Damage one byte of the page in the third transaction's first frame.
  const bytes = fs.readFileSync(copy);
  const frame = all[1]!.commitFrame + 1;
  const at = WAL_HEADER_SIZE + (frame - 1) * (24 + header.pageSize) + 24 + 100;
  bytes[at]! ^= 0xff;
  fs.writeFileSync(copy, bytes);
  const cut = [...new WalFile(copy).transactions(header, 0, [header.ck0, header.ck1], 1e9)];
  assert.equal(cut.length, 2);
  // Another generation's salts: nothing checks.
  const other = { ...header, salt2: (header.salt2 + 1) >>> 0 };
  assert.equal([...new WalFile(copy).transactions(other, 0, [header.ck0, header.ck1], 1e9)].length, 0);
  // A header that does not check is no header.
  bytes[20]! ^= 1;
  assert.equal(decodeWalHeader(bytes.subarray(0, WAL_HEADER_SIZE)), undefined);
});

test('verify of a WAL database: frames not yet in the file are named, a checkpoint makes it comparable', async () => {
  const dir = tempDir('mycelite-replicate-verify-');
  const db = path.join(dir, 'app.db');
  createWalDb(db);
  const app = new BetterSqlite3(db, { timeout: 5000 });
  app.pragma('wal_autocheckpoint = 0');
  const s = sidecar([db]);
  await s.ready;
  for (let i = 1; i <= 10; i++) app.prepare("insert into t values (?, 'v')").run(i);
  // Stopping copies everything and checkpoints it; what the application writes next stays in its WAL.
  await stop(s);
  for (let i = 11; i <= 15; i++) app.prepare("insert into t values (?, 'v')").run(i);
  const early = await runCli(['verify', db]);
  assert.equal(early.status, 1, early.stdout);
  assert.match(early.stderr, /is in WAL mode and .*-wal holds \d+ frames not yet in the file/);
  const again = sidecar([db]);
  await again.ready;
  assert.match(again.err(), /resumed at txid 11; the journal is at txid 16/);
  await stop(again);
  app.close();
  const late = await runCli(['verify', db]);
  assert.equal(late.status, 0, late.stderr);
  assert.match(late.stdout, /^ok: 16 snapshots, last txid 16/);
});

test('mycelite push of a WAL database captured by the sidecar (the sidecar stopped): pushes its journal', async () => {
  const dir = tempDir('mycelite-replicate-push-');
  const db = path.join(dir, 'app.db');
  createWalDb(db);
  const s = sidecar([db]);
  await s.ready;
  await startWriter('node', db, 20, 'auto').done;
  await stop(s);
  const hub = await startTestHub(tempDir('mycelite-hubdata-'));
  try {
    const r = await runCli([
      'push',
      db,
      '--hub',
      hub.url,
      '--db',
      'app',
      '--token',
      await hub.token('app', 'writer'),
    ]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /pushed 21 snapshots to app on .*: the hub is at txid 21/);
  } finally {
    await hub.close();
  }
});

test('a state file that lies about where the head came from (a later commit frame) is caught by the check at start: one outside snapshot, said loudly; the journal is the database', async () => {
  const dir = tempDir('mycelite-replicate-check-');
  const db = path.join(dir, 'app.db');
  createWalDb(db);
  const lines: string[] = [];
  const r = await replicate(db, { onMessage: (l) => lines.push(l) });
  const app = new BetterSqlite3(db);
  try {
    app.prepare("insert into t values (1, 'a')").run();
    await r.close();
    // While the sidecar is stopped: a transaction writing new pages, then one touching meta only.
    app.exec('begin; create table other(x blob); insert into other values (randomblob(20000)); commit');
    app.prepare('update meta set k = 1').run();
    const wal = new WalFile(`${db}-wal`);
    const h = wal.header()!;
    const txs = [...wal.transactions(h, 0, [h.ck0, h.ck1], Number.MAX_SAFE_INTEGER)];
    wal.close();
    assert.equal(txs.length, 2);
    // The lie: the journal's head came from the first one's commit frame (it came from before it).
    const state = readWalState(journalPaths(db).wal)!;
    const lie = {
      ...state[1]!,
      salt1: h.salt1,
      salt2: h.salt2,
      pageSize: h.pageSize,
      frame: txs[0]!.commitFrame,
      ck0: txs[0]!.ck0,
      ck1: txs[0]!.ck1,
    };
    const f = new WalStateFile(journalPaths(db).wal);
    f.write(lie, lie);
    f.close();
    const again = await replicate(db, { onMessage: (l) => lines.push(l) });
    await again.close();
    assert.ok(
      lines.some((l) => /check at start: the journal's head \(txid \d+\) is not .*\(a defect/.test(l)),
      lines.join('\n'),
    );
    assert.equal((await checkJournalFlags(db)).outside, 1);
    app.pragma('wal_checkpoint(TRUNCATE)');
    assert.ok((await replayBytes(db)).equals(fs.readFileSync(db)), "the journal's replay is the database");
  } finally {
    app.close();
  }
});
