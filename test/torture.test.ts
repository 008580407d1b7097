// A short run of the replication crash torture (npm run torture -- --replication runs the long one): a hub,
// a writer and two replicas, each SIGKILLed at random moments and restarted; nothing acknowledged is lost,
// the hub holds exactly the writer's snapshots, killed replicas recover to a committed state of the writer,
// and every replica catches up (test/helpers/repl-torture.ts).
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { runReplTorture } from './helpers/repl-torture.js';
import { cleanupTempDirs, tempDir } from './helpers/util.js';

let passed = false;
after(() => {
  if (passed) cleanupTempDirs(); // else the files stay for inspection (their path is in the failure)
});

test('replication torture: hub, writer and replicas SIGKILLed at random moments lose nothing and converge', async (t) => {
  const seed = Number(process.env['TORTURE_SEED'] ?? Date.now() % 2 ** 31);
  const dir = path.join(tempDir(), 'torture');
  const s = await runReplTorture({
    dir,
    iterations: 8,
    seed,
    replicas: 2,
    generationEvery: 4,
  });
  t.diagnostic(
    `seed ${seed}: ${s.iterations} iterations, kills hub ${s.kills.hub} writer ${s.kills.writer} replica ${s.kills.replica}, ` +
      `${s.commits} commits, ${s.replicaStatesChecked} killed replicas checked`,
  );
  assert.deepEqual(s.problems, [], `seed ${seed}, files in ${dir}`);
  assert.equal(s.iterations, 8);
  assert.equal(s.divergences, 0);
  assert.equal(s.lostCommits, 0);
  assert.ok(s.commits > 0, 'the writer committed');
  assert.ok(s.kills.hub + s.kills.writer + s.kills.replica >= 8);
  passed = true;
});
