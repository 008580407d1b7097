/**
 * The OPFS pool under what a shared database does to its files, in a real Chromium worker (the checks
 * are test/helpers/opfs-check.ts, bundled here with esbuild and served by a hub): an atomic replace of an
 * open file, a delete of an open file, a crash inside a rename, a ShadowFile spilling into the pool, and
 * a closed handle that must not reach a slot another file may hold by then.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import type { BrowserContext } from 'playwright-core';
import { browserMissing, persistentContext } from './helpers/browser.js';
import { startTestHub, type TestHub } from './helpers/hub.js';

const missing = browserMissing();

describe('browser: the OPFS pool under a shared database', { skip: missing, timeout: 60_000 }, () => {
  let hub: TestHub;
  let context: BrowserContext;
  const dirs: string[] = [];

  before(async () => {
    const web = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-opfs-web-'));
    dirs.push(web);
    await build({
      entryPoints: [fileURLToPath(new URL('./helpers/opfs-check.js', import.meta.url))],
      outfile: path.join(web, 'opfs-check.js'),
      bundle: true,
      format: 'esm',
      platform: 'browser',
      target: 'es2022',
      logLevel: 'warning',
    });
    fs.writeFileSync(path.join(web, 'index.html'), '<!doctype html><title>opfs check</title>');
    hub = await startTestHub(undefined, { web: { dir: web, demoTokens: false } });
    const p = await persistentContext();
    context = p.context;
    dirs.push(p.dir);
  });

  after(async () => {
    await context?.close();
    await hub?.close();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  it('every case holds', async () => {
    const page = await context.newPage();
    await page.goto(`${hub.url}/`);
    const results = await page.evaluate(
      () =>
        new Promise<{ name: string; ok: boolean; error?: string }[]>((resolve, reject) => {
          const w = new Worker('/opfs-check.js', { type: 'module' });
          w.onmessage = (e) => resolve(e.data);
          w.onerror = (e) => reject(new Error(e.message));
        }),
    );
    assert.equal(results.length, 5);
    for (const r of results) console.log(`# ${r.ok ? 'ok' : 'FAILED'}: ${r.name}`);
    assert.deepEqual(
      results.filter((r) => !r.ok).map((r) => `${r.name}: ${r.error}`),
      [],
    );
  });
});
