/**
 * Compaction in a child process, for test/history-crash.test.ts to SIGKILL at random moments: runs
 * buildHistory then installHistory once on the journal directory of a database.
 *
 *   node dist/test/helpers/compact-child.js <db> <policy> <now-ms> [upTo-txid]
 *
 * Lines on stdout (one write(2) each, so they survive a SIGKILL once written):
 *   `start`             about to build the new history
 *   `built <txid>`      history.tmp is written and fsynced, ending at txid (`built -` when unchanged)
 *   `done <bytes>`      installed: history renamed, journal rebased; bytes of history + journal
 */
import { writeSync } from 'node:fs';
import { loadHash } from '../../src/format/index.js';
import { buildHistory, installHistory } from '../../src/history/compact.js';
import { parseRetention } from '../../src/history/policy.js';
import { journalPaths } from '../../src/journal/paths.js';
import { NodeFileSystem } from '../../src/node/node-fs.js';

const [dbPath, policy, nowArg, upToArg] = process.argv.slice(2);
if (!dbPath || !policy || !nowArg) {
  process.stderr.write('usage: compact-child.js <db> <policy> <now-ms> [upTo-txid]\n');
  process.exit(2);
}
const say = (line: string): void => {
  writeSync(1, `${line}\n`);
};

await loadHash();
const fs = new NodeFileSystem();
const paths = journalPaths(dbPath);
say('start');
const r = buildHistory(
  fs,
  paths,
  {
    policy: parseRetention(policy),
    now: Number(nowArg),
    upTo: upToArg ? BigInt(upToArg) : undefined,
  },
  () => new Error(`${paths.journal} is missing`),
);
say(`built ${r.end?.txid ?? '-'}`);
if (r.end) say(`done ${installHistory(fs, paths, r.end)}`);
