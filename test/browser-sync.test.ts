/**
 * Real Chromium (headless, playwright-core) against a hub in this process serving the demo app:
 * a browser writer and a browser replica in two separate contexts (two "devices"), live sync between
 * them, a second writing device (the demo's database is shared), offline and back, a Node replica byte-identical to the browser writer's OPFS file, and the
 * worker's commit rate. Prints the measured browser-to-browser lag and commit rate.
 */
import * as assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { BrowserContext, Page } from 'playwright-core';
import { openReplica } from '../src/node/index.js';
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
  waitForLabel,
  waitPushed,
} from './helpers/browser.js';
import type { TestHub } from './helpers/hub.js';

const missing = browserMissing();
const DB = 'demo-sync';

describe('browser: writer and replica on one hub', { skip: missing, timeout: 120_000 }, () => {
  let hub: TestHub;
  const dirs: string[] = [];
  let deviceA: BrowserContext;
  let deviceB: BrowserContext;
  let writer: Page;
  let reader: Page;

  before(async () => {
    hub = await startDemoHub();
    // Two browsers with their own profiles: two devices. (Persistent profiles keep OPFS on disk; an
    // incognito context keeps it in memory behind IPC, ~40x slower per file call.)
    const a = await persistentContext();
    const b = await persistentContext();
    deviceA = a.context;
    deviceB = b.context;
    dirs.push(a.dir, b.dir);
    writer = await openDemo(deviceA, hub, DB, 'writer');
    reader = await openDemo(deviceB, hub, DB, 'replica');
  });

  after(async () => {
    await deviceA?.close();
    await deviceB?.close();
    await hub?.close();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  it('a commit in one browser shows in the other within a second', async () => {
    assert.equal((await pageStatus(writer)).role, 'writer');
    assert.equal((await pageStatus(reader)).role, 'replica');
    const lags: number[] = [];
    for (let i = 0; i < 15; i++) {
      const label = `live ${i}`;
      const t0 = performance.now();
      await addEntry(writer, label, -(100 + i));
      await waitForLabel(reader, label, 1000 + 4000); // a second, plus slack for a loaded CI machine
      lags.push(performance.now() - t0);
    }
    lags.sort((a, b) => a - b);
    const p = (q: number): string => lags[Math.min(lags.length - 1, Math.floor(q * lags.length))]!.toFixed(1);
    console.log(`# browser-to-browser lag (commit in A → row in B's DOM): p50 ${p(0.5)} ms, max ${p(1)} ms`);
    assert.deepEqual(await labels(reader), await labels(writer));
    await screenshot(writer, 'browser-writer');
    await screenshot(reader, 'browser-replica');
  });

  it('a second device that asks to write writes too (the database is shared)', async () => {
    const page = await openDemo(deviceB, hub, DB, 'writer');
    const s = await pageStatus(page);
    assert.equal(s.role, 'writer');
    assert.equal(s.shared, true);
    await waitForLabel(page, 'live 14');
    await addEntry(page, 'from the second device', -5);
    await waitForLabel(writer, 'from the second device');
    await waitForLabel(reader, 'from the second device');
    await page.close();
  });

  it('offline: the writer commits locally, the replica catches up once it is back', async () => {
    await deviceA.setOffline(true);
    for (let i = 0; i < 3; i++) await addEntry(writer, `offline ${i}`, -(500 + i));
    await waitForLabel(writer, 'offline 2'); // local commits show while offline
    // The writer notices it cannot reach the hub (its push fails).
    await writer.waitForFunction(() => document.getElementById('sync')?.dataset.state === 'offline', null, {
      timeout: 15_000,
    });
    await screenshot(writer, 'browser-writer-offline');
    assert.ok(!(await labels(reader)).includes('offline 0'), 'nothing reached the other device');
    // The reader goes offline too, then both come back.
    await deviceB.setOffline(true);
    await deviceA.setOffline(false);
    await deviceB.setOffline(false);
    await waitForLabel(reader, 'offline 2', 30_000);
    assert.deepEqual(await labels(reader), await labels(writer));
    const s = await waitPushed(writer);
    assert.equal(s.hubTxid, s.txid);
  });

  it("a Node replica of the same database equals the browser writer's OPFS file byte for byte", async () => {
    await addEntry(writer, 'for node', 4200);
    await writer.waitForFunction(() => document.getElementById('sync')?.dataset.state === 'synced', null, {
      timeout: 15_000,
    });
    const w = await pageSha256(writer);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-browser-node-'));
    const file = path.join(dir, 'replica.db');
    const replica = await openReplica(file, {
      hub: { url: hub.url, db: DB, token: await hub.token(DB, 'reader') },
    });
    try {
      await replica.waitFor(BigInt(w.txid), 15_000);
      const sha = createHash('sha256').update(fs.readFileSync(file)).digest('hex');
      assert.equal(sha, w.sha256, `Node replica at txid ${w.txid} vs browser writer`);
      assert.equal(fs.statSync(file).size, w.size);
      const rows = replica.prepare('select count(*) from entries').pluck().get();
      assert.equal(rows, (await labels(writer)).length);
      // The browser replica holds the same bytes too.
      await waitForLabel(reader, 'for node');
      const r = await pageSha256(reader);
      assert.equal(r.txid, w.txid);
      assert.equal(r.sha256, w.sha256);
    } finally {
      await replica.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("measures the worker's commit rate; the hub and the replica get every commit", async () => {
    const n = 400;
    const r = await writer.evaluate(async (count) => {
      const m = (
        window as unknown as { mycelite: { bench(n: number): Promise<{ perSecond: number; ms: number }> } }
      ).mycelite;
      return m.bench(count);
    }, n);
    console.log(
      `# browser commit rate (worker, OPFS, one-row transactions): ${r.perSecond.toFixed(0)} commits/s (${n} in ${r.ms.toFixed(0)} ms)`,
    );
    assert.ok(r.perSecond > 0);
    const w = await pageStatus(writer);
    await reader.waitForFunction(
      (txid) => document.getElementById('sync-txid')?.textContent === txid,
      w.txid,
      { timeout: 30_000 },
    );
    const [a, b] = [await pageSha256(writer), await pageSha256(reader)];
    assert.equal(b.txid, a.txid);
    assert.equal(b.sha256, a.sha256);
  });
});
