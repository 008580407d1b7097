/**
 * What a hub compaction costs the pushes beside it: a database with a journal of tens of MiB in an
 * FsStorage, then appends one snapshot at a time (each fsynced) with no compaction running, then the same
 * while `compact()` runs (its heavy part in a worker thread, the swap in the append order). Prints append
 * latency percentiles for both phases, the compaction's time, the time appends waited for the swap, and
 * the bytes before and after.
 *
 *   node dist/scripts/hub-compact.js [--rows 2000] [--txns 600] [--probe 150]
 */

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Command } from 'commander';
import type { Position } from '../src/format/index.js';
import { FsStorage } from '../src/hub/index.js';
import { open } from '../src/node/index.js';
import { EMPTY_POSITION, type EncodedSnapshot } from '../src/protocol/index.js';
import { readJournal } from '../test/helpers/hub.js';
import { percentile } from './measure.js';

const opts = new Command('hub-compact')
  .option('--rows <n>', 'rows of 2 KiB in the database', (v) => Number(v), 2000)
  .option('--txns <n>', 'transactions, each rewriting 50 rows', (v) => Number(v), 600)
  .option('--probe <n>', 'appends measured in each phase', (v) => Number(v), 150)
  .parse()
  .opts<{ rows: number; txns: number; probe: number }>();

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-hub-compact-'));
try {
  const dbPath = path.join(dir, 'w.db');
  const w = await open(dbPath, { history: false });
  w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)');
  w.prepare(
    'WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) INSERT INTO t(b) SELECT randomblob(2000) FROM n',
  ).run(opts.rows);
  const upd = w.prepare(
    'WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50) UPDATE t SET b = randomblob(2000) WHERE id IN (SELECT abs(random()) % ? + 1 FROM n)',
  );
  for (let i = 0; i < opts.txns + 2 * opts.probe; i++) upd.run(opts.rows);
  w.close();
  const h = await readJournal(`${dbPath}-mycelite/journal`);
  const snaps = h.snapshots;
  const s = await FsStorage.open(path.join(dir, 'hub'), { compaction: false });
  let head: Position = EMPTY_POSITION;
  const push = async (batch: EncodedSnapshot[]): Promise<number> => {
    const t0 = performance.now();
    const r = await s.append('db', head, h.journalId, batch);
    if (!r.ok) throw new Error('append refused');
    head = r.state.head;
    return performance.now() - t0;
  };
  const bulk = snaps.length - 2 * opts.probe;
  for (let i = 0; i < bulk; i += 50) await push(snaps.slice(i, Math.min(bulk, i + 50)));
  const journalBytes = fs.statSync(path.join(dir, 'hub/dbs/db/journal')).size;
  const quiet: number[] = [];
  for (let i = bulk; i < bulk + opts.probe; i++) quiet.push(await push([snaps[i]!]));
  const busy: number[] = [];
  const t0 = performance.now();
  let compactMs = 0;
  const running = s.compact('db').then((o) => {
    compactMs = performance.now() - t0;
    return o;
  });
  let during = 0;
  for (let i = bulk + opts.probe; i < snaps.length; i++) {
    busy.push(await push([snaps[i]!]));
    if (compactMs === 0) during++;
  }
  const o = await running;
  await s.close();
  const ms = (v: number): string => v.toFixed(2);
  const pct = (v: number[], p: number): string =>
    ms(
      percentile(
        [...v].sort((a, b) => a - b),
        p,
      ),
    );
  const dbBytes = fs.statSync(dbPath).size;
  console.log(
    `database ${(dbBytes / 2 ** 20).toFixed(1)} MiB, hub journal ${(journalBytes / 2 ** 20).toFixed(1)} MiB (${snaps.length} snapshots)`,
  );
  console.log(
    `append (1 snapshot, fsynced) without compaction: p50 ${pct(quiet, 50)} ms, p99 ${pct(quiet, 99)} ms, max ${ms(Math.max(...quiet))} ms`,
  );
  console.log(
    `append while compacting (${during} of ${busy.length} ended before the compaction did): p50 ${pct(busy.slice(0, Math.max(1, during)), 50)} ms, p99 ${pct(busy.slice(0, Math.max(1, during)), 99)} ms, max ${ms(Math.max(...busy))} ms`,
  );
  console.log(
    `compaction ${ms(compactMs)} ms, appends waited for the swap ${ms(o?.swapMs ?? 0)} ms; history + journal ${(o!.bytesBefore / 2 ** 20).toFixed(1)} MiB -> ${(o!.bytesAfter / 2 ** 20).toFixed(1)} MiB, ${o!.checkpoints} checkpoints, points ${o!.pointsBefore} -> ${o!.pointsAfter}`,
  );
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
