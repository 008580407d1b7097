/**
 * `npm run bench -- --quick` as a smoke test: every workload runs under the three configurations (on the
 * disk, and on tmpfs where there is one), the journal replays to the database, and the replication
 * figures are produced. No timing is asserted.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { cleanupTempDirs, tempDir } from './helpers/util.js';

after(cleanupTempDirs);

test('bench --quick runs every workload and configuration, and the replays equal the databases', () => {
  const dir = tempDir();
  const json = path.join(dir, 'results.json');
  const script = fileURLToPath(new URL('../scripts/bench.js', import.meta.url));
  const r = spawnSync(
    process.execPath,
    [script, '--quick', '--json', json, '--dir', path.join(dir, 'scratch')],
    {
      encoding: 'utf8',
    },
  );
  assert.equal(r.status, 0, r.stderr + r.stdout);
  const out = JSON.parse(fs.readFileSync(json, 'utf8')) as {
    workloads: Record<string, { nativeMs: number; engineMs: number; myceliteMs: number; replay: boolean }>;
    tmpfs?: Record<string, { cpuMs: Record<string, number>; replay: boolean }>;
    'exec select 1': { myceliteMs: number };
    replication: Record<string, Record<string, unknown>>;
    shared: Record<string, Record<string, number>>;
    length: Record<string, { openMs: number; journalMB: number }>;
  };
  assert.deepEqual(Object.keys(out.workloads), ['a', 'b', 'c', 'r']);
  for (const [w, row] of Object.entries(out.workloads)) {
    assert.equal(row.replay, true, `workload ${w}: replay differs from the database`);
    for (const ms of [row.nativeMs, row.engineMs, row.myceliteMs]) assert.ok(ms > 0, `workload ${w}`);
  }
  if (fs.existsSync('/dev/shm')) {
    assert.deepEqual(Object.keys(out.tmpfs ?? {}), ['a', 'b', 'c', 'r'], 'the tmpfs table is there');
    for (const [w, row] of Object.entries(out.tmpfs!)) {
      assert.equal(row.replay, true, `tmpfs workload ${w}: replay differs from the database`);
      for (const cpu of Object.values(row.cpuMs)) assert.ok(cpu > 0, `tmpfs workload ${w}: CPU time`);
    }
  }
  assert.ok(out['exec select 1'].myceliteMs > 0, 'mycelite exec "select 1" timed');
  const lag = out.replication['lag, 1 replica'] as { commits: number; replicaLagMs: { n: number } };
  assert.equal(lag.replicaLagMs.n, lag.commits, 'the replica applied every commit');
  assert.ok((out.replication['apply'] as { MBps: number }).MBps > 0);
  assert.ok((out.replication['restore vs copy'] as { ratio: number }).ratio > 0);
  assert.ok((out.replication['writer RSS, one large transaction'] as { peakRssMiB: number }).peakRssMiB > 0);
  assert.ok(out.shared['merges']!['commits']! > 0, 'the devices committed');
  assert.ok(out.shared['latency']!['rows']! > 0);
  assert.equal(out.shared['rebase']!['reapplied'], 100, 'the 100 pending changes were applied again');
  assert.deepEqual(
    Object.keys(out.length),
    ['1000 txs', '5000 txs'],
    'open() measured at each history length',
  );
  for (const row of Object.values(out.length)) assert.ok(row.openMs > 0 && row.journalMB > 0);
  assert.equal(fs.existsSync(path.join(dir, 'scratch')), false, 'the scratch directory is removed');
});
