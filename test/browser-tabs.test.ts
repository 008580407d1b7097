/**
 * Real Chromium, one profile (one device), several tabs on one database: exactly one tab holds it (Web
 * Lock), the others read live and send their writes to it; closing that tab hands the database (and the
 * hub lease) to another tab; time travel shows earlier states; a reload, and a restart of the browser,
 * keep the data (OPFS).
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import {
  addEntry,
  browserMissing,
  labels,
  launchOptions,
  openDemo,
  pageSha256,
  pageStatus,
  persistentContext,
  screenshot,
  startDemoHub,
  waitForLabel,
  waitPushed,
  waitReady,
} from './helpers/browser.js';
import type { TestHub } from './helpers/hub.js';

const missing = browserMissing();
const DB = 'demo-tabs';

const isLeader = (page: Page): Promise<boolean> =>
  page.evaluate(() => (window as unknown as { mycelite: { db: { leader: boolean } } }).mycelite.db.leader);

describe('browser: tabs, time travel, persistence', { skip: missing, timeout: 120_000 }, () => {
  let hub: TestHub;
  let context: BrowserContext;
  let dir: string;

  before(async () => {
    hub = await startDemoHub();
    ({ context, dir } = await persistentContext());
  });

  after(async () => {
    await context?.close();
    await hub?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('one tab holds the database; another reads live and writes through it; closing hands it over', async () => {
    const tab1 = await openDemo(context, hub, DB);
    for (const l of ['rent', 'groceries', 'salary']) await addEntry(tab1, l, l === 'salary' ? 250000 : -9000);
    const tab2 = await openDemo(context, hub, DB);
    assert.equal(await isLeader(tab1), true);
    assert.equal(await isLeader(tab2), false, 'exactly one tab holds the database');
    await waitForLabel(tab2, 'salary');
    // A write in the second tab runs in the first tab's worker; both show it.
    await addEntry(tab2, 'from tab 2', -1234);
    await waitForLabel(tab1, 'from tab 2', 5000);
    await waitForLabel(tab2, 'from tab 2', 5000);
    assert.deepEqual(await labels(tab2), await labels(tab1));
    const before = await pageSha256(tab2);

    await tab1.close({ runBeforeUnload: true });
    await tab2.waitForFunction(
      () => (window as unknown as { mycelite: { db: { leader: boolean } } }).mycelite.db.leader,
      null,
      { timeout: 20_000 },
    );
    const after = await pageSha256(tab2);
    assert.equal(after.sha256, before.sha256, 'the new holder opened the same OPFS files');
    await addEntry(tab2, 'after hand-over', -77);
    await waitForLabel(tab2, 'after hand-over');
    // It also took over the hub lease: its push is accepted.
    const s = await waitPushed(tab2, after.txid);
    assert.ok(BigInt(s.txid) > BigInt(after.txid), 'the commit after the hand-over happened');
    assert.equal(s.hubTxid, s.txid);
    await screenshot(tab2, 'browser-tab-after-handover');
    await tab2.close();
  });

  it('time travel shows the data as it was at an earlier snapshot', async () => {
    const page = await openDemo(context, hub, DB);
    const now = await labels(page);
    const s = await pageStatus(page);
    // txid 1 created the table (and the empty schema); 2 added 'rent'; 3 'groceries'.
    await page.$eval(
      '#travel',
      (el, v) => {
        const input = el as HTMLInputElement;
        input.value = v;
        input.dispatchEvent(new Event('input'));
      },
      '3',
    );
    await page.waitForFunction(() =>
      document.getElementById('travel-label')?.textContent?.startsWith('as of txid 3'),
    );
    await page.waitForFunction(() => document.querySelectorAll('#entries tr').length === 2);
    assert.deepEqual(await labels(page), ['groceries', 'rent']);
    assert.equal(await page.textContent('#count'), '2');
    await screenshot(page, 'browser-time-travel');
    await page.click('#travel-now');
    await page.waitForFunction((n) => document.querySelectorAll('#entries tr').length === n, now.length);
    assert.deepEqual(await labels(page), now);
    assert.equal((await pageStatus(page)).txid, s.txid, 'time travel changed nothing');
    await page.close();
  });

  it('a reload and a browser restart keep the data (OPFS)', async () => {
    const page = await openDemo(context, hub, DB);
    const shown = await labels(page);
    const sha = await pageSha256(page);
    await page.reload();
    await waitReady(page);
    assert.deepEqual(await labels(page), shown);
    await context.close();
    context = await chromium.launchPersistentContext(dir, launchOptions);
    const again = await openDemo(context, hub, DB);
    assert.deepEqual(await labels(again), shown);
    const sha2 = await pageSha256(again);
    assert.equal(sha2.sha256, sha.sha256);
    assert.equal(sha2.txid, sha.txid);
    // And it is still the writer: a new commit reaches the hub.
    await addEntry(again, 'after restart', -1);
    const st = await waitPushed(again, sha.txid);
    assert.ok(BigInt(st.txid) > BigInt(sha.txid), 'the commit after the restart happened');
    assert.equal(st.hubTxid, st.txid);
  });

  it('connect() works with the page compiling sqlite3.wasm and without (the worker then loads it itself); timings() names the steps', async () => {
    // Not the demo app's page: it would open a database of its own meanwhile.
    const page = await context.newPage();
    await page.goto(`${hub.url}/app.css`);
    const run = (compile: boolean): Promise<{ rows: number; steps: Record<string, number> }> =>
      page.evaluate(async (compile) => {
        if (!compile) (WebAssembly as { compileStreaming?: unknown }).compileStreaming = undefined;
        type Db = {
          exec(sql: string): Promise<unknown>;
          query(sql: string): Promise<Record<string, unknown>[]>;
          timings(): Promise<Record<string, number>>;
          close(): Promise<void>;
        };
        const lib = (await import('/mycelite-browser.js' as string)) as {
          connect(o: { name: string }): Promise<Db>;
        };
        const db = await lib.connect({ name: 'engine-load' });
        await db.exec('create table if not exists t(x); insert into t values (1)');
        const [row] = await db.query('select count(*) as n from t');
        const steps = await db.timings();
        await db.close();
        return { rows: Number(row!.n), steps };
      }, compile);
    const withPage = await run(true);
    assert.equal(withPage.rows, 1);
    assert.ok(withPage.steps.wasmCompiled! > 0, 'the page compiled the engine');
    for (const k of [
      'workerScript',
      'poolOpened',
      'engineLoaded',
      'open: read the journal',
      'opened',
      'openAnswered',
    ])
      assert.ok(withPage.steps[k]! > 0, `timings() has ${k}: ${JSON.stringify(withPage.steps)}`);
    const without = await run(false);
    assert.equal(without.rows, 2, 'the worker loaded the engine itself and opened the same database');
    assert.equal(without.steps.wasmCompiled, undefined);
    assert.ok(without.steps.engineLoaded! > 0);
    await page.close();
  });
});
