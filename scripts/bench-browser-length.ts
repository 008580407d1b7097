/**
 * History length in the browser (issue 22): what `connect()` of a writer costs on OPFS as its history
 * grows. Debian's Chromium (headless, playwright-core, a persistent profile so OPFS is on disk) loads
 * the library bundle (dist/web, `node dist/scripts/build-web.js`) from a hub in this process; for each
 * size, a writer commits that many one-row transactions (`db.bench`, `synchronous = OFF`: no flush per
 * commit, so the history builds fast) and closes; then every size is connected again, sizes
 * interleaved, `--runs` times: the time from `connect()` to its resolving, and to a first query.
 * Prints one JSON object.
 *
 *   node dist/scripts/bench-browser-length.js [--max 100000] [--runs 3] [--quick]
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { startHub } from '../src/hub/index.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const WEB = path.join(HERE, '..', 'web');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const { values } = parseArgs({
  options: {
    max: { type: 'string', default: '100000' },
    runs: { type: 'string', default: '3' },
    quick: { type: 'boolean', default: false },
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

const data = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-bbl-hub-'));
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-bbl-chromium-'));
const hub = await startHub({
  dataDir: data,
  port: 0,
  logLevel: 'silent',
  web: { dir: WEB, demoTokens: false },
});
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
});
try {
  const page = await context.newPage();
  await page.goto(`${hub.url}/`);
  type Lib = {
    connect(o: { name: string }): Promise<{
      exec(sql: string): Promise<unknown>;
      query(sql: string): Promise<Record<string, unknown>[]>;
      bench(n: number): Promise<{ ms: number }>;
      close(): Promise<void>;
    }>;
  };
  const built: { n: number; buildS: number }[] = [];
  for (const n of sizes) {
    const buildS = await page.evaluate(async (n) => {
      const m = (await import('/mycelite-browser.js' as string)) as Lib;
      const t = performance.now();
      const db = await m.connect({ name: `h${n}` });
      await db.exec('pragma synchronous = OFF');
      for (let done = 0; done < n; done += 10_000) await db.bench(Math.min(10_000, n - done));
      await db.close();
      return (performance.now() - t) / 1000;
    }, n);
    built.push({ n, buildS });
    process.stderr.write(`built ${n} transactions in ${buildS.toFixed(1)} s\n`);
  }
  const samples = new Map<number, { connectMs: number; firstQueryMs: number }[]>(sizes.map((n) => [n, []]));
  for (let run = 0; run < runs; run++) {
    for (const n of sizes) {
      // A fresh page each time: the worker and its engine start as they do when the app loads.
      const p = await context.newPage();
      await p.goto(`${hub.url}/`);
      const m = await p.evaluate(async (n) => {
        const lib = (await import('/mycelite-browser.js' as string)) as Lib;
        const t0 = performance.now();
        const db = await lib.connect({ name: `h${n}` });
        const t1 = performance.now();
        const [row] = await db.query('select count(*) as c from bench_commit');
        const t2 = performance.now();
        await db.close();
        return { connectMs: t1 - t0, firstQueryMs: t2 - t1, rows: Number(row!.c) };
      }, n);
      await p.close();
      if (m.rows !== n) throw new Error(`h${n}: ${m.rows} rows, expected ${n}`);
      samples.get(n)!.push({ connectMs: m.connectMs, firstQueryMs: m.firstQueryMs });
    }
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  const out = built.map(({ n, buildS }) => ({
    transactions: n,
    buildS: Number(buildS.toFixed(1)),
    connectMs: Number(median(samples.get(n)!.map((s) => s.connectMs)).toFixed(1)),
    firstQueryMs: Number(median(samples.get(n)!.map((s) => s.firstQueryMs)).toFixed(1)),
  }));
  console.log(
    JSON.stringify({ runs, chromium: context.browser()?.version() ?? 'persistent', sizes: out }, null, 2),
  );
} finally {
  await context.close();
  await hub.close();
  fs.rmSync(data, { recursive: true, force: true });
  fs.rmSync(profile, { recursive: true, force: true });
}
