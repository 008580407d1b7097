// The sidecar driven step by step in one process: no timers, its looks at the WAL (tick), stops and
// starts called by hand between the application's own steps (a native connection beside it: commits,
// checkpoints of every mode, a close). The moments another process would act inside a yield to a
// blocking checkpoint (src/sidecar/swap.ts, yieldTo) are hooks. Seeded: a failure names its seed and
// its steps, and replays.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { FLAG_OUTSIDE, JournalReader, loadHash, memorySource } from '../src/format/index.js';
import { loadNative } from '../src/sidecar/native.js';
import { Sidecar } from '../src/sidecar/sidecar.js';
import { prng } from './helpers/prng.js';
import { cleanupTempDirs, journalOf, replayBytes, tempDir } from './helpers/util.js';
import { checkJournal, checkpointed, createWalDb, walAppTransaction } from './helpers/wal-app.js';

after(() => cleanupTempDirs());

const PID = 0x7fffffff;

/**
 * A sidecar whose looks for a blocking checkpointer run `hook` (once) and then answer from `script`
 * (each entry once: a pid, or undefined for none), none when it is empty.
 */
class Probe extends Sidecar {
  hook: (() => void) | undefined;
  script: (() => number | undefined)[] = [];
  protected override blockingCheckpointer(): number | undefined {
    const h = this.hook;
    this.hook = undefined;
    h?.();
    return this.script.shift()?.();
  }
  yieldNow(): Promise<void> {
    return this.yieldTo(PID);
  }
}

test('a commit while the reader is off the WAL for a yield, checkpointed before it is copied: its snapshot is still the change (old content from the journal, not the file)', async () => {
  await loadHash();
  await loadNative();
  const dir = tempDir('mycelite-replicate-yield-');
  const db = path.join(dir, 'app.db');
  createWalDb(db);
  const messages: string[] = [];
  const errors: Error[] = [];
  const s = new Probe(db, { onMessage: (line) => messages.push(line) });
  s.start();
  s.emitter.on('error', (e) => errors.push(e));
  const app = new BetterSqlite3(db);
  try {
    app.pragma('wal_autocheckpoint = 0');
    // The sidecar's start checkpointed everything: this commit restarts the WAL, and the sidecar copies it.
    app.prepare("insert into t values (1, 'one')").run();
    s.tick();
    assert.equal(s.pendingFrames(), 0);
    // Inside the yield (reader off the WAL), the application commits a page the generation has no frame
    // of yet (the root of table big); the reader then begins again with that frame under its read mark.
    s.hook = () => app.prepare('insert into big values (?)').run(Buffer.alloc(100, 7));
    await s.yieldNow();
    assert.equal(s.hook, undefined, 'the yield looked for the checkpointer again');
    // A checkpoint copies it into the database file before the sidecar copied it into the journal.
    const [ck] = app.pragma('wal_checkpoint(PASSIVE)') as {
      busy: number;
      log: number;
      checkpointed: number;
    }[];
    assert.equal(ck!.checkpointed, ck!.log, 'the checkpoint reached the frame past the cursor');
    s.tick();
    await s.api().close();
  } finally {
    app.close();
  }
  assert.deepEqual(errors, []);
  assert.deepEqual(
    messages.filter((m) => /check at/.test(m)),
    [],
    'the journal was the database at the clean stop',
  );
  const outside = [...new JournalReader(memorySource(fs.readFileSync(journalOf(db)))).snapshots()].filter(
    (x) => (x.flags & FLAG_OUTSIDE) !== 0,
  );
  assert.deepEqual(outside, [], 'every snapshot is a transaction of the application');
  assert.ok((await replayBytes(db)).equals(checkpointed(db)), "the journal's replay is the database");
});

/**
 * One seeded run: the application commits `n` transactions of the workload (wal-app.ts) with a random
 * automatic checkpoint, and checkpoints itself in every mode, while sidecars are started, look at the WAL,
 * yield to a checkpointer (the application acting inside the yield), and are stopped without catching
 * up (their connections closed, as a SIGKILL leaves them; no state written). A last sidecar (after the
 * application closed, sometimes) catches up and stops cleanly.
 */
async function interleave(seed: number, n: number): Promise<{ steps: string[]; outside: number }> {
  const rand = prng(seed);
  const dir = tempDir('mycelite-replicate-steps-');
  const db = path.join(dir, 'app.db');
  createWalDb(db);
  const app = new BetterSqlite3(db, { timeout: 0 });
  app.pragma(`wal_autocheckpoint = ${[0, 5, 20, 100, 1000][Math.floor(rand() * 5)]}`);
  const txn = walAppTransaction(app);
  const steps: string[] = [];
  const messages: string[] = [];
  const errors: Error[] = [];
  let k = 0;
  let open = true;
  const commit = (most: number): void => {
    for (let m = 1 + Math.floor(rand() * most); m > 0 && k < n; m--) {
      try {
        txn(k + 1);
      } catch (e) {
        if ((e as { code?: string }).code?.startsWith('SQLITE_BUSY')) break;
        throw e;
      }
      k++;
    }
    steps.push(`c${k}`);
  };
  const checkpoint = (): void => {
    const mode = ['PASSIVE', 'FULL', 'RESTART', 'TRUNCATE'][Math.floor(rand() * 4)]!;
    const [r] = app.pragma(`wal_checkpoint(${mode})`) as { busy: number }[];
    steps.push(`${mode.toLowerCase()}${r!.busy ? '-busy' : ''}`);
  };
  const appStep = (): void => (rand() < 0.7 ? commit(4) : checkpoint());
  const start = (): Probe => {
    const s = new Probe(db, {
      onMessage: (line) => messages.push(line),
      checkpointFrames: 1 + Math.floor(rand() * 300),
      checkpointMs: 3_600_000, // swaps by frames only: a run does not depend on the clock
    });
    try {
      s.start();
    } catch (e) {
      s.release();
      throw e;
    }
    s.emitter.on('error', (e) => errors.push(e));
    steps.push('start');
    return s;
  };
  let s: Probe | undefined;
  try {
    while (k < n) {
      const r = rand();
      if (r < 0.55) commit(5);
      else if (r < 0.65) checkpoint();
      else if (!s) {
        if (r > 0.92) s = start();
      } else if (r < 0.8) {
        s.tick();
        steps.push('tick');
      } else if (r < 0.86) {
        // A yield: the checkpointer seen once (the sidecar lets go at once) or several times (it waits),
        // the application acting at each look.
        s.tick();
        const looks = rand() < 0.5 ? 1 : 2 + Math.floor(rand() * 3);
        s.script = Array.from({ length: looks }, (_, i) => () => {
          if (rand() < 0.7) appStep();
          return i < looks - 1 ? PID : undefined;
        });
        steps.push(`yield${looks}`);
        await s.yieldNow();
        s.script = [];
      } else {
        s.release();
        s = undefined;
        steps.push('kill');
      }
    }
    if (s) s.release();
    s = undefined;
    if (rand() < 0.5) checkpoint();
    if (rand() < 0.3) {
      app.close();
      open = false;
      steps.push('close');
    }
    s = start();
    await s.api().close();
    s = undefined;
  } finally {
    s?.release();
    if (open) app.close();
  }
  const at = `seed ${seed}: ${steps.join(' ')}\n${messages.join('\n')}`;
  assert.deepEqual(errors, [], at);
  assert.deepEqual(
    messages.filter((m) => /check at/.test(m)),
    [],
    at,
  );
  const check = await checkJournal(journalOf(db));
  assert.equal(check.ks.at(-1), n, at);
  assert.ok(check.image.equals(checkpointed(db)), `the journal's replay is the database; ${at}`);
  return { steps, outside: check.outside.length };
}

test('interleavings of the application (commits, checkpoints of every mode, a close), sidecar looks, yields and stops without catching up: every transaction in the journal, in order', {
  timeout: 120_000,
}, async () => {
  await loadHash();
  await loadNative();
  let outside = 0;
  let kills = 0;
  let yields = 0;
  // Seed 64: a yield's window that old content read from the file got wrong (see the test above).
  const seeds = [...Array.from({ length: 20 }, (_, i) => i + 1), 64];
  for (const seed of seeds) {
    const r = await interleave(seed, 120);
    outside += r.outside;
    kills += r.steps.filter((x) => x === 'kill').length;
    yields += r.steps.filter((x) => x.startsWith('yield')).length;
  }
  console.log(
    `${seeds.length} runs: ${kills} stops without catching up, ${yields} yields, ${outside} re-bootstraps`,
  );
  assert.ok(kills >= seeds.length && yields >= seeds.length, `${kills} stops, ${yields} yields`);
});
