// The shared-database torture on NATS storage (npm run torture -- --shared --nats runs the long one): two
// stateless hubs on a 3-node NATS JetStream cluster, three devices spread over both, their network coming
// and going, devices and hubs SIGKILLed at random moments; after a final sync every device's file equals
// the others' and a plain replica's, every acknowledged transaction is in the hub's history once or was
// reported rejected, and verify passes everywhere (test/helpers/shared-torture.ts).
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { killSpawnedHubs } from './helpers/hub.js';
import { haveNatsServer, stopNatsClusters } from './helpers/nats-cluster.js';
import { runSharedTorture } from './helpers/shared-torture.js';
import { cleanupTempDirs, tempDir } from './helpers/util.js';

const skip = haveNatsServer() ? false : 'nats-server is not installed (apt-get install nats-server)';

// Runs take 20–60 s (longer on a loaded machine); one that hangs fails here, its processes stopped and its
// files (with trace.log, each device's .log) kept, instead of running into CI's limit.
const HANG_MS = 8 * 60_000;

let passed = false;
after(
  async () => {
    // Every hub and nats-server, also those of a run that failed or timed out half-way.
    await killSpawnedHubs();
    await stopNatsClusters();
    if (passed) cleanupTempDirs(); // else the files stay for inspection (their path is in the failure)
  },
  { timeout: 120_000 },
);

test('shared torture on NATS: two hubs, devices offline and SIGKILLed, hubs SIGKILLed; all converge', {
  skip,
  timeout: HANG_MS,
}, async (t) => {
  const seed = Number(process.env['TORTURE_SEED'] ?? Date.now() % 2 ** 31);
  const dir = path.join(tempDir(), 'shared-torture-nats');
  const s = await runSharedTorture({
    dir,
    iterations: 3,
    signal: t.signal,
    seed,
    devices: 3,
    storage: 'nats',
    forceFaults: true,
    joins: 1,
    killInEvents: true,
  });
  t.diagnostic(
    `seed ${seed}: ${s.iterations} iterations, ${s.joins} joined, kills hub ${s.kills.hub} device ${s.kills.device}, offline ${s.offline}, ` +
      `${s.commits} commits, ${s.conflicts} conflicts, ${s.rejections} rejections, ${s.hubSnapshots} hub snapshots walked`,
  );
  assert.deepEqual(s.problems, [], `seed ${seed}, files in ${dir}`);
  assert.equal(s.iterations, 3);
  assert.ok(s.commits > 0, 'the devices committed');
  assert.ok(s.kills.hub >= 1 && s.kills.device >= 1, 'hubs and devices were killed');
  assert.equal(s.joins, 1, 'a device joined');
  passed = true;
});
