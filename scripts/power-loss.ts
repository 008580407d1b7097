/**
 * Power loss, every sync point (test/helpers/power-loss.ts): small workloads a, b and c on a writer under
 * both durabilities, and a replica's apply, with the power cut at each sync point in turn; each crash is
 * recovered strictly (nothing unsynced survives), with every directory change but no unsynced data, and
 * torn (seeded random pages, sizes and directory changes survive). With --fsync-failure, each sync point fails (EIO) instead; the program stops at the error, closes,
 * and then the power goes (fsyncgate: what the failed fsync covered never becomes durable). Prints the
 * counts; exits 1 on any lost commit or divergence.
 *
 *   npm run power-loss [-- --durability journal,sqlite] [--workload a,b,c] [--torn N] [--seed S]
 *                      [--no-replica] [--replica-only] [--journal DELETE/FULL,...] [--sqlite DELETE/EXTRA,...]
 *                      [--fsync-failure]
 *
 * `--journal` and `--sqlite` list the journal_mode/synchronous pairs run with each durability (default
 * DELETE/FULL and DELETE/EXTRA; with durability 'sqlite', DELETE under FULL may roll back the
 * last commit after a power loss, as SQLite documents: test/power-loss.test.ts shows it).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { FaultyFileSystem } from '../src/files/faulty-fs.js';
import { PowerLossFileSystem } from '../src/files/power-loss.js';
import { loadHash } from '../src/format/index.js';
import { NodeFileSystem } from '../src/node/node-fs.js';
import {
  type CaseResult,
  type CrashCase,
  type Durability,
  referenceStates,
  replicaCase,
  scratchDir,
  type WorkloadName,
  writerCase,
  writerSource,
} from '../test/helpers/power-loss.js';

const { values } = parseArgs({
  options: {
    durability: { type: 'string', default: 'journal,sqlite' },
    workload: { type: 'string', default: 'a,b,c' },
    torn: { type: 'string', default: '2' },
    seed: { type: 'string' },
    'no-replica': { type: 'boolean', default: false },
    'fsync-failure': { type: 'boolean', default: false },
    'replica-only': { type: 'boolean', default: false },
    journal: { type: 'string', default: 'DELETE/FULL' },
    sqlite: { type: 'string', default: 'DELETE/EXTRA' },
  },
});

const list = (s: string): string[] =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
const torn = Number(values.torn);
const seed = values.seed === undefined ? Date.now() % 2 ** 31 : Number(values.seed);
// With --fsync-failure each sync point is failed (EIO) instead, the program stops at the error, then the
// power goes: FaultyFileSystem under the model (it has no sync thread, so journal fsyncs come first).
const faulty = values['fsync-failure'] ? new FaultyFileSystem(new NodeFileSystem()) : undefined;
const power = new PowerLossFileSystem(faulty ?? new NodeFileSystem());
const base = scratchDir('mycelite-power-loss-');
let n = 0;

interface Tally {
  name: string;
  points: number;
  cases: number;
  acked: number;
  failures: string[];
}

/** Runs the dry run, then every sync point strictly and `torn` times torn. */
async function sweep(name: string, run: (dir: string, c: CrashCase) => Promise<CaseResult>): Promise<Tally> {
  const t: Tally = { name, points: 0, cases: 0, acked: 0, failures: [] };
  const one = async (label: string, c: CrashCase): Promise<CaseResult> => {
    const dir = path.join(base, `c${n++}`);
    const r = await run(dir, c);
    t.cases++;
    t.acked += r.acked;
    for (const p of r.problems) t.failures.push(`${name} ${label}: ${p} (${dir})`);
    if (r.problems.length === 0) fs.rmSync(dir, { recursive: true, force: true });
    return r;
  };
  const dry = await one('end', { at: 'end' });
  t.points = dry.points.length;
  for (let k = 1; k <= t.points; k++) {
    const label = dry.points[k - 1]!;
    const where = `#${k} (${label})`;
    // The sync point itself cut the power, or (--fsync-failure) failed with EIO before the power went.
    const nth = dry.points.slice(0, k).filter((l) => l === label).length;
    const c: CrashCase = faulty
      ? { at: 'end', fault: { fs: faulty, plan: { label, nth, kind: 'EIO' } } }
      : { at: { nth: k } };
    await one(where, c);
    await one(`${where} directory changes kept`, { ...c, recover: { keepDirectoryChanges: true } });
    for (let i = 0; i < torn; i++) {
      const s = seed + k * 1000 + i;
      await one(`${where} torn ${s}`, { ...c, recover: { seed: s } });
    }
  }
  const lastOnly = t.failures.filter(
    (f) =>
      /lost: acknowledged (\d+) commits, the database has (\d+)/.test(f) &&
      Number(/acknowledged (\d+)/.exec(f)![1]) - Number(/has (\d+)/.exec(f)![1]) === 1,
  ).length;
  const lost = t.failures.filter((f) => /: lost: /.test(f)).length;
  console.log(
    `${name}: ${t.points} sync points, ${t.cases} cases, ${t.acked} acknowledged commits checked, ${t.failures.length} failures` +
      (t.failures.length > 0
        ? ` (lost: ${lost}, of which only the last acknowledged commit: ${lastOnly}; other: ${t.failures.length - lost})`
        : ''),
  );
  for (const f of t.failures.slice(0, 20)) console.log(`  ${f}`);
  return t;
}

async function main(): Promise<void> {
  await loadHash();
  const started = Date.now();
  console.log(`power loss: seed ${seed}, ${torn} torn recoveries per sync point, scratch ${base}`);
  const tallies: Tally[] = [];
  const workloads = list(values.workload) as WorkloadName[];
  if (!values['replica-only']) {
    for (const durability of list(values.durability) as Durability[]) {
      for (const mode of list(durability === 'journal' ? values.journal : values.sqlite)) {
        const [journalMode = 'DELETE', sync = 'FULL'] = mode.split('/');
        for (const w of workloads) {
          const states = await referenceStates(w);
          tallies.push(
            await sweep(`writer ${durability} ${journalMode}/${sync} ${w}`, (dir, c) =>
              writerCase(power, dir, durability, w, states, c, sync, journalMode),
            ),
          );
        }
      }
    }
  }
  if (!values['no-replica']) {
    for (const w of workloads) {
      const srcDir = path.join(base, `source-${w}`);
      fs.mkdirSync(srcDir);
      const src = await writerSource(power, srcDir, w);
      tallies.push(await sweep(`replica ${w}`, (dir, c) => replicaCase(power, dir, src, c)));
    }
  }
  const sum = (f: (t: Tally) => number): number => tallies.reduce((a, t) => a + f(t), 0);
  const failures = sum((t) => t.failures.length);
  const lost = sum((t) => t.failures.filter((f) => /: lost: /.test(f)).length);
  console.log(
    `total: ${sum((t) => t.points)} sync points, ${sum((t) => t.cases)} crash cases, ` +
      `${sum((t) => t.acked)} acknowledged commits checked; lost commits ${lost}, other failures ` +
      `(divergence, integrity, failed recovery, a failed commit present) ${failures - lost}; ` +
      `${Math.round((Date.now() - started) / 1000)} s`,
  );
  if (failures > 0) {
    console.log(`failed cases kept under ${base}`);
    process.exitCode = 1;
  } else fs.rmSync(base, { recursive: true, force: true });
}

await main();
