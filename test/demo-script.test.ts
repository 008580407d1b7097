/**
 * `npm start` (scripts/demo.ts), run for a few seconds as a user would: two devices write one shared
 * database, both print their state every second, both commit, conflicts are counted, and at the end both
 * devices and both replicas hold byte-for-byte the same file.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const SCRIPT = fileURLToPath(new URL('../scripts/demo.js', import.meta.url));

describe('npm start', { timeout: 120_000 }, () => {
  it('shows two writing devices, converging byte for byte', () => {
    const r = spawnSync(process.execPath, [SCRIPT, '--seconds', '3'], { encoding: 'utf8', timeout: 100_000 });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    const out = r.stdout;
    const seconds = out.split('\n').filter((l) => /^\s+\ds │/.test(l));
    assert.equal(seconds.length, 3, `one line per second:\n${out}`);
    for (const line of seconds)
      assert.equal(line.split('│').length, 6, `laptop, phone, hub, two replicas: ${line}`);
    for (const device of ['laptop', 'phone']) {
      const m = new RegExp(
        `^  ${device}\\s+txid (\\d+), (\\d+) expenses \\((\\d+) written here\\), (\\d+) conflicts`,
        'm',
      ).exec(out);
      assert.ok(m, `${device}'s summary:\n${out}`);
      assert.ok(Number(m[3]) > 0, `${device} wrote rows`);
    }
    const total = (d: string): number =>
      Number(new RegExp(`^  ${d}\\s+txid \\d+, (\\d+) expenses`, 'm').exec(out)![1]);
    assert.equal(total('laptop'), total('phone'), 'both hold every row');
    assert.match(out, /all four files are byte-for-byte equal/);
    assert.match(out, /Time travel: replica-1\.db as it was at/);
  });
});
