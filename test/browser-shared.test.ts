/**
 * Shared databases in real Chromium (issue 14): two browser profiles — two devices — write the demo's
 * one database. Both add entries offline and, back online, both show all of them, byte for byte; the same
 * entry edited on both ends equal on both, with the conflict shown on the page of the device whose edit
 * was synced later; and the app opens and works with the network off from the start (after one visit
 * that installed its service worker), syncing once the hub is back.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { BrowserContext, Page } from 'playwright-core';
import {
  addEntry,
  browserMissing,
  labels,
  openDemo,
  pageSha256,
  pageStatus,
  persistentContext,
  screenshot,
  startDemoHub,
  WEB_DIR,
  waitForLabel,
  waitReady,
} from './helpers/browser.js';
import { startTestHub, type TestHub } from './helpers/hub.js';

const missing = browserMissing();

/** Waits until every page holds the hub's head with nothing pending, all at the same txid. */
async function converged(pages: Page[], timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const st = await Promise.all(pages.map(pageStatus));
    const txid = st[0]!.txid;
    if (st.every((s) => s.pending === 0 && s.hubTxid === s.txid && s.txid === txid)) return txid;
    if (Date.now() > deadline) throw new Error(`the devices did not converge: ${JSON.stringify(st)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The amount shown for the entry labelled `label`. */
function amountOf(page: Page, label: string): Promise<string | undefined> {
  return page.evaluate((l) => {
    for (const tr of document.querySelectorAll('#entries tr')) {
      if (tr.querySelector('.label')?.textContent === l) return tr.querySelector('td.num')?.textContent ?? '';
    }
    return undefined;
  }, label);
}

/** Edits the amount of the entry labelled `label` through the page's form (the ✎ button, then Save). */
async function editAmount(page: Page, label: string, amount: string): Promise<void> {
  const before = (await pageStatus(page)).txid;
  await page.click(`#entries tr:has(.label:text-is("${label}")) button.edit`);
  assert.equal(await page.textContent('#add-button'), 'Save');
  await page.fill('#amount', amount);
  await page.click('#add-button');
  await page.waitForFunction(() => document.getElementById('add-button')?.textContent === 'Add');
  assert.ok(BigInt((await pageStatus(page)).txid) > BigInt(before), 'the edit committed');
}

const bannerShown = (page: Page): Promise<boolean> => page.isVisible('#sync-error');

describe('browser: a shared database, every device writes', { skip: missing, timeout: 180_000 }, () => {
  let hub: TestHub;
  const dirs: string[] = [];
  const contexts: BrowserContext[] = [];
  let a: Page;
  let b: Page;

  async function device(): Promise<BrowserContext> {
    const p = await persistentContext();
    dirs.push(p.dir);
    contexts.push(p.context);
    return p.context;
  }

  before(async () => {
    hub = await startDemoHub();
  });

  after(async () => {
    for (const c of contexts) await c.close().catch(() => {});
    await hub?.close();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  it('both devices add entries offline; back online, both show all entries, byte for byte', async () => {
    const deviceA = await device();
    const deviceB = await device();
    a = await openDemo(deviceA, hub, 'demo-shared');
    b = await openDemo(deviceB, hub, 'demo-shared');
    for (const p of [a, b]) {
      const s = await pageStatus(p);
      assert.equal(s.role, 'writer');
      assert.equal(s.shared, true);
      assert.equal(await p.isDisabled('#add-button'), false, 'every device may add');
    }
    await converged([a, b]);

    await deviceA.setOffline(true);
    await deviceB.setOffline(true);
    for (const l of ['a: rent', 'a: bread']) await addEntry(a, l, -1500);
    for (const l of ['b: salary', 'b: bus']) await addEntry(b, l, l.includes('salary') ? 200000 : -250);
    await waitForLabel(a, 'a: bread');
    await waitForLabel(b, 'b: bus');
    assert.equal((await pageStatus(a)).pending, 2, "A's two entries wait for the hub");
    assert.equal((await pageStatus(b)).pending, 2);
    assert.ok(!(await labels(a)).includes('b: salary'), 'nothing crossed while offline');
    // The page says so (not only a tooltip).
    await a.waitForSelector('#sync-error', { state: 'visible', timeout: 20_000 });
    assert.match((await a.textContent('#sync-error')) ?? '', /Offline: changes are kept on this device/);
    await screenshot(a, 'browser-shared-offline');

    await deviceA.setOffline(false);
    await deviceB.setOffline(false);
    for (const p of [a, b])
      for (const l of ['a: rent', 'a: bread', 'b: salary', 'b: bus']) await waitForLabel(p, l, 30_000);
    await converged([a, b]);
    assert.deepEqual((await labels(a)).sort(), ['a: bread', 'a: rent', 'b: bus', 'b: salary']);
    assert.deepEqual(await labels(b), await labels(a), 'the same entries in the same order');
    const [ha, hb] = [await pageSha256(a), await pageSha256(b)];
    assert.equal(ha.txid, hb.txid);
    assert.equal(ha.sha256, hb.sha256, 'the two OPFS files are byte-identical');
    await a.waitForSelector('#sync-error', { state: 'hidden', timeout: 20_000 });
    assert.equal(await bannerShown(b), false);
    await screenshot(b, 'browser-shared-synced');
  });

  it('the same entry edited on both devices ends equal on both, with the conflict shown', async () => {
    const [deviceA, deviceB] = contexts as [BrowserContext, BrowserContext];
    await addEntry(a, 'rent', -100000);
    await waitForLabel(b, 'rent');
    await converged([a, b]);

    // A second tab on B: it goes through B's worker and must hear the conflict too.
    const b2 = await openDemo(deviceB, hub, 'demo-shared');
    await deviceA.setOffline(true);
    await deviceB.setOffline(true);
    await editAmount(a, 'rent', '1100');
    await editAmount(b, 'rent', '1200');
    assert.match((await amountOf(a, 'rent')) ?? '', /1,?100\.00/);
    assert.match((await amountOf(b, 'rent')) ?? '', /1,?200\.00/);

    // A syncs first; B's edit reaches the hub later and so wins (the default rule), and B is told.
    await deviceA.setOffline(false);
    const deadline = Date.now() + 20_000;
    while ((await pageStatus(a)).pending > 0 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    assert.equal((await pageStatus(a)).pending, 0, "A's edit is on the hub");
    await deviceB.setOffline(false);
    await b.waitForSelector('#log li.conflict', { timeout: 30_000 });
    await converged([a, b]);
    await a.waitForFunction(
      () =>
        [...document.querySelectorAll('#entries tr')].some(
          (tr) =>
            tr.querySelector('.label')?.textContent === 'rent' && /1,?200\.00/.test(tr.textContent ?? ''),
        ),
      null,
      { timeout: 20_000 },
    );
    assert.equal(await amountOf(a, 'rent'), await amountOf(b, 'rent'));
    assert.match((await amountOf(b, 'rent')) ?? '', /1,?200\.00/);
    const [ha, hb] = [await pageSha256(a), await pageSha256(b)];
    assert.equal(ha.sha256, hb.sha256, 'byte-identical after the conflict');
    const text = (await b.textContent('#log li.conflict')) ?? '';
    assert.match(text, /Edit conflict on “rent”: another device changed it too/);
    assert.match(text, /1,?100\.00/, "it names the other device's value");
    assert.match(text, /yours .* is kept/);
    assert.equal(
      await a.$$eval('#log li', (l) => l.length),
      0,
      "A's edit went through as made: nothing to report",
    );
    assert.equal(await b.isVisible('#log-empty'), false);
    await b2.waitForSelector('#log li.conflict');
    assert.equal(await b2.textContent('#log li.conflict'), text, 'every tab shows it');
    await b2.close();
    await screenshot(b, 'browser-shared-conflict');
  });

  it('a change rejected as a whole (a UNIQUE clash) is undone and shown, in every tab', async () => {
    const [deviceA, deviceB] = contexts as [BrowserContext, BrowserContext];
    const run = (p: Page, sql: string, params: unknown[] = []): Promise<void> =>
      p.evaluate(
        async ([q, v]) => {
          const m = (
            window as unknown as { mycelite: { db: { run(s: string, p: unknown[]): Promise<unknown> } } }
          ).mycelite;
          await m.db.run(q as string, v as unknown[]);
        },
        [sql, params] as const,
      );
    await run(a, 'create table if not exists member(id text primary key, email text unique)');
    await converged([a, b]);
    const b2 = await openDemo(deviceB, hub, 'demo-shared');
    await deviceA.setOffline(true);
    await deviceB.setOffline(true);
    await run(a, 'insert into member values (?, ?)', ['m-a', 'sam@example.com']);
    await run(b, 'insert into member values (?, ?)', ['m-b', 'sam@example.com']);
    await deviceA.setOffline(false);
    const deadline = Date.now() + 20_000;
    while ((await pageStatus(a)).pending > 0 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    await deviceB.setOffline(false);
    for (const p of [b, b2]) await p.waitForSelector('#log li.rejected', { timeout: 30_000 });
    await converged([a, b]);
    const members = (p: Page): Promise<unknown> =>
      p.evaluate(() =>
        (window as unknown as { mycelite: { db: { query(s: string): Promise<unknown> } } }).mycelite.db.query(
          'select id, email from member order by id',
        ),
      );
    assert.deepEqual(await members(b), [{ id: 'm-a', email: 'sam@example.com' }], "B's row is gone");
    assert.deepEqual(await members(a), await members(b));
    const text = (await b.textContent('#log li.rejected')) ?? '';
    assert.match(text, /rejected as a whole/);
    assert.match(text, /UNIQUE|constraint/i);
    assert.equal(await b2.textContent('#log li.rejected'), text);
    assert.equal((await pageSha256(a)).sha256, (await pageSha256(b)).sha256);
    await b2.close();
  });

  it('the app opens and works with the network off from the start, and syncs once the hub is back', async () => {
    const DB = 'demo-offline';
    const context = await device();
    const first = await openDemo(context, hub, DB);
    await converged([first]); // its table is on the hub
    assert.equal(
      await first.evaluate(() =>
        (window as unknown as { mycelite: { offlineReady(): Promise<boolean> } }).mycelite.offlineReady(),
      ),
      true,
    );
    await first.close();

    // No network, and no hub at all: only the service worker's copy can serve the page.
    await context.setOffline(true);
    const { port, dir } = hub;
    await hub.close();
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${port}/?db=${DB}`);
    await waitReady(page);
    const s = await pageStatus(page);
    assert.equal(s.state, 'local', 'opened without a hub');
    assert.match((await page.textContent('#sync-error')) ?? '', /Offline/);
    await page.fill('#label', 'written offline');
    await page.fill('#amount', '12.5');
    await page.press('#amount', 'Enter');
    await waitForLabel(page, 'written offline');
    assert.equal((await pageStatus(page)).pending, 1);
    await screenshot(page, 'browser-shared-offline-start');

    hub = await startTestHub(dir, { port, web: { dir: WEB_DIR, demoTokens: true } });
    await context.setOffline(false);
    await page.waitForSelector('#sync-error', { state: 'hidden', timeout: 30_000 });
    await converged([page]);
    // Another device sees it: it reached the hub.
    const other = await openDemo(contexts[0]!, hub, DB);
    await waitForLabel(other, 'written offline', 30_000);
    await converged([page, other]);
    assert.equal((await pageSha256(other)).sha256, (await pageSha256(page)).sha256);
  });
});
