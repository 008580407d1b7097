/**
 * The demo's service worker: keeps the app's files (index.html, app.js, app.css, the database worker
 * and sqlite3.wasm) so the page opens, and its local database works, with the network off. Each file is
 * fetched from the network first (a new build shows at once) and from the cache when that fails; nothing
 * else (the hub's API, demo tokens) is touched. scripts/build-web.ts fills in the file list and the
 * build's version; a new version drops the old cache.
 */
declare const FILES: string[];
declare const VERSION: string;

interface FetchEvent extends Event {
  request: Request;
  respondWith(r: Promise<Response>): void;
}
interface ExtendableEvent extends Event {
  waitUntil(p: Promise<unknown>): void;
}
interface WorkerScope {
  registration: { scope: string };
  skipWaiting(): Promise<void>;
  clients: { claim(): Promise<void> };
  addEventListener(type: 'install' | 'activate', fn: (e: ExtendableEvent) => void): void;
  addEventListener(type: 'fetch', fn: (e: FetchEvent) => void): void;
}

const sw = self as unknown as WorkerScope;
const CACHE = `mycelite-demo-${VERSION}`;
/** How long the network may take before the cached copy is used (ms). */
const NETWORK_MS = 3000;

/** The app file a request is for ('' for the page itself), or undefined when it is not one. */
function appFile(request: Request): string | undefined {
  if (request.method !== 'GET') return undefined;
  const url = new URL(request.url);
  const scope = new URL(sw.registration.scope);
  if (url.origin !== scope.origin || !url.pathname.startsWith(scope.pathname)) return undefined;
  const name = url.pathname.slice(scope.pathname.length);
  const file = name === '' ? 'index.html' : name;
  return FILES.includes(file) ? file : undefined;
}

sw.addEventListener('install', (e) => {
  e.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      await cache.addAll(FILES.map((f) => new URL(f, sw.registration.scope).href));
      await sw.skipWaiting();
    })(),
  );
});

sw.addEventListener('activate', (e) => {
  e.waitUntil(
    (async () => {
      for (const k of await caches.keys())
        if (k.startsWith('mycelite-demo-') && k !== CACHE) await caches.delete(k);
      await sw.clients.claim();
    })(),
  );
});

sw.addEventListener('fetch', (e) => {
  const file = appFile(e.request);
  if (file === undefined) return;
  const key = new URL(file, sw.registration.scope).href;
  e.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      try {
        // By URL: a navigation's own Request cannot be given options.
        const res = await fetch(e.request.url, {
          signal: AbortSignal.timeout(NETWORK_MS),
          cache: 'no-store',
        });
        if (res.ok) {
          await cache.put(key, res.clone());
          return res;
        }
      } catch {
        // offline, or the hub is down: the cached copy
      }
      const cached = await cache.match(key);
      return cached ?? new Response(`offline, and ${file} is not cached yet`, { status: 503 });
    })(),
  );
});
