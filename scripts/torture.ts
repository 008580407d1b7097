/**
 * Crash torture: SIGKILL a writer process at random moments, recover, and check that the journal and
 * the database agree and that no acknowledged commit is lost (test/crash/harness.ts).
 *
 *   npm run torture [-- --iterations N] [--mode DELETE,TRUNCATE,PERSIST] [--sync FULL,NORMAL,OFF]
 *                   [--durability journal,sqlite] [--seed S] [--fresh-every K] [--dir PATH]
 *
 * With --replication: a hub (`mycelite serve`), a writer pushing to it and replicas (`mycelite follow`),
 * each SIGKILLed at random moments and restarted (test/helpers/repl-torture.ts):
 *
 *   npm run torture -- --replication [--iterations N] [--replicas R] [--seed S] [--fresh-every K] [--dir PATH]
 *
 * With --shared: devices of one shared database (test/helpers/shared-device.ts) committing random
 * transactions through their own TCP proxies, taken offline and back, devices and hubs SIGKILLed at random
 * moments; after each iteration all converge and are checked (test/helpers/shared-torture.ts). --nats
 * runs two hubs on a 3-node NATS cluster (nats-server) with the devices spread over both:
 *
 *   npm run torture -- --shared [--nats] [--iterations N] [--devices D] [--joins J] [--seed S] [--dir PATH]
 *
 * Exits 1 if any iteration broke a promise.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import {
  configName,
  configs,
  DURABILITIES,
  formatFailures,
  JOURNAL_MODES,
  runHarness,
  SYNCHRONOUS,
} from '../test/crash/harness.js';
import { runReplTorture } from '../test/helpers/repl-torture.js';
import { runSharedTorture } from '../test/helpers/shared-torture.js';

const { values } = parseArgs({
  options: {
    iterations: { type: 'string', default: '1000' },
    mode: { type: 'string', default: JOURNAL_MODES.join(',') },
    sync: { type: 'string', default: SYNCHRONOUS.join(',') },
    durability: { type: 'string', default: DURABILITIES.join(',') },
    seed: { type: 'string' },
    'fresh-every': { type: 'string', default: '25' },
    dir: { type: 'string' },
    replication: { type: 'boolean', default: false },
    replicas: { type: 'string', default: '2' },
    shared: { type: 'boolean', default: false },
    nats: { type: 'boolean', default: false },
    devices: { type: 'string', default: '3' },
    joins: { type: 'string', default: '2' },
  },
});

const list = (s: string) =>
  s
    .split(',')
    .map((x) => x.trim().toUpperCase())
    .filter(Boolean);
const iterations = Number(values.iterations);
const seed = values.seed === undefined ? Date.now() % 2 ** 31 : Number(values.seed);
const chosen = configs(
  list(values.mode),
  list(values.sync),
  list(values.durability).map((d) => d.toLowerCase()),
);
const dir = values.dir ?? path.join(os.tmpdir(), `mycelite-torture-${process.pid}`);
if (!Number.isInteger(iterations) || iterations < 1 || !Number.isInteger(seed)) {
  console.error('--iterations and --seed must be integers');
  process.exit(2);
}

if (values.replication) await replication();
if (values.shared) await shared();

async function shared(): Promise<never> {
  const started = Date.now();
  const storage = values.nats ? 'nats' : 'files';
  console.log(
    `shared torture (${storage}): ${iterations} iterations, ${values.devices} devices, seed ${seed}, dir ${dir}`,
  );
  const s = await runSharedTorture({
    dir,
    iterations,
    seed,
    devices: Number(values.devices),
    joins: Number(values.joins),
    killInEvents: true,
    storage,
    onIteration: (i, st, problems) => {
      for (const p of problems) console.log(`FAIL #${i} ${p}`);
      if ((i + 1) % 10 === 0 || i + 1 === iterations) {
        const secs = ((Date.now() - started) / 1000).toFixed(0);
        console.log(
          `[${i + 1}/${iterations}] ${secs}s kills hub ${st.kills.hub} device ${st.kills.device}, offline ${st.offline}, ` +
            `commits ${st.commits}, conflicts ${st.conflicts}, rejections ${st.rejections}, ` +
            `divergences ${st.divergences}, lost ${st.lost}, process failures ${st.processFailures}`,
        );
      }
    },
  });
  console.log(`
summary (shared, ${storage}, seed ${seed}, ${((Date.now() - started) / 1000).toFixed(0)} s)
  iterations                  ${s.iterations}
  kills                       hub ${s.kills.hub}, device ${s.kills.device} (${s.killedInRebase} in the middle of a rebase, ${s.killedInRewrite} inside its re-apply or rewrite)
  devices                     ${values.devices} at the start, ${s.joins} joined later
  network                     ${s.offline} offline windows, ${s.cuts} cuts
  acknowledged commits        ${s.commits}
  conflicts reported          ${s.conflicts}
  rejections                  ${s.rejections} (${s.repeatedRejections} reported more than once)
  hub snapshots walked        ${s.hubSnapshots}
  divergences                 ${s.divergences}   (must be 0)
  lost                        ${s.lost}   (must be 0)
  process failures            ${s.processFailures}   (must be 0)`);
  if (s.problems.length > 0) {
    console.log(`\n${s.problems.length} problems (files kept under ${dir}):\n${s.problems.join('\n')}`);
    process.exit(1);
  }
  fs.rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}

async function replication(): Promise<never> {
  const started = Date.now();
  const every = values['fresh-every'] === '25' ? 20 : Number(values['fresh-every']);
  console.log(`replication torture: ${iterations} iterations, seed ${seed}, dir ${dir}`);
  const s = await runReplTorture({
    dir,
    iterations,
    seed,
    replicas: Number(values.replicas),
    generationEvery: every,
    onIteration: (i, st, problems) => {
      for (const p of problems) console.log(`FAIL #${i} ${p}`);
      if ((i + 1) % 25 === 0 || i + 1 === iterations) {
        const secs = ((Date.now() - started) / 1000).toFixed(0);
        console.log(
          `[${i + 1}/${iterations}] ${secs}s kills hub ${st.kills.hub} writer ${st.kills.writer} replica ${st.kills.replica}, ` +
            `commits ${st.commits}, divergences ${st.divergences}, lost ${st.lostCommits}, process failures ${st.processFailures}`,
        );
      }
    },
  });
  console.log(`
summary (replication, seed ${seed}, ${((Date.now() - started) / 1000).toFixed(0)} s)
  iterations                  ${s.iterations}
  kills                       hub ${s.kills.hub}, writer ${s.kills.writer}, replica ${s.kills.replica}
  acknowledged commits        ${s.commits} (writer), ${s.pushedTxids} txids acknowledged by the hub
  killed replicas checked     ${s.replicaStatesChecked} (recovered state == the writer's at that txid)
  divergences                 ${s.divergences}   (must be 0)
  lost acknowledged commits   ${s.lostCommits}   (must be 0)
  process failures            ${s.processFailures}   (must be 0)`);
  if (s.problems.length > 0) {
    console.log(`\n${s.problems.length} problems (files kept under ${dir}):\n${s.problems.join('\n')}`);
    process.exit(1);
  }
  fs.rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}

console.log(
  `torture: ${iterations} iterations, configs ${chosen.map(configName).join(' ')}, seed ${seed}, dir ${dir}`,
);
const started = Date.now();
const stats = await runHarness({
  dir,
  configs: chosen,
  iterations,
  seed,
  freshEvery: Number(values['fresh-every']),
  onIteration: (r, s) => {
    for (const f of r.failures) console.log(`FAIL ${formatFailures([f])}`);
    if ((r.iteration + 1) % 50 === 0 || r.iteration + 1 === iterations) {
      const secs = ((Date.now() - started) / 1000).toFixed(0);
      console.log(
        `[${r.iteration + 1}/${iterations}] ${secs}s kills ${s.kills} (early ${s.earlyKills}), ` +
          `acked commits ${s.acks}, failures ${s.failures.length}`,
      );
    }
  },
});

const c = stats.count;
console.log(`
summary (seed ${seed}, ${((Date.now() - started) / 1000).toFixed(0)} s)
  iterations                  ${stats.iterations}
  kills                       ${stats.kills} (${stats.earlyKills} during start-up/recovery)
  acknowledged commits        ${stats.acks}
  committed, not yet acked    ${stats.unackedCommits}
  divergences                 ${c.divergence}   (journal replay != database; must be 0)
  lost acknowledged commits   ${c['lost-ack']}   (must be 0)
  recoveries that threw       ${c.recovery}   (must be 0)
  ack-table anomalies         ${c.acks}
  txid mismatches             ${c.txid}
  integrity_check failures    ${c.integrity}
  writer failures             ${c.writer}`);
if (stats.failures.length > 0) {
  console.log(
    `\n${stats.failures.length} failures (files kept under ${dir}):\n${formatFailures(stats.failures)}`,
  );
  process.exit(1);
}
process.exit(0);
