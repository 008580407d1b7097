#!/usr/bin/env node
// The CLI is written in TypeScript and compiled to dist/ by `npm ci` (the `prepare` script).
import * as v8 from 'node:v8';

// One-shot commands run SQLite's WebAssembly with V8's baseline compiler only: the optimizing tier
// compiles in the background and the process waits for it at exit (about half of a short command's
// time, `node dist/scripts/bench-cli.js`), while a short command never runs long enough to gain from it.
// Commands that keep running (a hub, a sync, a replica, a sidecar) keep the optimizing tier.
const KEEPS_RUNNING = new Set(['serve', 'sync', 'follow', 'push', 'replicate']);
if (!KEEPS_RUNNING.has(process.argv[2] ?? '')) v8.setFlagsFromString('--liftoff-only');

const { main } = await import('../dist/src/cli/main.js');
process.exitCode = await main(process.argv.slice(2));
