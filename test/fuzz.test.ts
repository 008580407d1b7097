// Fuzzing, short run (npm run fuzz runs ≥ 1,000,000 cases): every decoder — journal files, read streams,
// push bodies, tokens, the hub's HTTP inputs — with generated and mutated inputs (test/helpers/fuzz.ts): no
// crash, no hang, only typed errors, nothing partial handed out or stored, never a 5xx. Then every input
// that ever broke something (test/fixtures/fuzz/*.json) is replayed.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { loadHash } from '../src/format/index.js';
import {
  type Corpus,
  checkJournal,
  checkStream,
  checkToken,
  FIXTURES,
  loadFixture,
  makeCorpus,
} from './helpers/fuzz.js';
import { checkHttp, type HttpCase, startHttpRig } from './helpers/fuzz-http.js';
import { runFuzz } from './helpers/fuzz-run.js';
import { cleanupTempDirs, tempDir } from './helpers/util.js';

let corpus: Corpus;
before(async () => {
  await loadHash();
  corpus = await makeCorpus(tempDir());
});
after(() => cleanupTempDirs());

test('fuzz (short run): journal, stream, push, token and HTTP decoders refuse with typed errors only', async (t) => {
  const seed = Number(process.env['FUZZ_SEED'] ?? Date.now() % 2 ** 31);
  const counts = { journal: 10_000, stream: 10_000, push: 10_000, token: 5_000, http: 2_000 };
  const r = await runFuzz(corpus, counts, seed, { save: false });
  const total = Object.values(r.cases).reduce((a, b) => a + b, 0);
  t.diagnostic(`seed ${seed}: ${total} cases ${JSON.stringify(r.cases)}`);
  assert.deepEqual(r.failures, [], `seed ${seed} (npm run fuzz -- --seed ${seed} saves the inputs)`);
  assert.deepEqual(r.cases, counts);
});

test('every saved fuzz input that once broke something is refused properly now', async (t) => {
  const files = fs.existsSync(FIXTURES) ? fs.readdirSync(FIXTURES).filter((f) => f.endsWith('.json')) : [];
  let rig: Awaited<ReturnType<typeof startHttpRig>> | undefined;
  try {
    for (const f of files) {
      const { target, input } = loadFixture(path.join(FIXTURES, f));
      const i = input as { bytes?: Uint8Array; cuts?: number[]; token?: string; header?: string };
      if (target === 'journal') checkJournal(undefined, input as Uint8Array);
      else if (target === 'stream' || target === 'push')
        checkStream(undefined, i.bytes!, i.cuts ?? [], target === 'push');
      else if (target === 'token') await checkToken(corpus, i.token ?? 'x', i.header);
      else if (target === 'http') {
        rig ??= await startHttpRig(corpus);
        await checkHttp(corpus, rig, input as HttpCase);
      } else assert.fail(`${f}: unknown target ${target}`);
    }
  } finally {
    await rig?.close();
  }
  t.diagnostic(`${files.length} fixtures replayed`);
});
