/**
 * Builds the browser side into dist/web/ with esbuild: the `mycelite/browser` module
 * (mycelite-browser.js), its database worker (mycelite-worker.js, with sqlite3.wasm beside it: sqlite-wasm
 * fetches it relative to the worker's URL) and the demo app (web/: index.html, app.css, app.js) that
 * `mycelite serve --demo` serves, with its service worker (sw.js: keeps the app's files for offline
 * starts; its cache is named after a hash of those files, so a new build replaces it).
 *
 *   node dist/scripts/build-web.js           # after tsc -p .
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

/** The repository root (this file runs from dist/scripts/). */
const ROOT = path.resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const WEB_OUT = path.join(ROOT, 'dist', 'web');

export async function buildWeb(): Promise<string[]> {
  fs.mkdirSync(WEB_OUT, { recursive: true });
  const started = performance.now();
  await build({
    entryPoints: {
      'mycelite-browser': path.join(ROOT, 'src/browser/index.ts'),
      'mycelite-worker': path.join(ROOT, 'src/browser/worker.ts'),
      app: path.join(ROOT, 'web/app.ts'),
    },
    outdir: WEB_OUT,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    sourcemap: true,
    minify: true,
    // app.js keeps its own copy of the small client; the worker is loaded by URL, not imported.
    splitting: false,
    logLevel: 'warning',
  });
  const wasm = fileURLToPath(import.meta.resolve('@sqlite.org/sqlite-wasm/sqlite3.wasm'));
  fs.copyFileSync(wasm, path.join(WEB_OUT, 'sqlite3.wasm'));
  for (const f of ['index.html', 'app.css'])
    fs.copyFileSync(path.join(ROOT, 'web', f), path.join(WEB_OUT, f));
  await buildServiceWorker();
  const files = fs.readdirSync(WEB_OUT).sort();
  const kb = (f: string): string => `${f} ${Math.round(fs.statSync(path.join(WEB_OUT, f)).size / 1024)} KiB`;
  console.log(
    `built ${WEB_OUT} in ${Math.round(performance.now() - started)} ms: ${files
      .filter((f) => !f.endsWith('.map'))
      .map(kb)
      .join(', ')}`,
  );
  return files;
}

/** The files the demo needs to open offline (the service worker keeps them). */
export const APP_FILES = ['index.html', 'app.css', 'app.js', 'mycelite-worker.js', 'sqlite3.wasm'];

/** sw.js, with the app's file list and a version that changes whenever one of them does. */
async function buildServiceWorker(): Promise<void> {
  const hash = createHash('sha256');
  for (const f of APP_FILES) hash.update(f).update(fs.readFileSync(path.join(WEB_OUT, f)));
  await build({
    entryPoints: [path.join(ROOT, 'web/sw.ts')],
    outfile: path.join(WEB_OUT, 'sw.js'),
    bundle: true,
    format: 'iife',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    define: { FILES: JSON.stringify(APP_FILES), VERSION: JSON.stringify(hash.digest('hex').slice(0, 16)) },
    logLevel: 'warning',
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  buildWeb().catch((e: unknown) => {
    console.error(`build-web: ${(e as Error).message}`);
    process.exit(1);
  });
}
