/**
 * History length (issue 22): what open() costs, in time and memory, for 1,000 and 100,000 (and, with
 * `--max 1000000`, 1,000,000) one-row transactions of history (`history: false`: nothing compacted away).
 * Each history is built once through open() with `synchronous = OFF` (no fsync per commit), closed
 * cleanly; then each size is opened in a fresh process (the engine loaded first, so the figure is open()
 * alone), sizes interleaved, `runs` times; medians.
 *
 * The hub's side (`hub` in each row; not with --skip-hub): a `mycelite serve --no-compact` process per
 * size. The history's first transaction is pushed and a replica takes it; then the rest is committed
 * offline, so the hub and that replica are a whole backlog behind. Measured: the hub's RSS empty, after
 * the backlog's push (`mycelite push`, a process: snapshots/s) and while idle; the replica catching up
 * on the backlog by replaying it (`imageBehind: false`: snapshots/s); a new replica (image) against
 * copying the database file over loopback HTTP (`min(runs, 3)` pairs, interleaved, medians); the hub
 * restarted: the time of the first request for the database, of the check of the journal's older part
 * (in a worker), and the RSS once that is done. Prints one JSON object.
 *
 *   node dist/scripts/bench-length.js [--dir DIR] [--runs N] [--max N] [--quick] [--skip-hub]
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadOrCreateKey, mintToken } from '../src/hub/auth.js';
import { open, openReplica } from '../src/node/index.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    dir: { type: 'string', default: '.bench' },
    runs: { type: 'string', default: '5' },
    max: { type: 'string', default: '100000' },
    quick: { type: 'boolean', default: false },
    'skip-hub': { type: 'boolean', default: false },
  },
});
const runs = values.quick ? 1 : Number(values.runs);
const max = values.quick ? 5_000 : Number(values.max);
if (!Number.isSafeInteger(runs) || runs < 1 || !Number.isSafeInteger(max) || max < 1000) {
  process.stderr.write('bench-length: --runs must be ≥ 1 and --max ≥ 1000\n');
  process.exit(2);
}
const sizes = [1_000, 100_000, 1_000_000].filter((n) => n <= max);
if (!sizes.includes(max)) sizes.push(max);
const base = fs.mkdtempSync(path.join(values.dir, 'length-'));

const BIN = fileURLToPath(new URL('../../bin/mycelite.js', import.meta.url));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** How long the hub is left alone before its RSS is read (shorter for the smoke test). */
const settleMs = values.quick ? 200 : 1000;

/** A `mycelite serve` process on loopback (port 0). */
interface Served {
  url: string;
  proc: ChildProcess;
  rssMiB(): number;
  /** Resolves when the hub logs a line matching `re` (its log is on stderr, level info). */
  logged(re: RegExp): Promise<string>;
  stop(): Promise<void>;
}

async function serve(data: string): Promise<Served> {
  const proc = spawn(
    process.execPath,
    [BIN, 'serve', '--data', data, '--port', '0', '--log-level', 'info', '--no-compact'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const lines: string[] = [];
  const waiting: { re: RegExp; resolve: (l: string) => void }[] = [];
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
    for (let nl = err.indexOf('\n'); nl >= 0; nl = err.indexOf('\n')) {
      const line = err.slice(0, nl);
      err = err.slice(nl + 1);
      lines.push(line);
      for (const w of waiting.filter((x) => x.re.test(line))) {
        waiting.splice(waiting.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    proc.once('exit', (code) => reject(new Error(`mycelite serve exited (${code})`)));
  });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  return {
    url,
    proc,
    rssMiB: () =>
      Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${proc.pid}/status`, 'utf8'))![1]) / 1024,
    logged: (re) => {
      const seen = lines.find((l) => re.test(l));
      return seen !== undefined
        ? Promise.resolve(seen)
        : new Promise((resolve) => waiting.push({ re, resolve }));
    },
    stop: async () => {
      proc.kill('SIGTERM');
      await exited;
    },
  };
}

/** Runs the CLI; its wall time (ms). */
function cli(args: string[]): number {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`mycelite ${args[0]} failed (${r.status}): ${r.stderr}`);
  return performance.now() - t0;
}

/** Copies `file` over loopback HTTP into `to` (fsynced): the baseline a new replica is compared with (ms). */
async function httpCopy(file: string, to: string): Promise<number> {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-length': fs.statSync(file).size });
    fs.createReadStream(file).pipe(res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const { port } = server.address() as { port: number };
    const t0 = performance.now();
    const res = await fetch(`http://127.0.0.1:${port}/`);
    const fd = fs.openSync(to, 'w');
    try {
      for await (const chunk of res.body!) fs.writeSync(fd, chunk as Uint8Array);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    return performance.now() - t0;
  } finally {
    server.close();
  }
}

interface HubRow {
  pushPerS: number;
  followPerS: number;
  newReplicaS: number;
  copyS: number;
  newReplicaVsCopy: number;
  hubRssEmptyMiB: number;
  hubRssAfterPushMiB: number;
  hubRssIdleMiB: number;
  restartedRssEmptyMiB: number;
  restartedFirstRequestMs: number;
  restartedCheckS: number;
  restartedRssMiB: number;
}

/** The hub's side of a history being built (see the top of this file); `more` commits the backlog. */
async function hubSide(file: string, n: number, more: () => Promise<void>): Promise<HubRow> {
  const data = path.join(base, `hub${n}`);
  let hub = await serve(data);
  await sleep(settleMs);
  const hubRssEmptyMiB = hub.rssMiB();
  const key = loadOrCreateKey(data);
  const token = (role: 'writer' | 'reader'): Promise<string> =>
    mintToken(key, { db: 'x', role, ttlSeconds: 3600 });
  const wt = await token('writer');
  const target = { url: hub.url, db: 'x', token: await token('reader') };
  try {
    cli(['push', file, '--hub', hub.url, '--db', 'x', '--token', wt]);
    const behind = path.join(base, `r${n}-behind.db`);
    const r0 = await openReplica(behind, { hub: target, imageBehind: false });
    await r0.ready();
    await r0.close();
    await more();
    const pushMs = cli(['push', file, '--hub', hub.url, '--db', 'x', '--token', wt]);
    const hubRssAfterPushMiB = hub.rssMiB();
    const head = BigInt(n + 1);
    let t0 = performance.now();
    const r1 = await openReplica(behind, { hub: target, imageBehind: false });
    await r1.waitFor(head, 3_600_000);
    const followMs = performance.now() - t0;
    await r1.close();
    const news: number[] = [];
    const copies: number[] = [];
    for (let i = 0; i < Math.min(runs, 3); i++) {
      const fresh = path.join(base, `r${n}-new${i}.db`);
      t0 = performance.now();
      const r2 = await openReplica(fresh, { hub: target });
      await r2.waitFor(head, 3_600_000);
      news.push(performance.now() - t0);
      await r2.close();
      copies.push(await httpCopy(file, path.join(base, `copy${n}-${i}.db`)));
      fs.rmSync(fresh, { force: true });
      fs.rmSync(`${fresh}-mycelite`, { recursive: true, force: true });
      fs.rmSync(path.join(base, `copy${n}-${i}.db`), { force: true });
    }
    await sleep(2 * settleMs);
    const hubRssIdleMiB = hub.rssMiB();
    await hub.stop();
    hub = await serve(data);
    await sleep(settleMs);
    const restartedRssEmptyMiB = hub.rssMiB();
    t0 = performance.now();
    const res = await fetch(`${hub.url}/v1/db/x`, { headers: { authorization: `Bearer ${target.token}` } });
    if (!res.ok) throw new Error(`state after restart: ${res.status}`);
    await res.arrayBuffer();
    const restartedFirstRequestMs = performance.now() - t0;
    // The journal's older part is checked in a worker after a start: idle means after that check.
    const checked = JSON.parse(await hub.logged(/stored journal checked/)) as { ms: number };
    await sleep(2 * settleMs);
    const newReplicaS = median(news) / 1000;
    const copyS = median(copies) / 1000;
    const round = (x: number, d = 1): number => Number(x.toFixed(d));
    return {
      pushPerS: Math.round(n / (pushMs / 1000)),
      followPerS: Math.round(n / (followMs / 1000)),
      newReplicaS: round(newReplicaS, 2),
      copyS: round(copyS, 3),
      newReplicaVsCopy: round(newReplicaS / copyS),
      hubRssEmptyMiB: round(hubRssEmptyMiB),
      hubRssAfterPushMiB: round(hubRssAfterPushMiB),
      hubRssIdleMiB: round(hubRssIdleMiB),
      restartedRssEmptyMiB: round(restartedRssEmptyMiB),
      restartedFirstRequestMs: round(restartedFirstRequestMs),
      restartedCheckS: round(checked.ms / 1000, 2),
      restartedRssMiB: round(hub.rssMiB()),
    };
  } finally {
    await hub.stop();
  }
}

async function build(
  n: number,
): Promise<{ file: string; journalMB: number; buildS: number; hub: HubRow | undefined }> {
  const file = path.join(base, `h${n}.db`);
  const started = performance.now();
  let db = await open(file, { history: false });
  db.exec('create table t(id integer primary key, v blob)');
  db.close();
  const rest = async (): Promise<void> => {
    db = await open(file, { history: false });
    db.exec('pragma synchronous = OFF');
    const insert = db.prepare('insert into t(v) values (randomblob(64))');
    for (let i = 0; i < n; i++) insert.run();
    await db.historyCheck;
    db.close();
  };
  let hub: HubRow | undefined;
  if (values['skip-hub']) await rest();
  else hub = await hubSide(file, n, rest);
  const journalMB = fs.statSync(`${file}-mycelite/journal`).size / 1e6;
  return { file, journalMB, buildS: (performance.now() - started) / 1000, hub };
}

interface Measured {
  openMs: number;
  checkMs: number;
  rssMiB: number;
  heapMiB: number;
  rows: number;
}

function measure(file: string): Measured {
  const r = spawnSync(
    process.execPath,
    ['--expose-gc', path.join(HERE, 'bench-length-open.js'), file, path.join(base, 'scratch.db')],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`bench-length-open ${file} failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout) as Measured;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

try {
  const built = [];
  for (const n of sizes) built.push({ n, ...(await build(n)) });
  const samples = new Map<number, Measured[]>(sizes.map((n) => [n, []]));
  for (let run = 0; run < runs; run++) {
    for (const b of built) {
      const m = measure(b.file);
      if (m.rows !== b.n) throw new Error(`${b.file}: ${m.rows} rows, expected ${b.n}`);
      samples.get(b.n)!.push(m);
    }
  }
  const out: Record<string, unknown> = {};
  for (const b of built) {
    const s = samples.get(b.n)!;
    const pick = (k: keyof Measured): number => Number(median(s.map((x) => x[k])).toFixed(1));
    out[`${b.n} txs`] = {
      journalMB: Number(b.journalMB.toFixed(1)),
      dbMB: Number((fs.statSync(b.file).size / 1e6).toFixed(1)),
      openMs: pick('openMs'),
      checkMs: pick('checkMs'),
      rssMiB: pick('rssMiB'),
      heapMiB: pick('heapMiB'),
      ...(b.hub ? { hub: b.hub } : {}),
    };
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
} finally {
  fs.rmSync(base, { recursive: true, force: true });
}
