// The hub never stores a snapshot that does not apply to its head, and never serves a damaged copy of
// its journal (docs/ARCHITECTURE.md, "Hub"; docs/RELIABILITY.md). Real SQLite, real files, real HTTP.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { HubClient } from '../src/client/hub-client.js';
import type { SyncError } from '../src/client/push-errors.js';
import { JournalFormatError, JournalReader, memorySource } from '../src/format/index.js';
import { open } from '../src/node/index.js';
import { EMPTY_POSITION, HubError } from '../src/protocol/index.js';
import { runCli } from './helpers/cli.js';
import {
  concatBytes,
  followReplica,
  makeHistory,
  readJournal,
  type SpawnedHub,
  StreamItems,
  sampleStatements,
  spawnHub,
  startTestHub,
  type TestHub,
  tamper,
} from './helpers/hub.js';
import { cleanupTempDirs, fileHash, tempDir } from './helpers/util.js';

const closers: (() => Promise<void> | void)[] = [];
const children: SpawnedHub[] = [];
after(async () => {
  for (const c of children) await c.kill();
  for (const c of closers.reverse()) await c();
  cleanupTempDirs();
});

async function hub(dir = tempDir('mycelite-hubdata-')): Promise<TestHub> {
  const h = await startTestHub(dir);
  closers.push(() => h.close());
  return h;
}

test('CLI: a database damaged where the writer cannot notice pushes a snapshot the hub refuses; new replicas still follow', async () => {
  const h = await hub();
  const dir = tempDir();
  const file = path.join(dir, 'app.db');
  const env = { MYCELITE_TOKEN: await h.token('app', 'writer') };
  const push = ['push', file, '--hub', h.url, '--db', 'app'];
  let r = await runCli(['exec', file, "create table t(a); insert into t values ('one'), ('two')"]);
  assert.equal(r.status, 0, r.stderr);
  r = await runCli(push, env);
  assert.equal(r.status, 0, r.stderr);
  // A byte of a row changed in place, not through SQLite: file size, page 1 and the change counter stay
  // (what open() checks cheaply), so the writer cannot notice; a change by SQLite would be recorded.
  changeRowInPlace(file, 'two', 'twx');
  r = await runCli(['exec', file, "insert into t values ('three')"]);
  assert.equal(r.status, 0, r.stderr);
  r = await runCli(push, env);
  assert.equal(r.status, 1, `push must fail: ${r.stdout}${r.stderr}`);
  assert.match(r.stderr, /refused snapshot 3 of database app .*does not apply/);
  assert.match(r.stderr, /mycelite verify/);
  const state = (await (
    await fetch(`${h.url}/v1/db/app`, {
      headers: { authorization: `Bearer ${await h.token('app', 'reader')}` },
    })
  ).json()) as { head: { txid: string } };
  assert.equal(state.head.txid, '2', 'the hub stored nothing of the refused push');
  // A new replica bootstraps from the hub's head and equals the writer's database as it was at txid 2.
  const replica = path.join(dir, 'replica.db');
  r = await runCli(['follow', h.url, replica, '--db', 'app', '--once'], {
    MYCELITE_TOKEN: await h.token('app', 'reader'),
  });
  assert.equal(r.status, 0, r.stderr);
  const rows = new BetterSqlite3(replica, { readonly: true });
  assert.deepEqual(rows.prepare('select a from t order by rowid').pluck().all(), ['one', 'two']);
  rows.close();
});

test('HTTP: a push whose snapshot does not apply is refused (422 does_not_apply) and stores nothing; replicas still follow', async () => {
  const h = await hub();
  const dir = tempDir();
  const hist = await makeHistory(path.join(dir, 'w.db'), sampleStatements(6, 500));
  const s = hist.snapshots;
  const w = new HubClient({ url: h.url, db: 'app', token: await h.token('app', 'writer') });
  const { epoch } = await w.takeLease('w1');
  await w.push(concatBytes(s.slice(0, 3).map((x) => x.bytes)), {
    journalId: hist.journalId,
    base: EMPTY_POSITION,
    epoch,
  });
  const stored = fs.readFileSync(path.join(h.dir, 'dbs', 'app', 'journal'));
  const at3 = { txid: 3n, checksum: s[2]!.header.postChecksum };
  const body = concatBytes([s[3]!.bytes, tamper(s[4]!).bytes, s[5]!.bytes]);
  const refused = await w.push(body, { journalId: hist.journalId, base: at3, epoch }).then(
    () => undefined,
    (e: unknown) => e as HubError,
  );
  assert.ok(refused instanceof HubError, 'the push is refused');
  assert.equal(refused.status, 422);
  assert.equal(refused.code, 'does_not_apply');
  assert.equal(refused.body.txid, '5');
  assert.match(refused.message, /snapshot 5 does not apply .*changed outside Mycelite.*mycelite verify/);
  assert.ok(fs.readFileSync(path.join(h.dir, 'dbs', 'app', 'journal')).equals(stored), 'nothing was stored');
  assert.match(await h.hub.metrics(), /mycelite_push_rejected_total\{reason="does_not_apply"\} 1/);
  // A new replica follows from the hub's head; the writer's good snapshots then go in and reach it.
  const cleanups: (() => unknown)[] = [];
  try {
    const r = await followReplica(path.join(dir, 'r.db'), h, cleanups);
    await r.waitFor(3n, 20_000);
    await w.push(concatBytes(s.slice(3).map((x) => x.bytes)), {
      journalId: hist.journalId,
      base: at3,
      epoch,
    });
    await r.waitFor(6n, 20_000);
    await r.close();
    assert.equal(fileHash(path.join(dir, 'r.db')), fileHash(hist.dbPath));
  } finally {
    for (const c of cleanups) await c();
  }
});

test('writer: a commit over a database damaged where it cannot notice stops pushing with state error, not retries', async () => {
  const h = await hub();
  const dir = tempDir();
  const file = path.join(dir, 'app.db');
  const target = { url: h.url, db: 'app', token: await h.token('app', 'writer') };
  let w = await open(file, { hub: target });
  w.exec("create table t(a); insert into t values ('one'), ('two')");
  await w.sync!.flush(20_000);
  await w.sync!.close();
  w.close();
  changeRowInPlace(file, 'two', 'twx');
  w = await open(file, { hub: target });
  try {
    const errors: string[] = [];
    w.sync!.on('status', (st) => {
      if (st.state === 'error') errors.push(st.lastError ?? '');
    });
    w.exec("insert into t values ('three')");
    await assert.rejects(w.sync!.flush(20_000), (e: SyncError) => {
      assert.equal(e.code, 'does_not_apply');
      assert.match(
        e.message,
        /refused snapshot 3 of database app .*changed outside Mycelite.*mycelite verify/,
      );
      return true;
    });
    assert.equal(w.sync!.status().state, 'error');
    assert.equal(w.sync!.status().hubTxid, 2n);
    assert.equal(errors.length, 1, 'one stop, no retries');
  } finally {
    await w.sync!.close();
    w.close();
  }
});

/**
 * Replaces the bytes `from` with `to` (same length) where they first occur after page 1 of `file`,
 * writing the file directly: what a disk or another program could do without SQLite, unseen by the
 * writer's cheap checks (size, page 1, change counter).
 */
function changeRowInPlace(file: string, from: string, to: string): void {
  const bytes = fs.readFileSync(file);
  const pageSize = bytes.readUInt16BE(16) === 1 ? 65536 : bytes.readUInt16BE(16);
  const at = bytes.indexOf(Buffer.from(from), pageSize);
  assert.ok(at > 0, `${from} is in ${file} after page 1`);
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, Buffer.from(to), 0, to.length, at);
  fs.closeSync(fd);
}

/** Offsets of the snapshots of the journal file `file`, by txid. */
function snapshotOffsets(file: string): Map<bigint, { offset: number; length: number }> {
  const out = new Map<bigint, { offset: number; length: number }>();
  for (const s of new JournalReader(memorySource(new Uint8Array(fs.readFileSync(file)))).snapshots())
    out.set(s.txid, { offset: s.offset, length: s.length });
  return out;
}

test('a hub copy damaged on disk is found at first use (the tail at once, the rest before it is served), cut back and kept aside, never served, and repaired by the next push', async () => {
  const data = tempDir('mycelite-hubdata-');
  const dir = tempDir();
  const file = path.join(dir, 'app.db');
  const lines: string[] = [];
  let damaged = (): void => {};
  const found = new Promise<void>((resolve) => {
    damaged = resolve;
  });
  const logs = {
    logLevel: 'warn',
    logDestination: {
      write: (l: string) => {
        lines.push(l);
        if (/damaged at snapshot/.test(l)) damaged();
      },
    },
  };
  let h = await startTestHub(data, logs);
  const port = h.port;
  const target = { url: h.url, db: 'app', token: await h.token('app', 'writer') };
  let w = await open(file, { hub: target });
  w.exec('create table t(id integer primary key, v blob)');
  for (let i = 0; i < 10; i++) w.exec('insert into t(v) values (randomblob(700))');
  await w.sync!.flush(20_000);
  await w.sync!.close();
  w.close();
  const cleanups: (() => unknown)[] = [];
  try {
    const r1 = await followReplica(path.join(dir, 'r1.db'), h, cleanups);
    await r1.waitFor(11n, 20_000);
    await h.close();
    const writer = await readJournal(`${file}-mycelite/journal`);
    // One flipped byte inside snapshot 6's body, as the hub's disk might return it.
    const journal = path.join(data, 'dbs', 'app', 'journal');
    const at = snapshotOffsets(journal).get(6n)!;
    const bytes = fs.readFileSync(journal);
    bytes[at.offset + Math.floor(at.length / 2)]! ^= 0x10;
    fs.writeFileSync(journal, bytes);

    h = await startTestHub(data, { ...logs, port });
    closers.push(() => h.close());
    const reader = new HubClient({ url: h.url, db: 'app', token: await h.token('app', 'reader') });
    // Opening it reads only what follows its offset index (here: nothing), so it answers at once; the
    // older part is checked in a worker, and reads of it wait for that check.
    assert.equal((await reader.state())?.head.txid, 11n, 'opened without reading the indexed part');
    const early = reader.read({
      after: { txid: 1n, checksum: writer.snapshots[0]!.header.postChecksum },
      journalId: (await reader.state())!.journalId,
    });
    await found;
    const state = await reader.state();
    assert.equal(state?.head.txid, 5n, 'cut back to the last good snapshot by the check');
    const served: bigint[] = [];
    let failure: unknown;
    try {
      const items = new StreamItems(await early);
      for (let i = await items.next(); i; i = await items.next()) {
        if (i.kind === 'snapshot') served.push(i.header.txid);
      }
    } catch (e) {
      failure = e;
    }
    assert.ok(!(failure instanceof JournalFormatError), `the damaged snapshot was served: ${failure}`);
    assert.ok(
      served.every((t) => t < 6n),
      `a read begun before the check ended served ${served.join(',')}`,
    );
    const kept = fs
      .readdirSync(path.join(data, 'dbs', 'app'))
      .filter((n) => n.startsWith('journal.damaged-'));
    assert.equal(kept.length, 1, 'the damaged journal is kept aside');
    assert.ok(fs.readFileSync(path.join(data, 'dbs', 'app', kept[0]!)).equals(bytes), 'byte for byte');
    const logged = lines.map((l) => JSON.parse(l) as { level: number; msg: string; txid?: string });
    assert.ok(
      logged.some((l) => l.level >= 50 && l.txid === '6' && /damaged at snapshot 6/.test(l.msg)),
      'logged loudly (error level)',
    );
    // What it serves is what it holds whole: an image of txid 5; nothing after 5; a position past it resets.
    const image = new StreamItems(await reader.read({}));
    const items = (await image.rest()).filter((i) => i.kind === 'snapshot');
    assert.deepEqual(
      items.map((i) => i.kind === 'snapshot' && i.header.txid),
      [5n],
    );
    const past = await reader
      .read({
        after: { txid: 11n, checksum: writer.snapshots[10]!.header.postChecksum },
        journalId: state!.journalId,
      })
      .then(
        () => undefined,
        (e: unknown) => e as HubError,
      );
    assert.equal(past?.code, 'reset');
    // The writer's next push re-supplies 6..11; every replica converges on the writer's bytes.
    w = await open(file, { hub: { ...target, url: h.url } });
    await w.sync!.flush(20_000);
    assert.equal(w.sync!.status().hubTxid, 11n);
    await w.sync!.close();
    w.close();
    const r2 = await followReplica(path.join(dir, 'r2.db'), h, cleanups);
    await r2.waitFor(11n, 20_000);
    await r1.waitFor(11n, 20_000);
    for (const c of cleanups.splice(0)) await c();
    assert.equal(fileHash(path.join(dir, 'r1.db')), fileHash(file));
    assert.equal(fileHash(path.join(dir, 'r2.db')), fileHash(file));
  } finally {
    for (const c of cleanups) await c();
  }
});

test('a damaged head file never reaches a replica: the image is checked as it is encoded, and rebuilt', async () => {
  const data = tempDir('mycelite-hubdata-');
  const dir = tempDir();
  const lines: string[] = [];
  let h = await startTestHub(data, {
    logLevel: 'warn',
    logDestination: { write: (l: string) => lines.push(l) },
  });
  const hist = await makeHistory(path.join(dir, 'w.db'), sampleStatements(12, 900));
  const w = new HubClient({ url: h.url, db: 'app', token: await h.token('app', 'writer') });
  const { epoch } = await w.takeLease('w');
  await w.push(concatBytes(hist.snapshots.map((s) => s.bytes)), {
    journalId: hist.journalId,
    base: EMPTY_POSITION,
    epoch,
  });
  await h.close();
  const pages = path.join(data, 'dbs', 'app', 'head.db');
  const b = fs.readFileSync(pages);
  b[b.length - 10]! ^= 0x01; // its record still says it holds txid 12
  fs.writeFileSync(pages, b);
  h = await startTestHub(data, { logLevel: 'warn', logDestination: { write: (l: string) => lines.push(l) } });
  closers.push(() => h.close());
  const cleanups: (() => unknown)[] = [];
  try {
    const r = await followReplica(path.join(dir, 'r.db'), h, cleanups);
    await r.waitFor(12n, 20_000);
  } finally {
    for (const c of cleanups) await c();
  }
  assert.equal(fileHash(path.join(dir, 'r.db')), fileHash(hist.dbPath));
  assert.ok(
    lines.some((l) => /head file of app did not hold txid 12/.test(l)),
    'the rebuilt head file is logged',
  );
});

test('a hub copy that cannot be cut back (its file header is damaged) is answered 503 with a clear message, others are served', async () => {
  const data = tempDir('mycelite-hubdata-');
  const dir = tempDir();
  let h = await startTestHub(data);
  const hists = [
    await makeHistory(path.join(dir, 'a.db'), sampleStatements(3)),
    await makeHistory(path.join(dir, 'b.db'), sampleStatements(3)),
  ];
  for (const [i, db] of ['a', 'b'].entries()) {
    const w = new HubClient({ url: h.url, db, token: await h.token(db, 'writer') });
    const { epoch } = await w.takeLease('w');
    const x = hists[i]!;
    await w.push(concatBytes(x.snapshots.map((s) => s.bytes)), {
      journalId: x.journalId,
      base: EMPTY_POSITION,
      epoch,
    });
  }
  await h.close();
  const journal = path.join(data, 'dbs', 'a', 'journal');
  const bytes = fs.readFileSync(journal);
  bytes[20]! ^= 0xff; // inside the journal id: the file header's checksum fails
  fs.writeFileSync(journal, bytes);
  h = await startTestHub(data);
  closers.push(() => h.close());
  const get = async (db: string): Promise<Response> =>
    fetch(`${h.url}/v1/db/${db}`, { headers: { authorization: `Bearer ${await h.token(db, 'reader')}` } });
  const a = await get('a');
  assert.equal(a.status, 503);
  const body = (await a.json()) as { error: string; message: string };
  assert.equal(body.error, 'unavailable');
  assert.match(body.message, /copy of database a is damaged .*not served until it is repaired/);
  assert.equal((await get('b')).status, 200);
  assert.ok(fs.readFileSync(journal).equals(bytes), 'the damaged copy is left as it is');
});

test('a mycelite serve SIGKILLed while pushes land (between journal append and head-file update) recovers its head file', async () => {
  const data = tempDir('mycelite-hubdata-');
  const dir = tempDir();
  const hist = await makeHistory(path.join(dir, 'w.db'), sampleStatements(90, 2000));
  const s = hist.snapshots;
  const pos = (n: number) =>
    n === 0 ? EMPTY_POSITION : { txid: BigInt(n), checksum: s[n - 1]!.header.postChecksum };
  let hub = await spawnHub(data);
  children.push(hub);
  let epoch = 0;
  for (let round = 0; round < 6; round++) {
    const w = new HubClient({ url: hub.url, db: 'app', token: await hub.token('app', 'writer') });
    epoch = (await w.takeLease('w', 600_000)).epoch;
    const from = Number((await w.state())?.head.txid ?? 0n);
    // Pushes of one snapshot each, back to back, until the kill cuts one.
    const acked = { n: from };
    const load = (async () => {
      for (let n = from; n < s.length; n++) {
        try {
          await w.push(s[n]!.bytes, { journalId: hist.journalId, base: pos(n), epoch });
          acked.n = n + 1;
        } catch {
          return;
        }
      }
    })();
    const stopAt = from + 5 + Math.floor(Math.random() * 10);
    while (acked.n < stopAt) await new Promise((r) => setTimeout(r, 1));
    await hub.kill('SIGKILL');
    await load;
    hub = await spawnHub(data, hub.port);
    children.push(hub);
    const again = new HubClient({ url: hub.url, db: 'app', token: await hub.token('app', 'writer') });
    const head = Number((await again.state())!.head.txid);
    assert.ok(head >= acked.n, `round ${round}: every acknowledged push is there`);
    // The head file was brought to the head: a snapshot that does not apply is still refused...
    const refused = await again
      .push(tamper(s[head]!).bytes, { journalId: hist.journalId, base: pos(head), epoch })
      .then(
        () => undefined,
        (e: unknown) => e as HubError,
      );
    assert.equal(refused?.code, 'does_not_apply', `round ${round}`);
  }
  // ...and the good ones go in; a new replica's image, built from the head file, is the writer's database.
  const w = new HubClient({ url: hub.url, db: 'app', token: await hub.token('app', 'writer') });
  const head = Number((await w.state())!.head.txid);
  await w.push(concatBytes(s.slice(head).map((x) => x.bytes)), {
    journalId: hist.journalId,
    base: pos(head),
    epoch,
  });
  const cleanups: (() => unknown)[] = [];
  try {
    const r = await followReplica(path.join(dir, 'r.db'), hub, cleanups);
    await r.waitFor(BigInt(s.length), 20_000);
  } finally {
    for (const c of cleanups) await c();
  }
  assert.equal(fileHash(path.join(dir, 'r.db')), fileHash(hist.dbPath));
  await hub.kill('SIGTERM');
  assert.equal(await hub.exited, 0);
  assert.equal(
    fileHash(path.join(data, 'dbs', 'app', 'head.db')),
    fileHash(hist.dbPath),
    'the head file is the database',
  );
});
