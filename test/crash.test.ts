// Crash consistency under SIGKILL (test/crash/harness.ts): a writer process is killed at random moments;
// after every kill `open()` must recover, the journal's replay must equal the database byte for byte, no
// acknowledged commit may be lost, position().txid must count the journal's snapshots and native SQLite
// must find the database intact. `npm run torture` runs the same harness for many more iterations.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { nodeRuntime, open } from '../src/node/index.js';
import { verifyDatabase } from '../src/restore/restore.js';
import { configs, formatFailures, type HarnessStats, JOURNAL_MODES, runHarness } from './crash/harness.js';

const TMP = mkdtempSync(join(tmpdir(), 'mycelite-crash-'));
const SEED = Number(process.env.MYCELITE_CRASH_SEED ?? Date.now() % 2 ** 31);
let keep = false;
after(() => {
  if (keep) console.log(`crash test files kept in ${TMP} (seed ${SEED})`);
  else rmSync(TMP, { recursive: true, force: true });
});

/** Runs the harness and asserts that no promise was broken. */
async function crashes(
  name: string,
  modes: string[],
  iterations: number,
  compactAt?: number,
): Promise<HarnessStats> {
  const stats = await runHarness({
    dir: join(TMP, name),
    configs: configs(modes),
    iterations,
    seed: SEED,
    // Compacting writers keep their history across kills (each is let run until it compacted once).
    ...(compactAt ? { freshEvery: 1000 } : { freshEvery: 6 }),
    compactAt,
  });
  if (stats.failures.length > 0) keep = true;
  assert.equal(
    stats.failures.length,
    0,
    `${stats.failures.length} of ${stats.iterations} iterations broke a promise (seed ${SEED}):\n` +
      formatFailures(stats.failures),
  );
  assert.equal(stats.iterations, iterations);
  assert.ok(stats.kills >= iterations - 1, `only ${stats.kills} of ${iterations} writers were killed`);
  assert.ok(stats.acks > 0, 'the writers acknowledged no commit');
  return stats;
}

describe('crash consistency under SIGKILL', () => {
  // Each test alternates durability 'journal' (held writes, redo at open) and 'sqlite' (SQLite's
  // rollback journal) across the three synchronous settings.
  for (const mode of JOURNAL_MODES) {
    test(`journal_mode=${mode} × synchronous FULL/NORMAL/OFF × durability journal/sqlite`, {
      timeout: 90_000,
    }, async () => {
      await crashes(mode, [mode], 18);
    });
  }

  // SQLite keeps a MEMORY-mode rollback journal in memory only: a crash after the transaction wrote
  // to the database file (a cache spill, or the commit itself) leaves a database SQLite cannot roll back.
  // Mycelite's inflight marker makes open() rebuild it from the journal.
  test('journal_mode=MEMORY × synchronous FULL/NORMAL/OFF × durability journal/sqlite', {
    timeout: 60_000,
  }, async () => {
    await crashes('MEMORY', ['MEMORY'], 12);
  });

  // The writer compacts its own history (docs/ARCHITECTURE.md, "History") every ~100 KB of journal, so
  // kills land inside compactions and journal rewrites too: every acknowledged commit must survive.
  test('with automatic compaction in the writer (DELETE × FULL/NORMAL/OFF)', {
    timeout: 90_000,
  }, async () => {
    const stats = await crashes('compacting', ['DELETE'], 15, 30_000);
    console.log(`# compacting writers: ${stats.compacted} of 15 iterations had compacted`);
    assert.ok(stats.compacted >= 3, `the writers had compacted in ${stats.compacted} of 15 iterations`);
  });
});

// SQLite does not journal a page it takes from the freelist (its old content is garbage), so rolling back a
// transaction that wrote such a page to the file (cache spill) leaves the new bytes there. The database is
// logically unchanged but no longer equals the journal's replay byte for byte.
describe('rollback of a transaction that wrote reused free pages to the file', () => {
  const HANG = fileURLToPath(new URL('./crash/spill-hang.js', import.meta.url));

  test('explicit ROLLBACK after a cache spill, then close: the database still equals the replay', async () => {
    const dir = join(TMP, 'rollback');
    rmSync(dir, { recursive: true, force: true });
    const dbPath = join(dir, 'test.db');
    nodeRuntime.fs.mkdir(dir);
    const db = await open(dbPath);
    db.exec('CREATE TABLE t(a)');
    const insert = db.prepare('INSERT INTO t VALUES (randomblob(3000))');
    db.transaction(() => {
      for (let i = 0; i < 300; i++) insert.run();
    })();
    db.exec('DELETE FROM t');
    db.pragma('cache_size=10');
    db.exec('BEGIN');
    for (let i = 0; i < 200; i++) insert.run();
    db.exec('ROLLBACK');
    db.close();
    const v = await verifyDatabase(nodeRuntime.fs, dbPath, join(dir, 'verify.tmp'));
    assert.ok(v.ok, v.problem);
  });

  for (const mode of JOURNAL_MODES) {
    test(`SIGKILL after a cache spill (journal_mode=${mode}): open() recovers and the database equals the replay`, {
      timeout: 30_000,
    }, async () => {
      const dir = join(TMP, `spill-${mode}`);
      rmSync(dir, { recursive: true, force: true });
      nodeRuntime.fs.mkdir(dir);
      const dbPath = join(dir, 'test.db');
      const child = spawn(process.execPath, [HANG, dbPath, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
      const exited = new Promise((resolve) => child.on('exit', resolve));
      await new Promise<void>((resolve, reject) => {
        let out = '';
        child.stdout.setEncoding('utf8').on('data', (d: string) => {
          out += d;
          if (out.includes('spilled\n')) resolve();
        });
        void exited.then(() => reject(new Error('spill-hang exited before it spilled')));
      });
      child.kill('SIGKILL');
      await exited;
      const db = await open(dbPath);
      assert.equal(db.prepare('SELECT count(*) FROM t').pluck().get(), 0);
      db.close();
      const v = await verifyDatabase(nodeRuntime.fs, dbPath, join(dir, 'verify.tmp'));
      assert.ok(v.ok, v.problem);
    });
  }
});
