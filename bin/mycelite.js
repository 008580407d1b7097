#!/usr/bin/env node
// The CLI is written in TypeScript and compiled to dist/ by `npm ci` (the `prepare` script).
import module from 'node:module';
import * as v8 from 'node:v8';

// Node 22.1 and later keep V8's compiled code of the modules (SQLite's among them) between runs, in the
// system's temporary directory: most of a short command's start-up is compiling them.
module.enableCompileCache?.();
// One-shot commands run SQLite's WebAssembly with V8's baseline compiler only: the optimizing tier
// compiles in the background and the process waits for it at exit (about half of a short command's
// time, `node dist/scripts/bench-cli.js`), while a short command never runs long enough to gain from it.
// Commands that keep running (a hub, a sync, a replica, a sidecar) keep the optimizing tier.
const KEEPS_RUNNING = new Set(['serve', 'sync', 'follow', 'push', 'replicate']);
if (!KEEPS_RUNNING.has(process.argv[2] ?? '')) v8.setFlagsFromString('--liftoff-only');

const { main } = await import('../dist/src/cli/main.js');
process.exitCode = await main(process.argv.slice(2));
