/**
 * Fuzzing of every decoder (test/helpers/fuzz.ts): journal files, read streams and push bodies, tokens, and
 * the hub's HTTP inputs, with generated and mutated inputs. Each input that breaks a rule is saved under
 * test/fixtures/fuzz/ (test/fuzz.test.ts replays them).
 *
 *   npm run fuzz [-- --cases N] [--seed S] [--http-share 0.02]
 *
 * N is the total; the HTTP target (a hub on loopback, slower) gets --http-share of it, the other four
 * targets share the rest. Exits 1 when anything broke.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { loadHash } from '../src/format/index.js';
import { makeCorpus } from '../test/helpers/fuzz.js';
import { runFuzz } from '../test/helpers/fuzz-run.js';
import { cleanupTempDirs } from '../test/helpers/util.js';

const { values } = parseArgs({
  options: {
    cases: { type: 'string', default: '1000000' },
    seed: { type: 'string' },
    'http-share': { type: 'string', default: '0.02' },
  },
});
const total = Number(values.cases);
const seed = values.seed === undefined ? Date.now() % 2 ** 31 : Number(values.seed);
const share = Number(values['http-share']);
if (!Number.isInteger(total) || total < 5 || !Number.isInteger(seed) || !(share >= 0 && share < 1)) {
  console.error('--cases and --seed must be integers (cases ≥ 5), --http-share in [0, 1)');
  process.exit(2);
}
await loadHash();
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-fuzz-'));
const corpus = await makeCorpus(dir);
const http = Math.round(total * share);
const each = Math.floor((total - http) / 4);
const counts = { journal: each, stream: each, push: each, token: total - http - 3 * each, http };
console.log(`fuzz: ${total} cases, seed ${seed}: ${JSON.stringify(counts)}`);
const started = Date.now();
const r = await runFuzz(corpus, counts, seed, {
  onTarget: (t, n, ms) => console.log(`  ${t}: ${n} cases in ${(ms / 1000).toFixed(1)} s`),
});
const secs = ((Date.now() - started) / 1000).toFixed(0);
const sum = Object.values(r.cases).reduce((a, b) => a + b, 0);
console.log(`
summary (seed ${seed}, ${secs} s)
  cases          ${sum}  (journal ${r.cases.journal}, stream ${r.cases.stream}, push ${r.cases.push}, token ${r.cases.token}, http ${r.cases.http})
  failures       ${r.failures.length}   (must be 0)`);
for (const f of r.failures) console.log(`FAIL ${f.message}\n     saved: ${f.fixture}`);
fs.rmSync(dir, { recursive: true, force: true });
cleanupTempDirs();
process.exit(r.failures.length > 0 ? 1 : 0);
