/**
 * Shared databases (issue 14), as run by `npm run bench` (or alone: `node dist/scripts/bench-shared.js
 * [--quick] [--dir D]`). Prints one JSON object:
 *
 * - merges: 3 devices, each its own process, write one-row transactions as fast as they can for a few
 *   seconds through one hub on loopback; merged transactions per second (the hub's head growing) while
 *   they write, and how long after they stop until every device holds everyone's (flushed and idle);
 * - latency: a row committed on device A, until device B (following the hub) has it in its database, in
 *   this process: p50 / p99 over many rows;
 * - rebase: device B, offline, commits 100 one-row transactions on a database of 100 MB while A commits
 *   one; B comes online: the time its rebase takes (reset to the hub's head, 100 changes applied again,
 *   the journal's tail rewritten), as reported by its `received` event.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { HubClient } from '../src/client/hub-client.js';
import { mintToken } from '../src/hub/auth.js';
import { startHub } from '../src/hub/index.js';
import { type MyceliteDatabase, open } from '../src/node/index.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const opts = new Command('bench-shared')
  .option('--quick', 'small sizes', false)
  .option('--dir <dir>', 'scratch directory', '.bench')
  .parse()
  .opts<{ quick: boolean; dir: string }>();

const seconds = opts.quick ? 1.5 : 5;
const latencyRows = opts.quick ? 30 : 200;
const rebaseMiB = opts.quick ? 5 : 100;

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
const round = (x: number, d = 1): number => Math.round(x * 10 ** d) / 10 ** d;
const idle = (db: MyceliteDatabase): Promise<void> =>
  (db.sync as unknown as { whenIdle(): Promise<void> }).whenIdle();

async function main(): Promise<void> {
  const base = path.resolve(opts.dir, `shared-${process.pid}`);
  fs.rmSync(base, { recursive: true, force: true });
  fs.mkdirSync(base, { recursive: true });
  const hub = await startHub({ dataDir: path.join(base, 'hub'), port: 0, logLevel: 'silent' });
  const token = (db: string): Promise<string> => mintToken(hub.key, { db, role: 'writer', ttlSeconds: 3600 });
  const device = async (name: string, db: string, withHub = true): Promise<MyceliteDatabase> =>
    open(path.join(base, `${name}.db`), {
      shared: true,
      ...(withHub ? { hub: { url: hub.url, db, token: await token(db) } } : {}),
    });
  const out: Record<string, unknown> = {};
  try {
    out['merges'] = await merges(hub.url, await token('merges'), base);
    out['latency'] = await latency(device);
    out['rebase'] = await rebase(device);
  } finally {
    await hub.close();
    fs.rmSync(base, { recursive: true, force: true });
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

/** 3 device processes writing one-row transactions as fast as they can. */
async function merges(url: string, token: string, base: string): Promise<Record<string, unknown>> {
  // The database exists before they start (so they all join one history).
  const first = await open(path.join(base, 'm0.db'), { shared: true, hub: { url, db: 'merges', token } });
  first.exec('create table if not exists e(id text primary key, device text, n integer)');
  await first.sync!.flush(30_000);
  await first.sync!.close();
  first.close();
  const client = new HubClient({ url, db: 'merges', token });
  const children = [1, 2, 3].map((i) =>
    spawn(
      process.execPath,
      [path.join(HERE, 'bench-shared-device.js'), path.join(base, `m${i}.db`), url, token, String(seconds)],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    ),
  );
  const lines = children.map(
    (c) =>
      new Promise<string>((resolve, reject) => {
        let out = '';
        c.stdout!.setEncoding('utf8').on('data', (d: string) => {
          out += d;
        });
        c.on('exit', (code) =>
          code === 0 ? resolve(out) : reject(new Error(`a device exited with ${code}: ${out}`)),
        );
      }),
  );
  // Measure the hub's head while they write (they print "writing" when they start).
  const started = await Promise.all(
    children.map(
      (c) =>
        new Promise<void>((resolve) => {
          c.stdout!.on('data', (d: Buffer) => {
            if (d.toString().includes('writing')) resolve();
          });
        }),
    ),
  );
  void started;
  const h0 = (await client.state())!.head.txid;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const h1 = (await client.state())!.head.txid;
  const t1 = performance.now();
  const results = (await Promise.all(lines)).map(
    (l) => JSON.parse(l.trim().split('\n').at(-1)!) as Record<string, number>,
  );
  const done = performance.now();
  const commits = results.reduce((n, r) => n + r['commits']!, 0);
  return {
    devices: 3,
    seconds,
    mergedPerSecond: round(Number(h1 - h0) / ((t1 - t0) / 1000)),
    committedPerSecond: round(commits / seconds),
    commits,
    conflicts: results.reduce((n, r) => n + r['conflicts']!, 0),
    rejected: results.reduce((n, r) => n + r['rejected']!, 0),
    allMergedSecondsAfterStop: round((done - t1) / 1000, 2),
  };
}

/** A row committed on A, until B holds it. */
async function latency(
  device: (n: string, db: string) => Promise<MyceliteDatabase>,
): Promise<Record<string, unknown>> {
  const a = await device('la', 'latency');
  a.exec('create table if not exists e(id text primary key, at real)');
  await a.sync!.flush(30_000);
  const b = await device('lb', 'latency');
  await idle(b);
  const has = b.prepare('select 1 from e where id = ?').pluck();
  const ms: number[] = [];
  try {
    for (let i = 0; i < latencyRows; i++) {
      const id = `r${i}`;
      const seen = new Promise<void>((resolve) => {
        const off = b.sync!.on('received', () => {
          if (has.get(id)) {
            off();
            resolve();
          }
        });
      });
      const t = performance.now();
      a.prepare('insert into e values (?, ?)').run(id, t);
      await seen;
      ms.push(performance.now() - t);
      await new Promise((r) => setTimeout(r, 10));
    }
  } finally {
    await a.sync!.close();
    await b.sync!.close();
    a.close();
    b.close();
  }
  return {
    rows: ms.length,
    p50Ms: round(pct(ms, 50)),
    p99Ms: round(pct(ms, 99)),
    maxMs: round(Math.max(...ms)),
  };
}

/** 100 pending one-row transactions on a large database, rebased over one of another device's. */
async function rebase(
  device: (n: string, db: string, hub?: boolean) => Promise<MyceliteDatabase>,
): Promise<Record<string, unknown>> {
  const a = await device('ra', 'rebase');
  a.exec('create table if not exists big(id integer primary key, v blob)');
  a.exec('create table if not exists e(id text primary key, n integer)');
  const chunk = 1 << 20;
  for (let i = 0; i < rebaseMiB; i++) a.prepare('insert into big(v) values (randomblob(?))').run(chunk);
  await a.sync!.flush(600_000);
  let b = await device('rb', 'rebase');
  await idle(b);
  await b.sync!.close();
  b.close();
  b = await device('rb', 'rebase', false);
  for (let i = 0; i < 100; i++) b.prepare('insert into e values (?, ?)').run(`b${i}`, i);
  b.close();
  a.prepare('insert into e values (?, ?)').run('a1', 1);
  await a.sync!.flush(30_000);
  b = await device('rb', 'rebase');
  const received = new Promise<{ ms: number; reapplied: number }>((resolve) => {
    b.sync!.on('received', (e) => resolve(e));
  });
  const r = await received;
  await b.sync!.flush(60_000);
  const size = fs.statSync(b.name).size;
  await a.sync!.close();
  await b.sync!.close();
  a.close();
  b.close();
  return { databaseMiB: round(size / 2 ** 20), pending: 100, reapplied: r.reapplied, rebaseMs: round(r.ms) };
}

await main();
