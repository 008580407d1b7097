// `mycelite sync`, as the README shows it: devices of a shared database written with `mycelite exec`
// (offline), merged with `mycelite sync`; conflicts and rejections printed; clear errors.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { runCli } from './helpers/cli.js';
import { startTestHub } from './helpers/hub.js';
import { cleanupTempDirs, fileHash, tempDir } from './helpers/util.js';

const cleanups: (() => unknown)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanupTempDirs();
});

async function ok(args: string[]): Promise<string> {
  const r = await runCli(args);
  assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

test('the README flow: two devices write offline with exec, sync merges them byte for byte', async () => {
  const h = await startTestHub();
  cleanups.push(() => h.close());
  const dir = tempDir();
  const laptop = path.join(dir, 'laptop.db');
  const phone = path.join(dir, 'phone.db');
  const s = ['--hub', h.url, '--db', 'budget', '--shared', '--token', await h.token('budget', 'writer')];
  await ok(['exec', laptop, 'create table if not exists entries(id text primary key, note text, cents int)']);
  assert.match(
    await ok(['sync', laptop, ...s]),
    /^synced .*laptop\.db with budget .*: merged 1 local change, took in 0 snapshots from the hub; at txid 1\n$/,
  );
  assert.match(await ok(['sync', phone, ...s]), /took in 1 snapshot from the hub; at txid 1/);
  await ok(['exec', laptop, "insert into entries values ('a1', 'rent', -120000)"]);
  await ok(['exec', phone, "insert into entries values ('c3', 'coffee', -350)"]);
  // Both edit the same entry offline: the later sync wins and says so.
  await ok(['exec', laptop, "insert into entries values ('x', 'shared', 1)"]);
  await ok(['sync', laptop, ...s]);
  await ok(['sync', phone, ...s]);
  await ok(['exec', laptop, "update entries set cents = 2 where id = 'x'"]);
  await ok(['exec', phone, "update entries set cents = 3 where id = 'x'"]);
  await ok(['sync', laptop, ...s]);
  const out = await ok(['sync', phone, ...s]);
  assert.match(
    out,
    /^conflict: local change \d+ \(update in entries, key \["x"\]\): data, applied over another device's change$/m,
  );
  await ok(['sync', laptop, ...s]);
  assert.equal(fileHash(laptop), fileHash(phone));
  assert.equal(
    await ok(['exec', phone, 'select id, cents from entries order by id']),
    'id\tcents\na1\t-120000\nc3\t-350\nx\t3\n',
  );
  for (const db of [laptop, phone]) await ok(['verify', db]);
  // push of a device's file (once or --watch) refuses and names sync: it would merge, changing the file.
  const token = await h.token('budget', 'writer');
  const before = fileHash(laptop);
  for (const extra of [[], ['--watch']]) {
    const r = await runCli(['push', laptop, '--hub', h.url, '--db', 'budget', '--token', token, ...extra]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(
      r.stderr,
      /^mycelite: .*laptop\.db is a device of a shared database .*mycelite sync .* --shared/,
    );
  }
  assert.equal(fileHash(laptop), before, 'the device file is as it was');
});

test("sync --shared of a single writer's database that the hub holds as single-writer refuses and leaves it a single writer", async () => {
  const h = await startTestHub();
  cleanups.push(() => h.close());
  const db = path.join(tempDir(), 'solo.db');
  const hub = ['--hub', h.url, '--db', 'solo', '--token', await h.token('solo', 'writer')];
  await ok(['exec', db, 'create table t(a); insert into t values (1)']);
  await ok(['push', db, ...hub]);
  const before = fs.readdirSync(`${db}-mycelite`).sort();
  const r = await runCli(['sync', db, ...hub, '--shared']);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /solo on .* is a single-writer database: .* was not made one \(nothing changed\)/);
  assert.deepEqual(fs.readdirSync(`${db}-mycelite`).sort(), before, 'no shared state written');
  // Still a single writer: it commits and pushes as before.
  await ok(['exec', db, 'insert into t values (2)']);
  assert.match(await ok(['push', db, ...hub]), /pushed 1 snapshot/);
});

test('a rejected change is printed, and sync still exits 0 holding the hub head', async () => {
  const h = await startTestHub();
  cleanups.push(() => h.close());
  const dir = tempDir();
  const a = path.join(dir, 'a.db');
  const b = path.join(dir, 'b.db');
  const s = ['--hub', h.url, '--db', 'users', '--shared', '--token', await h.token('users', 'writer')];
  await ok(['exec', a, 'create table if not exists users(id text primary key, email text unique)']);
  await ok(['sync', a, ...s]);
  await ok(['sync', b, ...s]);
  await ok(['exec', a, "insert into users values ('u1', 'x@example.com')"]);
  await ok(['exec', b, "insert into users values ('u2', 'x@example.com')"]);
  await ok(['sync', a, ...s]);
  const out = await ok(['sync', b, ...s]);
  assert.match(out, /^rejected: local change \d+: .*UNIQUE constraint failed: users\.email/m);
  assert.equal(await ok(['exec', b, 'select id from users']), 'id\nu1\n');
});

test('sync refuses clearly: without --shared (usage), without a token, and leaves nothing behind', async () => {
  const dir = tempDir();
  const db = path.join(dir, 'new.db');
  const usage = await runCli(['sync', db, '--hub', 'http://127.0.0.1:1', '--db', 'x', '--token', 't']);
  assert.equal(usage.status, 2);
  assert.match(usage.stderr, /^mycelite: sync needs --shared/);
  const noToken = await runCli(['sync', db, '--hub', 'http://127.0.0.1:1', '--db', 'x', '--shared'], {
    MYCELITE_TOKEN: '',
  });
  assert.equal(noToken.status, 2, 'a missing token is a usage error');
  assert.match(noToken.stderr, /^mycelite: no token: pass --token or set MYCELITE_TOKEN/);
  assert.equal(fs.existsSync(db), false);
  assert.equal(fs.existsSync(`${db}-mycelite`), false);
});
