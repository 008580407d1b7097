// `mycelite replicate --config FILE` (issue 16 part 3): several databases in one process, each logging
// its own lines, /metrics per database, SIGHUP reloading the file (added started, removed stopped, a
// broken file refused while the running set goes on), SIGTERM stopping every one cleanly.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { HubClient } from '../src/client/hub-client.js';
import { runCli } from './helpers/cli.js';
import { startTestHub } from './helpers/hub.js';
import { type Sidecar, spawnSidecar } from './helpers/sidecar.js';
import { cleanupTempDirs, journalOf, tempDir } from './helpers/util.js';
import { checkJournal, createWalDb, startWriter } from './helpers/wal-app.js';

const running: Sidecar[] = [];
after(() => {
  for (const s of running) if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGKILL');
  cleanupTempDirs();
});

async function metrics(url: string): Promise<Map<string, number>> {
  const text = await (await fetch(url)).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line === '') continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

test('config file: many databases, per-database lines, /metrics, SIGHUP reload, clean stop', {
  timeout: 60_000,
}, async () => {
  const dir = tempDir('mycelite-replicate-config-');
  const [a, b, c] = ['a.db', 'b.db', 'c.db'].map((n) => path.join(dir, n));
  for (const f of [a!, b!, c!]) createWalDb(f);
  const config = path.join(dir, 'mycelite.json');
  fs.writeFileSync(config, JSON.stringify({ databases: [{ path: 'a.db' }, { path: 'b.db' }] }));
  const d = spawnSidecar(['--config', config, '--metrics', '127.0.0.1:0']);
  running.push(d);
  await d.waitFor(/metrics at (http:\S+)/);
  const url = /metrics at (http:\S+)/.exec(d.err())![1]!;
  assert.match(d.err(), new RegExp(`${a}: bootstrapped`));
  assert.match(d.err(), new RegExp(`${b}: replicating at txid 1`));

  await startWriter('node', a!, 40, 'auto').done;
  let m = await metrics(url);
  for (let i = 0; m.get(`mycelite_replicate_txid{db=${JSON.stringify(a)}}`) !== 41 && i < 200; i++) {
    await new Promise((r) => setTimeout(r, 25));
    m = await metrics(url);
  }
  assert.equal(m.get(`mycelite_replicate_txid{db=${JSON.stringify(a)}}`), 41);
  assert.equal(m.get(`mycelite_replicate_txid{db=${JSON.stringify(b)}}`), 1);
  assert.equal(m.get(`mycelite_replicate_up{db=${JSON.stringify(b)}}`), 1);
  assert.ok(m.get(`mycelite_replicate_journal_bytes{db=${JSON.stringify(a)}}`)! > 0);
  assert.equal(m.get(`mycelite_replicate_pending_frames{db=${JSON.stringify(a)}}`), 0);

  // Reload: b removed, c added; a unchanged keeps running.
  fs.writeFileSync(config, JSON.stringify({ databases: [{ path: 'a.db' }, { path: 'c.db' }] }));
  d.proc.kill('SIGHUP');
  await d.waitFor(/reloaded .*: 2 databases/);
  assert.match(d.err(), new RegExp(`${b}: stopped at txid 1`));
  m = await metrics(url);
  assert.equal(m.get(`mycelite_replicate_txid{db=${JSON.stringify(c)}}`), 1);
  assert.equal(m.has(`mycelite_replicate_txid{db=${JSON.stringify(b)}}`), false);

  // A broken file is refused; the running set goes on.
  fs.writeFileSync(config, '{"databases": [');
  d.proc.kill('SIGHUP');
  await d.waitFor(/reload refused, keeping the running configuration: config .* is not JSON/);
  await startWriter('node', c!, 10, 'auto').done;
  d.proc.kill('SIGTERM');
  assert.equal(await d.exited, 0, d.err());
  assert.match(d.err(), new RegExp(`${c}: stopped at txid 11`));
  assert.equal((await checkJournal(journalOf(a!))).ks.at(-1), 40);
  assert.equal((await checkJournal(journalOf(c!))).ks.at(-1), 10);
});

test('config file: a database whose push stops says so, keeps capturing, shows it in /metrics, and SIGHUP pushes again', {
  timeout: 60_000,
}, async () => {
  const dir = tempDir('mycelite-replicate-push-');
  const a = path.join(dir, 'a.db');
  createWalDb(a);
  const hub = await startTestHub(tempDir('mycelite-hubdata-'));
  try {
    // A token that expires in 2 s: once it has, the hub refuses the next push (401) and pushing stops.
    const entry = (token: string) => ({ path: 'a.db', hub: { url: hub.url, db: 'app', token } });
    const config = path.join(dir, 'mycelite.json');
    const expires = Date.now() + 2000;
    fs.writeFileSync(config, JSON.stringify({ databases: [entry(await hub.token('app', 'writer', 2))] }));
    const d = spawnSidecar(['--config', config, '--metrics', '127.0.0.1:0']);
    running.push(d);
    await d.waitFor(/metrics at (http:\S+)/);
    const url = /metrics at (http:\S+)/.exec(d.err())![1]!;
    await d.waitFor(/a\.db: replicating at txid 1 to app/);
    await new Promise((r) => setTimeout(r, Math.max(0, expires - Date.now() + 1100))); // past its expiry
    await startWriter('node', a, 5, 'auto').done;
    await d.waitFor(/a\.db: pushing stopped: .*; still capturing every transaction into the local journal/);
    const up = `mycelite_replicate_push_up{db=${JSON.stringify(a)}}`;
    assert.equal((await metrics(url)).get(up), 0);
    assert.equal((await metrics(url)).get(`mycelite_replicate_up{db=${JSON.stringify(a)}}`), 1);
    await startWriter('node', a, 15, 'auto').done;
    let m = await metrics(url);
    for (let i = 0; m.get(`mycelite_replicate_txid{db=${JSON.stringify(a)}}`) !== 21 && i < 200; i++) {
      await new Promise((r) => setTimeout(r, 25));
      m = await metrics(url);
    }
    assert.equal(m.get(`mycelite_replicate_txid{db=${JSON.stringify(a)}}`), 21, 'capture went on');
    // The right token, and SIGHUP: the database starts again and pushes what it captured meanwhile.
    fs.writeFileSync(config, JSON.stringify({ databases: [entry(await hub.token('app', 'writer'))] }));
    d.proc.kill('SIGHUP');
    await d.waitFor(/reloaded .*: 1 database/);
    for (let i = 0; (await metrics(url)).get(up) !== 1 && i < 200; i++)
      await new Promise((r) => setTimeout(r, 25));
    assert.equal((await metrics(url)).get(up), 1);
    const client = new HubClient({ url: hub.url, db: 'app', token: await hub.token('app', 'reader') });
    const head = async (): Promise<bigint | undefined> =>
      (await client.state().catch(() => undefined))?.head.txid;
    for (let i = 0; (await head()) !== 21n && i < 400; i++) await new Promise((r) => setTimeout(r, 25));
    assert.equal(await head(), 21n, 'the hub holds every transaction');
    d.proc.kill('SIGTERM');
    assert.equal(await d.exited, 0, d.err());
  } finally {
    await hub.close();
  }
});

test('config file errors at start: one line, exit 1', async () => {
  const dir = tempDir('mycelite-replicate-config-bad-');
  const config = path.join(dir, 'bad.json');
  fs.writeFileSync(config, JSON.stringify({ databases: [{ path: 'x.db' }, { path: 'x.db' }] }));
  const twice = await runCli(['replicate', '--config', config]);
  assert.equal(twice.status, 1);
  assert.match(twice.stderr, /x\.db is listed twice/);
  fs.writeFileSync(config, JSON.stringify({ dbs: [] }));
  const shape = await runCli(['replicate', '--config', config]);
  assert.equal(shape.status, 1);
  assert.match(shape.stderr, /expected \{"databases"/);
});
