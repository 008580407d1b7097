/** Runs the fuzz targets of test/helpers/fuzz.ts and fuzz-http.ts with fast-check. */
import fc from 'fast-check';
import {
  type Corpus,
  checkJournal,
  checkStream,
  checkToken,
  describe,
  FuzzFailure,
  headerArb,
  mutate,
  mutationsArb,
  saveFixture,
  tokenArb,
} from './fuzz.js';
import { checkHttp, httpCaseArb, startHttpRig } from './fuzz-http.js';
import { concatBytes } from './hub.js';

/** What the runner needs of fast-check's RunDetails. */
interface Details {
  failed: boolean;
  numRuns: number;
  errorInstance: unknown;
  counterexample: unknown;
}

export interface FuzzCounts {
  journal: number;
  stream: number;
  push: number;
  token: number;
  http: number;
}

export interface FuzzResult {
  cases: FuzzCounts;
  ms: FuzzCounts;
  failures: { target: string; message: string; fixture: string }[];
}

/** Runs `counts[target]` cases of each target with `seed`; each failure (shrunk) is saved as a fixture. */
export async function runFuzz(
  c: Corpus,
  counts: FuzzCounts,
  seed: number,
  options: { save?: boolean; onTarget?: (target: string, cases: number, ms: number) => void } = {},
): Promise<FuzzResult> {
  const result: FuzzResult = {
    cases: { journal: 0, stream: 0, push: 0, token: 0, http: 0 },
    ms: { journal: 0, stream: 0, push: 0, token: 0, http: 0 },
    failures: [],
  };
  const cutsArb = fc.array(fc.nat(), { maxLength: 6 });
  const pushSource = concatBytes(c.history.snapshots.map((s) => s.bytes));
  const record = (target: keyof FuzzCounts, details: Details, started: number): void => {
    result.cases[target] += details.numRuns;
    result.ms[target] += Date.now() - started;
    options.onTarget?.(target, details.numRuns, Date.now() - started);
    if (!details.failed) return;
    const e = details.errorInstance;
    const failure =
      e instanceof FuzzFailure
        ? e
        : new FuzzFailure(target, `property failed: ${describe(e)}`, details.counterexample);
    const fixture = options.save === false ? '' : saveFixture(failure);
    result.failures.push({ target, message: failure.message, fixture });
  };
  const params = (n: number) => ({ numRuns: n, seed, endOnFailure: false });
  // Large runs go in slices, so a failure in one slice does not stop the rest.
  const sliced = async (
    target: keyof FuzzCounts,
    run: (n: number, slice: number) => Promise<Details> | Details,
  ) => {
    const slice = 50_000;
    for (let done = 0, k = 0; done < counts[target]; done += slice, k++) {
      const started = Date.now();
      record(target, await run(Math.min(slice, counts[target] - done), k), started);
    }
  };
  await sliced('journal', (n, k) =>
    fc.check(
      fc.property(mutationsArb, (ms) => checkJournal(c, mutate(c.journal, ms))),
      { ...params(n), seed: seed + k },
    ),
  );
  await sliced('stream', (n, k) =>
    fc.check(
      fc.property(mutationsArb, cutsArb, fc.boolean(), (ms, cuts, clean) =>
        checkStream(c, clean ? c.stream : mutate(c.stream, ms), cuts, false),
      ),
      { ...params(n), seed: seed + k },
    ),
  );
  await sliced('push', (n, k) =>
    fc.check(
      fc.property(mutationsArb, cutsArb, (ms, cuts) => checkStream(c, mutate(pushSource, ms), cuts, true)),
      { ...params(n), seed: seed + k },
    ),
  );
  await sliced('token', (n, k) =>
    fc.check(
      fc.asyncProperty(tokenArb(c), headerArb(c.token), async (token, header) =>
        checkToken(c, token, header),
      ),
      { ...params(n), seed: seed + k },
    ),
  );
  if (counts.http > 0) {
    const rig = await startHttpRig(c);
    try {
      await sliced('http', (n, k) =>
        fc.check(
          fc.asyncProperty(httpCaseArb(c, rig), async (hc) => {
            await checkHttp(c, rig, hc);
          }),
          { ...params(n), seed: seed + k },
        ),
      );
    } finally {
      await rig.close();
    }
  }
  return result;
}
