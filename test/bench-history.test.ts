/**
 * `node dist/scripts/bench-history.js --size-mb 8` as a smoke test: the history benchmark builds, compacts
 * and restores a small database and the workloads' compactions, and every restore equals its database.
 * No timing is asserted.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { cleanupTempDirs, tempDir } from './helpers/util.js';

after(cleanupTempDirs);

test('bench-history --size-mb 8 runs, and restores equal the databases', { timeout: 120_000 }, () => {
  const dir = tempDir();
  const json = path.join(dir, 'bench-history.json');
  const script = fileURLToPath(new URL('../scripts/bench-history.js', import.meta.url));
  const args = ['--size-mb', '8', '--runs', '1', '--warm-only', '--scale', '0.05'];
  const r = spawnSync(process.execPath, [script, ...args, '--json', json, '--dir', path.join(dir, 's')], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr + r.stdout);
  const out = JSON.parse(fs.readFileSync(json, 'utf8')) as {
    big: { restoreEqual: boolean; dbBytes: number; warm: Record<string, { median: number }> };
    workloads: Record<
      string,
      { replayEqual: boolean; compaction: Record<string, { restoreEqual: boolean }> }
    >;
  };
  assert.equal(out.big.restoreEqual, true, 'the restore of the latest point differs from the database');
  assert.ok(out.big.dbBytes >= 8 << 20);
  assert.deepEqual(Object.keys(out.big.warm), [
    'copy+fsync',
    'copy (no fsync)',
    'read+write+fsync',
    'restore latest',
    'restore worst',
    'restore random',
  ]);
  assert.deepEqual(Object.keys(out.workloads), ['a', 'b', 'c']);
  for (const [w, x] of Object.entries(out.workloads)) {
    assert.equal(x.replayEqual, true, `workload ${w}`);
    for (const [name, c] of Object.entries(x.compaction)) assert.equal(c.restoreEqual, true, `${w}, ${name}`);
  }
  assert.equal(fs.readdirSync(path.join(dir, 's')).length, 0, 'the scratch directories are removed');
});
