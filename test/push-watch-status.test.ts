// `mycelite push --watch` says what stops it and when it goes on: a hub down from the start (then
// started on that port), and a hub whose storage fails with ENOSPC (it answers 500: that is not "cannot
// reach the hub").
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { FsStorage, type HubStorage, loadOrCreateKey, mintToken } from '../src/hub/index.js';
import { open } from '../src/node/index.js';
import { MYCELITE_BIN, startTestHub } from './helpers/hub.js';
import { freePort } from './helpers/tcp-proxy.js';
import { cleanupTempDirs, tempDir } from './helpers/util.js';

const children: ChildProcess[] = [];
const closers: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  for (const c of closers.reverse()) await c();
  cleanupTempDirs();
});

interface Watch {
  proc: ChildProcess;
  out: () => string;
  err: () => string;
  /** Waits (up to 30 s) until stdout or stderr matches `re`. */
  until(re: RegExp, stream: 'out' | 'err'): Promise<void>;
}

function watch(file: string, url: string, token: string): Watch {
  const proc = spawn(process.execPath, [MYCELITE_BIN, 'push', file, '--hub', url, '--db', 'app', '--watch'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, MYCELITE_TOKEN: token },
  });
  children.push(proc);
  let out = '';
  let err = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  return {
    proc,
    out: () => out,
    err: () => err,
    async until(re, stream) {
      const deadline = Date.now() + 30_000;
      while (!re.test(stream === 'out' ? out : err)) {
        if (proc.exitCode !== null) assert.fail(`push --watch exited ${proc.exitCode}: ${err}`);
        if (Date.now() > deadline) assert.fail(`no ${re} on ${stream} in 30 s:\n${out}\n${err}`);
        await sleep(20);
      }
    },
  };
}

async function writer(): Promise<{ file: string; commit: (sql: string) => Promise<void> }> {
  const file = path.join(tempDir(), 'app.db');
  const commit = async (sql: string): Promise<void> => {
    const db = await open(file);
    db.exec(sql);
    db.close();
  };
  await commit('create table t(a)');
  return { file, commit };
}

test('a hub down from the start: says it cannot reach it, then that it answers again, then pushes', async () => {
  const port = await freePort();
  const dir = tempDir('mycelite-hubdata-');
  const { file, commit } = await writer();
  // The hub's key exists before the hub does: the token is good once it starts.
  const token = await mintToken(loadOrCreateKey(dir), { db: 'app', role: 'writer', ttlSeconds: 3600 });
  const w = watch(file, `http://127.0.0.1:${port}`, token);
  await w.until(
    /^mycelite: cannot reach the hub at http:\/\/127\.0\.0\.1:\d+ \(.*ECONNREFUSED.*\): check the URL and that `mycelite serve` is running; retrying$/m,
    'err',
  );
  await commit('insert into t values (1)');
  const h = await startTestHub(dir, { port });
  closers.push(() => h.close());
  await w.until(/^mycelite: the hub answers again$/m, 'err');
  await w.until(/pushed 2 snapshots: the hub is at txid 2/, 'out');
});

test('a hub that fails (ENOSPC, HTTP 500): says the hub fails, not that it cannot be reached; goes on after', async () => {
  let full = false;
  const dir = tempDir('mycelite-hubdata-');
  const real = await FsStorage.open(dir);
  const storage = new Proxy(real, {
    get(target, key) {
      if (key === 'append' && full) {
        return async () => {
          throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
        };
      }
      const v = Reflect.get(target, key) as unknown;
      return typeof v === 'function' ? v.bind(target) : v;
    },
  }) as HubStorage;
  const h = await startTestHub(dir, { storage });
  closers.push(() => h.close());
  const token = await h.token('app', 'writer');
  const { file, commit } = await writer();
  const w = watch(file, h.url, token);
  await w.until(/pushed 1 snapshot: the hub is at txid 1/, 'out');
  full = true;
  await commit('insert into t values (1)');
  await w.until(
    /^mycelite: the hub at http:\/\/127\.0\.0\.1:\d+ fails: .*ENOSPC: no space left on device.*; retrying$/m,
    'err',
  );
  assert.doesNotMatch(w.err(), /cannot reach/);
  full = false;
  await w.until(/^mycelite: the hub answers again$/m, 'err');
  await w.until(/the hub is at txid 2/, 'out');
});
