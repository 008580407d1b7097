/**
 * Replication figures for `npm run bench` (a fresh process, started by scripts/bench.ts). Prints one JSON
 * object:
 * - lag: commit-to-replica lag through a hub on loopback (scripts/lag.ts), with 1 replica, and the hub's
 *   RSS and p99 lag with 100 and 1,000 live follow streams;
 * - apply: a replica catching up on a backlog of snapshots through the hub (MB of journal per second);
 * - restore: restoring the latest state of a database against copying its file;
 * - writerRss: the writer's peak RSS during one large transaction, against the data it writes.
 *
 *   node dist/scripts/bench-replication.js --dir DIR [--quick]
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { mintToken, startHub } from '../src/hub/index.js';
import { nodeRuntime, open, openReplica } from '../src/node/index.js';
import { restoreDatabase } from '../src/restore/restore.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    dir: { type: 'string' },
    quick: { type: 'boolean', default: false },
    'writer-rss': { type: 'string' },
    /** Comma-separated parts to run (lag, apply, restore, rss); default all. */
    only: { type: 'string' },
  },
});
const quick = values.quick!;
const MiB = 2 ** 20;
const parts = values.only ? new Set(values.only.split(',')) : undefined;
const want = (part: string): boolean => !parts || parts.has(part);

function lag(commits: number, streams: number): unknown {
  const r = spawnSync(
    process.execPath,
    [
      path.join(HERE, 'lag.js'),
      '--commits',
      String(commits),
      '--interval',
      '5',
      '--streams',
      String(streams),
      '--json',
    ],
    { encoding: 'utf8', maxBuffer: 1 << 24 },
  );
  if (r.status !== 0) return { error: r.stderr.slice(-500) };
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

/** A replica applies a backlog of `mb` MB of journal through a hub on loopback. */
async function apply(dir: string, mb: number): Promise<unknown> {
  const hub = await startHub({ dataDir: path.join(dir, 'hub'), port: 0, logLevel: 'silent' });
  try {
    const token = (role: 'writer' | 'reader'): Promise<string> =>
      mintToken(hub.key, { db: 'bench', role, ttlSeconds: 3600 });
    const target = { url: hub.url, db: 'bench' };
    const w = await open(path.join(dir, 'w.db'), { hub: { ...target, token: await token('writer') } });
    w.exec('create table t(id integer primary key, v blob)');
    await w.sync!.flush(30_000);
    const replicaPath = path.join(dir, 'r.db');
    const r0 = await openReplica(replicaPath, { hub: { ...target, token: await token('reader') } });
    await r0.ready();
    await r0.close();
    // The backlog: transactions of 64 rows × 1 KiB (new pages and changed B-tree pages).
    const ins = w.prepare('insert into t(v) values (?)');
    const before = fs.statSync(w.journalPath).size;
    while (fs.statSync(w.journalPath).size - before < mb * MiB) {
      w.transaction(() => {
        for (let i = 0; i < 64; i++) ins.run(randomBytes(1024));
      })();
    }
    await w.sync!.flush(120_000);
    const bytes = fs.statSync(w.journalPath).size - before;
    const snapshots = Number(w.position().txid) - 2;
    const t0 = performance.now();
    const r = await openReplica(replicaPath, { hub: { ...target, token: await token('reader') } });
    await r.waitFor(w.position().txid, 300_000);
    const ms = performance.now() - t0;
    await r.close();
    await w.sync!.close();
    w.close();
    return {
      journalMB: +(bytes / MiB).toFixed(1),
      snapshots,
      seconds: +(ms / 1000).toFixed(2),
      MBps: +(bytes / MiB / (ms / 1000)).toFixed(1),
    };
  } finally {
    await hub.close();
  }
}

/** Restore of the latest state vs a file copy, for a database of about `mb` MB. */
async function restore(dir: string, mb: number): Promise<unknown> {
  const file = path.join(dir, 'big.db');
  const db = await open(file);
  db.exec('create table t(id integer primary key, v blob)');
  const ins = db.prepare('insert into t(v) values (?)');
  const per = 1024;
  const rowsPerTx = 1024; // 1 MiB per transaction
  for (let t = 0; t < mb; t++) {
    db.transaction(() => {
      for (let i = 0; i < rowsPerTx; i++) ins.run(randomBytes(per));
    })();
  }
  db.close();
  const size = fs.statSync(file).size;
  const copyTo = path.join(dir, 'copy.db');
  const t0 = performance.now();
  fs.copyFileSync(file, copyTo);
  const fd = fs.openSync(copyTo, 'r+');
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  const copyMs = performance.now() - t0;
  const t1 = performance.now();
  await restoreDatabase(nodeRuntime.fs, file, path.join(dir, 'restored.db'));
  const restoreMs = performance.now() - t1;
  return {
    dbMB: +(size / MiB).toFixed(1),
    journalMB: +(fs.statSync(`${file}-mycelite/journal`).size / MiB).toFixed(1),
    copySeconds: +(copyMs / 1000).toFixed(2),
    restoreSeconds: +(restoreMs / 1000).toFixed(2),
    ratio: +(restoreMs / copyMs).toFixed(2),
  };
}

/**
 * The process's peak RSS so far (Linux's VmHWM; 0 elsewhere): it also sees the commit, which runs
 * synchronously and cannot be sampled from JavaScript.
 */
function highWaterRss(): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** In a child: one transaction writing `mb` MB; prints the peak RSS seen while it ran (and committed). */
async function writerRss(dir: string, mb: number): Promise<void> {
  const db = await open(path.join(dir, 'huge.db'));
  db.exec('create table t(id integer primary key, v blob)');
  const ins = db.prepare('insert into t(v) values (?)');
  const base = process.memoryUsage().rss;
  let peak = base;
  const blob = randomBytes(4096);
  const t0 = performance.now();
  db.transaction(() => {
    for (let i = 0; i < (mb * MiB) / 4096; i++) {
      blob.writeUInt32LE(i, 0);
      ins.run(blob);
      if (i % 256 === 0) peak = Math.max(peak, process.memoryUsage().rss);
    }
  })();
  peak = Math.max(peak, process.memoryUsage().rss, highWaterRss());
  const seconds = (performance.now() - t0) / 1000;
  db.close();
  process.stdout.write(
    JSON.stringify({
      transactionMB: mb,
      baseRssMiB: +(base / MiB).toFixed(1),
      peakRssMiB: +(peak / MiB).toFixed(1),
      seconds: +seconds.toFixed(1),
    }),
  );
}

async function main(): Promise<void> {
  const root = fs.mkdtempSync(path.join(path.resolve(values.dir ?? '.bench'), 'replication-'));
  const sub = (name: string): string => {
    const d = path.join(root, name);
    fs.mkdirSync(d);
    return d;
  };
  const out: Record<string, unknown> = {};
  try {
    if (want('lag')) {
      out['lag, 1 replica'] = lag(quick ? 100 : 1000, 0);
      const streams = quick ? 10 : 100;
      out[`lag, 1 replica + ${streams} streams`] = lag(quick ? 50 : 1000, streams);
      if (!quick) out['lag, 1 replica + 1000 streams'] = lag(300, 1000);
    }
    if (want('apply')) out['apply'] = await apply(sub('apply'), quick ? 2 : 64);
    if (want('restore')) out['restore vs copy'] = await restore(sub('restore'), quick ? 8 : 256);
    const mb = quick ? 32 : 1024;
    const r = !want('rss')
      ? undefined
      : spawnSync(
          process.execPath,
          [fileURLToPath(import.meta.url), '--dir', sub('rss'), '--writer-rss', String(mb)],
          {
            encoding: 'utf8',
          },
        );
    if (r)
      out['writer RSS, one large transaction'] =
        r.status === 0 ? JSON.parse(r.stdout) : { error: r.stderr.slice(-500) };
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

if (values['writer-rss']) await writerRss(values.dir!, Number(values['writer-rss']));
else await main();
