// The sidecar's yield to an application's blocking checkpoint (src/sidecar/swap.ts, yieldTo), step by
// step in one process: the sidecar is driven by hand (no timers), the application is a native connection
// beside it, and the moment another process would act inside the yield is a hook.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { FLAG_OUTSIDE, JournalReader, loadHash, memorySource } from '../src/format/index.js';
import { loadNative } from '../src/sidecar/native.js';
import { Sidecar } from '../src/sidecar/sidecar.js';
import { cleanupTempDirs, journalOf, replayBytes, tempDir } from './helpers/util.js';
import { checkpointed, createWalDb } from './helpers/wal-app.js';

after(() => cleanupTempDirs());

/** A sidecar whose yield runs `hook` where it looks again for the blocking checkpointer. */
class Probe extends Sidecar {
  hook: (() => void) | undefined;
  protected override blockingCheckpointer(): number | undefined {
    const h = this.hook;
    this.hook = undefined;
    h?.();
    return undefined;
  }
  yieldNow(): Promise<void> {
    return this.yieldTo(0x7fffffff);
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
