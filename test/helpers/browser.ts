/**
 * Real-browser test helpers: Debian's chromium (/usr/bin/chromium, or $CHROMIUM) driven by
 * playwright-core, headless, and a hub in this process serving the built demo app (dist/web).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Browser, type BrowserContext, chromium, type LaunchOptions, type Page } from 'playwright-core';
import { startTestHub, type TestHub } from './hub.js';

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
/** dist/web of this checkout (tests run from dist/test/helpers/). */
export const WEB_DIR = fileURLToPath(new URL('../../web', import.meta.url));
/** Screenshots and other artifacts (gitignored). */
export const ARTIFACTS = fileURLToPath(new URL('../../../test-artifacts', import.meta.url));

const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export const launchOptions: LaunchOptions = { executablePath: CHROMIUM, args: ARGS };

/** Why the browser tests cannot run here, or undefined when they can. */
export function browserMissing(): string | undefined {
  if (!fs.existsSync(CHROMIUM))
    return `no chromium at ${CHROMIUM} (install Debian's chromium, or set $CHROMIUM)`;
  if (!fs.existsSync(path.join(WEB_DIR, 'index.html')))
    return `the web app is not built (${WEB_DIR}): run node dist/scripts/build-web.js`;
  return undefined;
}

export function launch(): Promise<Browser> {
  return chromium.launch(launchOptions);
}

/** A persistent context (OPFS survives reloads and reopening) in a fresh temp profile directory. */
export async function persistentContext(): Promise<{ context: BrowserContext; dir: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-chromium-'));
  const context = await chromium.launchPersistentContext(dir, {
    ...launchOptions,
    viewport: { width: 1100, height: 760 },
  });
  return { context, dir };
}

/** A hub on loopback serving the demo app and its tokens. */
export function startDemoHub(): Promise<TestHub> {
  return startTestHub(undefined, { web: { dir: WEB_DIR, demoTokens: true } });
}

/** Opens the demo for database `db` in a new page of `context`; resolves once it is ready. */
export async function openDemo(
  context: BrowserContext,
  hub: TestHub,
  db: string,
  role = 'writer',
): Promise<Page> {
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  await page.goto(`${hub.url}/?db=${db}&role=${role}`);
  await waitReady(page, errors);
  return page;
}

export async function waitReady(page: Page, errors: string[] = []): Promise<void> {
  await page.waitForFunction(() => document.body.dataset.ready !== undefined, null, { timeout: 30_000 });
  const state = await page.evaluate(() => document.body.dataset.ready);
  if (state !== 'true') {
    const notice = await page.textContent('#notice');
    throw new Error(`the demo did not start: ${notice} ${errors.join(' | ')}`);
  }
}

/** Labels of the entries shown, top to bottom. */
export function labels(page: Page): Promise<string[]> {
  return page.$$eval('#entries tr .label', (tds) => tds.map((td) => td.textContent ?? ''));
}

/** Waits until an entry with `label` is shown (polling the DOM). */
export async function waitForLabel(page: Page, label: string, timeout = 15_000): Promise<void> {
  await page.waitForFunction(
    (l) => [...document.querySelectorAll('#entries tr .label')].some((td) => td.textContent === l),
    label,
    { timeout, polling: 5 },
  );
}

/** Adds an entry through the page's `window.mycelite.add`; resolves with its txid (as a string). */
export function addEntry(page: Page, label: string, cents: number): Promise<string> {
  return page.evaluate(
    async ([l, c]) => {
      const m = (window as unknown as { mycelite: { add(l: string, c: number): Promise<bigint> } }).mycelite;
      return String(await m.add(l as string, c as number));
    },
    [label, cents] as const,
  );
}

export interface PageStatus {
  state: string;
  online: boolean;
  txid: string;
  hubTxid: string | undefined;
  role: string;
  shared: boolean;
  pending: number;
}

export function pageStatus(page: Page): Promise<PageStatus> {
  return page.evaluate(async () => {
    const m = (window as unknown as { mycelite: { status(): Promise<Record<string, unknown>> } }).mycelite;
    const s = await m.status();
    return {
      state: String(s.state),
      online: Boolean(s.online),
      txid: String(s.txid),
      hubTxid: s.hubTxid === undefined ? undefined : String(s.hubTxid),
      role: String(s.role),
      shared: Boolean(s.shared),
      pending: Number(s.pending),
    };
  });
}

export function pageSha256(page: Page): Promise<{ sha256: string; txid: string; size: number }> {
  return page.evaluate(async () => {
    const m = (
      window as unknown as { mycelite: { sha256(): Promise<{ sha256: string; txid: bigint; size: number }> } }
    ).mycelite;
    const h = await m.sha256();
    return { sha256: h.sha256, txid: String(h.txid), size: h.size };
  });
}

/** Saves a screenshot under test-artifacts/ and prints its path. */
export async function screenshot(page: Page, name: string): Promise<string> {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`# screenshot: ${file}`);
  return file;
}

/**
 * Waits until the hub holds every commit of the page's writer (txid past `after`, when given). Waiting for
 * the indicator to say 'synced' is not enough: it may still say so from before the last commit.
 */
export async function waitPushed(page: Page, after?: string, timeoutMs = 15_000): Promise<PageStatus> {
  let st = await pageStatus(page);
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; st = await pageStatus(page)) {
    if ((after === undefined || BigInt(st.txid) > BigInt(after)) && st.hubTxid === st.txid) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return st;
}
