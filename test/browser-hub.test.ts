/**
 * The hub's demo routes without a browser: the built app's files with their content types, demo tokens
 * only for demo* databases and only when allowed (loopback), nothing outside the app's directory, and no
 * web routes at all without --demo.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { verifyToken } from '../src/hub/auth.js';
import { isLoopback } from '../src/hub/web.js';
import { WEB_DIR } from './helpers/browser.js';
import { startTestHub, type TestHub } from './helpers/hub.js';

const built = fs.existsSync(path.join(WEB_DIR, 'index.html'));

describe('hub: demo web routes', { skip: built ? undefined : `${WEB_DIR} not built` }, () => {
  let demo: TestHub;
  let remote: TestHub;
  let plain: TestHub;

  before(async () => {
    demo = await startTestHub(undefined, { web: { dir: WEB_DIR, demoTokens: true } });
    remote = await startTestHub(undefined, { web: { dir: WEB_DIR, demoTokens: false } });
    plain = await startTestHub();
  });

  after(async () => {
    await Promise.all([demo?.close(), remote?.close(), plain?.close()]);
  });

  it('serves the app with content types', async () => {
    for (const [file, type] of [
      ['', 'text/html'],
      ['app.js', 'text/javascript'],
      ['mycelite-worker.js', 'text/javascript'],
      ['app.css', 'text/css'],
      ['sqlite3.wasm', 'application/wasm'],
      ['sw.js', 'text/javascript'],
    ] as const) {
      const res = await fetch(`${demo.url}/${file}`);
      assert.equal(res.status, 200, file);
      assert.ok(
        res.headers.get('content-type')?.startsWith(type),
        `${file}: ${res.headers.get('content-type')}`,
      );
      await res.arrayBuffer();
    }
    const html = await (await fetch(`${demo.url}/`)).text();
    assert.match(html, /Household budget/);
  });

  it('serves nothing outside the app directory', async () => {
    for (const p of ['/..%2fpackage.json', '/.hidden.js', '/nope.js', '/x/app.js', '/hub.key']) {
      const res = await fetch(`${demo.url}${p}`);
      assert.equal(res.status, 404, p);
      await res.arrayBuffer();
    }
  });

  it('mints demo tokens on loopback only, for demo* databases', async () => {
    const res = await fetch(`${demo.url}/demo/token?db=demo-x&role=writer`);
    assert.equal(res.status, 200);
    const { token } = (await res.json()) as { token: string };
    const claims = await verifyToken(demo.key, token);
    assert.equal(claims.db, 'demo-x');
    assert.equal(claims.role, 'writer');
    const other = await fetch(`${demo.url}/demo/token?db=payroll&role=writer`);
    assert.equal(other.status, 400);
    await other.arrayBuffer();
    const badRole = await fetch(`${demo.url}/demo/token?db=demo&role=admin`);
    assert.equal(badRole.status, 400);
    await badRole.arrayBuffer();
    const refused = await fetch(`${remote.url}/demo/token?db=demo&role=writer`);
    assert.equal(refused.status, 403);
    assert.match(((await refused.json()) as { message: string }).message, /loopback/);
    assert.equal(isLoopback('127.0.0.1'), true);
    assert.equal(isLoopback('0.0.0.0'), false);
    assert.equal(isLoopback('::1'), true);
  });

  it('a hub without --demo has no web routes', async () => {
    for (const p of ['/', '/app.js', '/demo/token?db=demo']) {
      const res = await fetch(`${plain.url}${p}`);
      assert.equal(res.status, 404, p);
      await res.arrayBuffer();
    }
  });
});
