#!/usr/bin/env node
// The CLI is written in TypeScript and compiled to dist/ by `npm ci` (the `prepare` script).
import module from 'node:module';

// Node 22.1 and later keep V8's compiled code of the modules (SQLite's among them) between runs, in the
// system's temporary directory: most of a short command's start-up is compiling them.
module.enableCompileCache?.();
const { main } = await import('../dist/src/cli/main.js');

process.exitCode = await main(process.argv.slice(2));
