/**
 * `npm run torture:replicate [-- --transactions N] [-- --writer python|node] [-- --mode auto|truncate]
 * [-- --seed S]`: the long version of test/replicate.test.ts. A native application in another process
 * commits N transactions (default 5,000; the check replays every snapshot, quadratic in N) to a WAL database while `mycelite replicate` is started and
 * SIGKILLed at random moments (a third of the kills before it is even ready); then a last sidecar
 * catches up and stops. Every snapshot of the journal must be a state the application committed, in
 * order, none missed except inside a re-bootstrap (an outside snapshot), and the journal must replay to
 * the application's database. Prints kills, re-bootstraps and the time taken; exits 1 on any failure.
 */
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Command } from 'commander';
import { prng } from '../test/helpers/prng.js';
import { spawnSidecar } from '../test/helpers/sidecar.js';
import { cleanupTempDirs, journalOf, tempDir } from '../test/helpers/util.js';
import { checkJournal, checkpointed, createWalDb, python, startWriter } from '../test/helpers/wal-app.js';

const opts = new Command('torture:replicate')
  .option('--transactions <n>', 'transactions the application commits', (v) => Number(v), 5_000)
  .option('--writer <kind>', 'python (sqlite3 module) or node (better-sqlite3)', 'python')
  .option('--mode <mode>', "auto (default checkpoints) or truncate (the application's own)", 'auto')
  .option('--seed <n>', 'random seed', (v) => Number(v), Date.now() % 1_000_000)
  .option('--keep', 'keep the scratch directory', false)
  .parse()
  .opts<{
    transactions: number;
    writer: 'python' | 'node';
    mode: 'auto' | 'truncate';
    seed: number;
    keep: boolean;
  }>();

async function main(): Promise<void> {
  if (opts.writer === 'python' && !python())
    throw new Error('python3 with its sqlite3 module is not installed');
  const dir = tempDir('mycelite-replicate-torture-');
  const db = path.join(dir, 'app.db');
  createWalDb(db);
  const rand = prng(opts.seed);
  const started = Date.now();
  const w = startWriter(opts.writer, db, opts.transactions, opts.mode, 1);
  let writing = true;
  const out = w.done.finally(() => {
    writing = false;
  });
  let kills = 0;
  while (writing) {
    const s = spawnSidecar([db]);
    if (rand() < 0.3) await sleep(rand() * 300);
    else {
      await Promise.race([s.ready, s.exited]);
      await sleep(50 + rand() * 1500);
    }
    s.proc.kill('SIGKILL');
    if ((await s.exited) !== null) throw new Error(`the sidecar failed: ${s.err()}`);
    kills++;
  }
  await out;
  const last = spawnSidecar([db]);
  await last.ready;
  last.proc.kill('SIGTERM');
  if ((await last.exited) !== 0) throw new Error(`the last sidecar failed: ${last.err()}`);
  const check = await checkJournal(journalOf(db));
  if (check.ks.at(-1) !== opts.transactions) throw new Error(`the journal ends at ${check.ks.at(-1)}`);
  if (!check.image.equals(checkpointed(db))) throw new Error("the journal's replay is not the database");
  console.log(
    `ok: seed ${opts.seed}, ${opts.writer}/${opts.mode}, ${opts.transactions} transactions, ${check.ks.length} snapshots, ${kills} kills, ${check.outside.length} re-bootstraps, ${((Date.now() - started) / 1000).toFixed(1)} s`,
  );
  if (opts.keep) console.log(`files in ${dir}`);
  else cleanupTempDirs();
}

main().catch((e) => {
  console.error(`replicate torture failed (seed ${opts.seed}): ${(e as Error).message}`);
  process.exit(1);
});
