/**
 * Nothing left behind (issue 20, item 6): images a SIGKILLed hub left in DATA/images are removed when a
 * hub starts on that data directory (those of hubs still running are kept); `follow` with a bad URL is a
 * usage error (exit 2) and `follow --once` that never reaches a hub leaves no replica file.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { open, openReplica } from '../src/node/index.js';
import { runCli } from './helpers/cli.js';
import { type SpawnedHub, spawnHub } from './helpers/hub.js';
import { cleanupTempDirs, tempDir } from './helpers/util.js';

describe('nothing left behind', () => {
  const hubs: SpawnedHub[] = [];
  after(async () => {
    for (const h of hubs) await h.kill();
    cleanupTempDirs();
  });

  it('images of a SIGKILLed hub are removed at the next start; a running hub’s are kept', async () => {
    const dir = tempDir();
    const data = path.join(dir, 'hub');
    const first = await spawnHub(data);
    hubs.push(first);
    const w = await open(path.join(dir, 'w.db'), {
      hub: { url: first.url, db: 'app', token: await first.token('app', 'writer') },
    });
    w.exec('CREATE TABLE t(x)');
    w.prepare('INSERT INTO t VALUES (?)').run('one');
    await w.sync!.flush(10_000);
    // A new replica starts from the hub's image: the hub keeps it in DATA/images.
    const r = await openReplica(path.join(dir, 'r.db'), {
      hub: { url: first.url, db: 'app', token: await first.token('app', 'reader') },
    });
    await r.waitFor(w.position().txid, 10_000);
    await r.close();
    w.close();
    await w.sync!.close();
    const images = path.join(data, 'images');
    const pid = String(first.proc.pid);
    assert.ok(
      fs.readdirSync(path.join(images, pid)).some((f) => f.endsWith('.image')),
      'the image is kept',
    );
    await first.kill('SIGKILL');
    assert.ok(fs.existsSync(path.join(images, pid)), 'a SIGKILLed hub leaves its images');
    // Left by a hub from before per-process directories, and by a hub that still runs (this process).
    const legacy = path.join(images, `app.${'ab'.repeat(16)}-7.${pid}.image`);
    fs.writeFileSync(legacy, 'old');
    const running = path.join(images, String(process.pid));
    fs.mkdirSync(running);
    fs.writeFileSync(path.join(running, `app.${'cd'.repeat(16)}-7.${process.pid}.image`), 'in use');

    const second = await spawnHub(data, 0, ['--log-level', 'info']);
    hubs.push(second);
    assert.ok(!fs.existsSync(path.join(images, pid)), 'the dead hub’s images are gone');
    assert.ok(!fs.existsSync(legacy), 'and its older files');
    assert.equal(fs.readdirSync(running).length, 1, 'a running hub’s images stay');
    // Its log line comes on stderr, after the "listening" line on stdout.
    const logged = /removed images left by hubs that are gone/;
    for (let i = 0; i < 100 && !logged.test(second.stderr()); i++)
      await new Promise((r) => setTimeout(r, 100));
    assert.match(second.stderr(), logged);
  });

  it('follow: a bad URL is a usage error, an unreachable hub leaves no replica', async () => {
    const dir = tempDir();
    const replica = path.join(dir, 'r.db');
    for (const url of ['not-a-url', 'ftp://127.0.0.1:1', 'http://127.0.0.1:9,nope']) {
      const r = await runCli(['follow', url, replica, '--db', 'app', '--token', 'x', '--once']);
      assert.equal(r.status, 2, `${url}: ${r.stderr}`);
      assert.match(r.stderr, /is not an http\(s\) URL/);
    }
    assert.deepEqual(fs.readdirSync(dir), [], 'nothing created');
    const r = await runCli([
      'follow',
      'http://127.0.0.1:9',
      replica,
      '--db',
      'app',
      '--token',
      'x',
      '--once',
    ]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /cannot reach the hub/);
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    assert.deepEqual(fs.readdirSync(dir), [], 'no empty replica left behind');
    const push = await runCli(['push', path.join(dir, 'w.db'), '--hub', 'http://x:1,', '--db', 'app']);
    assert.equal(push.status, 2, push.stderr);
    assert.deepEqual(fs.readdirSync(dir), []);
  });
});
