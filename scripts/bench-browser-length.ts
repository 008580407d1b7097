/**
 * History length in the browser (issue 22): what `connect()` of a writer costs on OPFS as its history
 * grows. Debian's Chromium (headless, playwright-core, a persistent profile so OPFS is on disk) loads
 * the library bundle (dist/web, `node dist/scripts/build-web.js`) from a hub in this process, into a
 * blank page (not the demo app, which would open a database of its own meanwhile); for each size, a
 * writer commits that many one-row transactions (`db.bench`, `synchronous = OFF`: no flush per commit,
 * so the history builds fast) and closes; then every size is connected again from a fresh page, sizes
 * interleaved, `--runs` times: the time from `connect()` to its resolving, and to a first query, with
 * where the time went (`db.timings()`: the page's and the worker's steps, medians).
 *
 * A history above 100,000 transactions (or every one, with `--node-build`) is built by this process
 * instead, through the library's open() on the disk (the same transactions: one row each with a UUID
 * key, `synchronous = OFF`, default history settings; the page builds ~1,000/s, Node many times that),
 * and its files (database, journal, compacted history, markers) are then copied into the database's
 * OPFS pool as they are, each into a slot file of the pool's format (src/browser/opfs-pool.ts).
 *
 * `--before DIR`: also connect with another build's bundle (its dist/web, e.g. main's), interleaved
 * with this one's, same pages, same OPFS files (it reports totals only when it has no timings()).
 * `--node-compact-at BYTES`: the Node build's automatic compaction threshold (history.compactAt; 0: off)
 * instead of the default: each compaction rewrites the whole compacted history, which makes a build of
 * 1,000,000 take hours on a loaded machine; without, the history is one long live journal.
 *
 * `--profile DIR --port N`: keep Chromium's profile (and so the built databases, in the OPFS of the
 * hub's origin, which the port is part of) in DIR; a later run with the same two connects to what is
 * there instead of building it again. Prints one JSON object.
 *
 *   node dist/scripts/bench-browser-length.js [--max 100000] [--runs 3] [--quick] [--before DIR]
 *     [--node-build] [--profile DIR --port N]
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { startHub } from '../src/hub/index.js';
import { open } from '../src/node/index.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const WEB = path.join(HERE, '..', 'web');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const { values } = parseArgs({
  options: {
    max: { type: 'string', default: '100000' },
    runs: { type: 'string', default: '3' },
    quick: { type: 'boolean', default: false },
    before: { type: 'string' },
    'node-build': { type: 'boolean', default: false },
    profile: { type: 'string' },
    'node-compact-at': { type: 'string' },
    port: { type: 'string', default: '0' },
  },
});
const max = values.quick ? 5_000 : Number(values.max);
const runs = values.quick ? 1 : Number(values.runs);
if (!Number.isSafeInteger(max) || max < 1000 || !Number.isSafeInteger(runs) || runs < 1) {
  process.stderr.write('bench-browser-length: --max must be ≥ 1000 and --runs ≥ 1\n');
  process.exit(2);
}
if (!fs.existsSync(CHROMIUM)) {
  process.stderr.write(
    `bench-browser-length: no Chromium at ${CHROMIUM} (install chromium or set $CHROMIUM)\n`,
  );
  process.exit(1);
}
if (!fs.existsSync(path.join(WEB, 'mycelite-browser.js'))) {
  process.stderr.write(
    `bench-browser-length: the library bundle is not built: run node dist/scripts/build-web.js\n`,
  );
  process.exit(1);
}
const sizes = [1_000, 100_000, 1_000_000].filter((n) => n <= max);
if (!sizes.includes(max)) sizes.push(max);

/** Builds `n` transactions as the page's db.bench does, through open() on the disk; returns the files. */
async function buildInNode(n: number, dir: string): Promise<{ rel: string; abs: string }[]> {
  const file = path.join(dir, `h${n}.db`);
  const compactAt = values['node-compact-at'];
  const db = await open(file, compactAt === undefined ? {} : { history: { compactAt: Number(compactAt) } });
  db.exec('pragma synchronous = OFF');
  db.exec('create table if not exists bench_commit(id text primary key, at real, note text)');
  const insert = db.prepare('insert into bench_commit(id, at, note) values (?, ?, ?)');
  for (let i = 0; i < n; i++) {
    insert.run(crypto.randomUUID(), Date.now(), `commit ${i}`);
    // Between batches, as the page's requests of 10,000: the automatic compaction runs there.
    if (i % 10_000 === 9_999) await new Promise((r) => setImmediate(r));
  }
  await db.historyCheck;
  db.close();
  const files: { rel: string; abs: string }[] = [];
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const abs = path.join(d, e.name);
      if (e.isDirectory()) walk(abs);
      else if (e.isFile()) files.push({ rel: `/${path.relative(dir, abs).split(path.sep).join('/')}`, abs });
    }
  };
  walk(dir);
  return files;
}

/** Serves `files` by index to the page (another origin: CORS allowed), streamed from the disk. */
async function serveFiles(files: { abs: string }[]): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    const f = files[Number(new URL(req.url ?? '/', 'http://x').pathname.slice(1))];
    if (!f) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'content-length': fs.statSync(f.abs).size,
      'access-control-allow-origin': '*',
    });
    fs.createReadStream(f.abs).pipe(res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/**
 * Builds `n` transactions in Node, then copies the files into the OPFS pool of database h`n` (writer):
 * each file into its own slot file, `slot-I`, behind the pool's 4 KiB header (magic "MYCP", generation,
 * the path's length and the path). Returns the seconds it took.
 */
async function buildThroughNode(page: import('playwright-core').Page, n: number): Promise<number> {
  const t = performance.now();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-bbl-node-'));
  try {
    const files = await buildInNode(n, dir);
    process.stderr.write(
      `built ${n} transactions in Node in ${((performance.now() - t) / 1000).toFixed(1)} s: copying\n`,
    );
    const server = await serveFiles(files);
    try {
      await page.evaluate(
        async ({ pool, url, paths }) => {
          const top = await navigator.storage.getDirectory();
          const parent = await top.getDirectoryHandle('mycelite', { create: true });
          // Whatever a check left there (an empty database) goes: the pool holds the copied files only.
          await parent.removeEntry(pool, { recursive: true }).catch(() => {});
          const dir = await parent.getDirectoryHandle(pool, { create: true });
          for (const [i, p] of paths.entries()) {
            const name = new TextEncoder().encode(p);
            const header = new Uint8Array(4096);
            const v = new DataView(header.buffer);
            v.setUint32(0, 0x4d594350);
            v.setBigUint64(4, BigInt(i + 1));
            v.setUint16(12, name.length);
            header.set(name, 16);
            const res = await fetch(`${url}/${i}`);
            if (!res.ok || !res.body) throw new Error(`${p}: HTTP ${res.status}`);
            const fh = await dir.getFileHandle(`slot-${i}`, { create: true });
            const w = await fh.createWritable();
            await w.write(header);
            await res.body.pipeTo(w);
          }
        },
        { pool: `h${n}.writer`, url: server.url, paths: files.map((f) => f.rel) },
      );
    } finally {
      await server.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return (performance.now() - t) / 1000;
}

const data = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-bbl-hub-'));
if (values.profile && values.port === '0') {
  process.stderr.write('bench-browser-length: --profile needs a fixed --port (OPFS belongs to the origin)\n');
  process.exit(2);
}
const profile = values.profile ?? fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-bbl-chromium-'));
fs.mkdirSync(profile, { recursive: true });
// What the hub serves: this build's bundle, a blank page, and `--before`'s bundle under before.*.
const served = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-bbl-web-'));
for (const f of fs.readdirSync(WEB)) fs.symlinkSync(path.join(WEB, f), path.join(served, f));
fs.writeFileSync(path.join(served, 'bench.html'), '<!doctype html><title>bench</title>\n');
const variants = [{ name: 'now', module: '/mycelite-browser.js', worker: '/mycelite-worker.js' }];
if (values.before) {
  for (const f of ['mycelite-browser.js', 'mycelite-worker.js'])
    fs.copyFileSync(path.join(values.before, f), path.join(served, `before.${f}`));
  if (
    !fs
      .readFileSync(path.join(values.before, 'sqlite3.wasm'))
      .equals(fs.readFileSync(path.join(WEB, 'sqlite3.wasm')))
  )
    throw new Error("--before: its sqlite3.wasm differs from this build's");
  variants.unshift({
    name: 'before',
    module: '/before.mycelite-browser.js',
    worker: '/before.mycelite-worker.js',
  });
}
const hub = await startHub({
  dataDir: data,
  port: Number(values.port),
  logLevel: 'silent',
  web: { dir: served, demoTokens: false },
});
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
});
try {
  const page = await context.newPage();
  await page.goto(`${hub.url}/bench.html`);
  type Db = {
    exec(sql: string): Promise<unknown>;
    query(sql: string): Promise<Record<string, unknown>[]>;
    bench(n: number): Promise<{ ms: number }>;
    timings?(): Promise<Record<string, number>>;
    close(): Promise<void>;
  };
  type Lib = { connect(o: { name: string; workerUrl?: string }): Promise<Db> };
  const built: { n: number; buildS: number; builtIn: string }[] = [];
  for (const n of sizes) {
    if (values.profile) {
      const held = await page.evaluate(async (n) => {
        const m = (await import('/mycelite-browser.js' as string)) as Lib;
        const db = await m.connect({ name: `h${n}` });
        try {
          const [t] = await db.query("select count(*) as c from sqlite_schema where name = 'bench_commit'");
          if (Number(t!.c) === 0) return 0;
          const [row] = await db.query('select count(*) as c from bench_commit');
          return Number(row!.c);
        } finally {
          await db.close();
        }
      }, n);
      if (held === n) {
        built.push({ n, buildS: 0, builtIn: 'kept' });
        process.stderr.write(`h${n}: kept from an earlier run (${values.profile})\n`);
        continue;
      }
      if (held !== 0)
        throw new Error(`h${n} in ${values.profile} holds ${held} rows, not ${n}: remove the profile`);
    }
    const inNode = values['node-build'] || n > 100_000;
    const buildS = inNode
      ? await buildThroughNode(page, n)
      : await page.evaluate(async (n) => {
          const m = (await import('/mycelite-browser.js' as string)) as Lib;
          const t = performance.now();
          const db = await m.connect({ name: `h${n}` });
          await db.exec('pragma synchronous = OFF');
          for (let done = 0; done < n; done += 10_000) await db.bench(Math.min(10_000, n - done));
          await db.close();
          return (performance.now() - t) / 1000;
        }, n);
    built.push({ n, buildS, builtIn: inNode ? 'node' : 'page' });
    process.stderr.write(
      `built ${n} transactions in ${inNode ? 'Node' : 'the page'} in ${buildS.toFixed(1)} s\n`,
    );
  }
  await page.close();
  type Sample = { connectMs: number; firstQueryMs: number; steps: Record<string, number> };
  const key = (v: string, n: number): string => `${v} ${n}`;
  const samples = new Map<string, Sample[]>();
  for (let run = 0; run < runs; run++) {
    for (const n of sizes) {
      for (const v of variants) {
        // A fresh page each time: the worker and its engine start as they do when the app loads.
        const p = await context.newPage();
        await p.goto(`${hub.url}/bench.html`);
        const m = await p.evaluate(
          async ({ n, v }) => {
            const lib = (await import(v.module)) as Lib;
            const t0 = performance.now();
            const db = await lib.connect({ name: `h${n}`, workerUrl: v.worker });
            const t1 = performance.now();
            const [row] = await db.query('select count(*) as c from bench_commit');
            const t2 = performance.now();
            const steps = (await db.timings?.()) ?? {};
            await db.close();
            return { connectMs: t1 - t0, firstQueryMs: t2 - t1, rows: Number(row!.c), steps };
          },
          { n, v },
        );
        await p.close();
        if (m.rows !== n) throw new Error(`h${n}: ${m.rows} rows, expected ${n}`);
        const list = samples.get(key(v.name, n)) ?? [];
        list.push({ connectMs: m.connectMs, firstQueryMs: m.firstQueryMs, steps: m.steps });
        samples.set(key(v.name, n), list);
        process.stderr.write(
          `run ${run + 1} ${v.name} h${n}: connect ${m.connectMs.toFixed(1)} ms ${JSON.stringify(m.steps)}\n`,
        );
      }
    }
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  const round = (x: number): number => Number(x.toFixed(1));
  const out = built.map(({ n, buildS, builtIn }) => {
    const row: Record<string, unknown> = { transactions: n, builtIn, buildS: round(buildS) };
    for (const v of variants) {
      const ss = samples.get(key(v.name, n))!;
      const steps: Record<string, number> = {};
      for (const k of Object.keys(ss[0]!.steps))
        steps[k] = round(median(ss.map((s) => s.steps[k] ?? Number.NaN)));
      row[v.name] = {
        connectMs: round(median(ss.map((s) => s.connectMs))),
        firstQueryMs: round(median(ss.map((s) => s.firstQueryMs))),
        ...(Object.keys(steps).length ? { steps } : {}),
      };
    }
    return row;
  });
  console.log(
    JSON.stringify(
      {
        runs,
        chromium: context.browser()?.version() ?? 'persistent',
        load: os.loadavg().map(round),
        sizes: out,
      },
      null,
      2,
    ),
  );
} finally {
  await context.close();
  await hub.close();
  fs.rmSync(data, { recursive: true, force: true });
  if (!values.profile) fs.rmSync(profile, { recursive: true, force: true });
  fs.rmSync(served, { recursive: true, force: true });
}
