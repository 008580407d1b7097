/**
 * The demo's way to the hub that serves it: a demo token (`GET /demo/token`, handed out by a hub
 * started with --demo on loopback), asked for until one comes, and the service worker (sw.js) that keeps
 * the app's files so the page opens with the network off.
 */
import type { HubTarget } from '../src/browser/index.js';

/** The hub could not be reached at all (offline, or it is down). */
export class HubUnreachable extends Error {}

/** How long to wait for a token before opening local only (ms). */
const TOKEN_WAIT_MS = 2000;

/** A hub target for database `db` with a demo token for `role`; throws when the hub cannot be reached. */
export async function hubTarget(db: string, role: 'writer' | 'reader'): Promise<HubTarget> {
  let res: Response;
  try {
    res = await fetch(`/demo/token?db=${encodeURIComponent(db)}&role=${role}`, {
      signal: AbortSignal.timeout(TOKEN_WAIT_MS),
      cache: 'no-store',
    });
  } catch (e) {
    throw new HubUnreachable(`the hub does not answer: ${(e as Error).message}`, { cause: e });
  }
  let body: { token?: string; message?: string } = {};
  try {
    body = (await res.json()) as typeof body;
  } catch {
    // not JSON: an offline answer of the service worker, a proxy's error page
  }
  if (!res.ok || !body.token) {
    throw new Error(`the hub gave no token: ${body.message ?? `HTTP ${res.status}`}`);
  }
  return { url: location.origin, db, token: body.token };
}

/**
 * Asks for a token until one comes (backing off to 5 s; at once when the browser says it is back
 * online), then calls `use` with it. `failed` hears each failure.
 */
export function keepAsking(
  db: string,
  role: 'writer' | 'reader',
  use: (hub: HubTarget) => Promise<void>,
  failed: (e: Error) => void,
): void {
  let wait = 1000;
  let wake: (() => void) | undefined;
  addEventListener('online', () => wake?.());
  void (async () => {
    for (;;) {
      try {
        await use(await hubTarget(db, role));
        return;
      } catch (e) {
        failed(e as Error);
      }
      await new Promise<void>((r) => {
        const t = setTimeout(r, wait);
        wake = () => {
          clearTimeout(t);
          r();
        };
      });
      wake = undefined;
      wait = Math.min(wait * 2, 5000);
    }
  })();
}

/**
 * Registers sw.js (it keeps the app's files for offline starts); resolves true once it is active, false
 * when this browser has no service workers (or the page is not a secure context).
 */
export async function offlineReady(): Promise<boolean> {
  const sw = navigator.serviceWorker;
  if (!sw || !isSecureContext) return false;
  await sw.register('sw.js');
  await sw.ready;
  return true;
}
