/**
 * The demo web app on a hub (`mycelite serve --demo`): the built files of dist/web/ at `/`, and
 * `GET /demo/token?db=NAME&role=writer|reader`, which mints a token for a demo database (a name
 * starting with "demo") so the page can sync without a token pasted in. Tokens are handed out only when
 * the hub listens on loopback: anyone who can reach the page gets one.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Hono } from 'hono';
import { checkDbName, HubError } from '../protocol/index.js';
import { mintToken } from './auth.js';

export interface WebOptions {
  /** Directory of the built app (dist/web). */
  dir: string;
  /** Mint demo tokens at /demo/token (only on loopback). */
  demoTokens: boolean;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.wasm': 'application/wasm',
  '.map': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

/** Demo tokens live this long (s). */
const DEMO_TOKEN_TTL = 24 * 3600;

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

export function mountWeb(app: Hono, web: WebOptions, key: Uint8Array): void {
  app.get('/demo/token', async (c) => {
    if (!web.demoTokens) {
      throw new HubError(
        {
          error: 'forbidden',
          message:
            'demo tokens are handed out only by a hub listening on loopback (--host 127.0.0.1); mint one with `mycelite token`',
        },
        403,
      );
    }
    const db = c.req.query('db') ?? 'demo';
    const role = c.req.query('role') ?? 'writer';
    const bad = checkDbName(db);
    if (bad || !db.startsWith('demo')) {
      throw new HubError({
        error: 'bad_request',
        message: bad ?? `demo tokens are only for databases named demo...: not ${JSON.stringify(db)}`,
      });
    }
    if (role !== 'writer' && role !== 'reader') {
      throw new HubError({ error: 'bad_request', message: 'role must be writer or reader' });
    }
    const token = await mintToken(key, { db, role, ttlSeconds: DEMO_TOKEN_TTL });
    return c.json({ db, role, token }, 200, { 'cache-control': 'no-store' });
  });

  app.get('/:file{[A-Za-z0-9_.-]*}', (c) => {
    const name = c.req.param('file') || 'index.html';
    const type = TYPES[path.extname(name)];
    const file = path.join(web.dir, name);
    if (!type || name.startsWith('.') || !fs.existsSync(file)) {
      throw new HubError({ error: 'not_found', message: `no file ${name} in the demo app` }, 404);
    }
    return c.body(fs.readFileSync(file), 200, { 'content-type': type, 'cache-control': 'no-cache' });
  });
}

/** dist/web/ of this installation, or an error that says how to build it. */
export function builtWebDir(): string {
  const dir = fileURLToPath(new URL('../../web', import.meta.url));
  if (!fs.existsSync(path.join(dir, 'index.html'))) {
    throw new Error(
      `the demo app is not built (${dir}/index.html is missing): run \`npm run build:web\` (or node dist/scripts/build-web.js) first`,
    );
  }
  return dir;
}
