/**
 * What checking every push against the hub's head file costs, and what building new replicas' images
 * from it saves (docs/ARCHITECTURE.md, "Hub"). A writer makes a database of --rows rows of 1 KiB, then
 * --txns small transactions (one row updated each). An FsStorage (compaction off) takes them one snapshot
 * per append, each fsynced: append latency with the check (the storage as it is), and the check alone
 * (`HeadFile.stage` and `HeadFile.write` on a head file of its own, the same work). Then the full image of
 * the head: built by replaying the stored journal (the way before head files) and from a copy of the
 * head file. Prints the figures and the largest RSS seen.
 *
 *   node dist/scripts/bench-hub-verify.js [--rows 20000] [--txns 20000]
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Command } from 'commander';
import { loadHash } from '../src/format/index.js';
import { HeadFile } from '../src/hub/head-file.js';
import { buildImageFile, ImageCache } from '../src/hub/image-cache.js';
import { FsStorage } from '../src/hub/index.js';
import { open } from '../src/node/index.js';
import { EMPTY_POSITION } from '../src/protocol/index.js';
import { readJournal } from '../test/helpers/hub.js';
import { percentile } from './measure.js';

const opts = new Command('bench-hub-verify')
  .option('--rows <n>', 'rows of 1 KiB in the database', (v) => Number(v), 20_000)
  .option('--txns <n>', 'transactions after the load, one row updated each', (v) => Number(v), 20_000)
  .parse()
  .opts<{ rows: number; txns: number }>();

let rss = 0;
const sample = setInterval(() => {
  rss = Math.max(rss, process.memoryUsage().rss);
}, 50);
const ms = (t: number): string => `${t.toFixed(3)} ms`;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-bench-verify-'));
try {
  await loadHash();
  const dbPath = path.join(dir, 'w.db');
  const w = await open(dbPath, { history: false });
  w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)');
  w.prepare(
    'WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) INSERT INTO t(b) SELECT randomblob(1024) FROM n',
  ).run(opts.rows);
  const upd = w.prepare('UPDATE t SET b = randomblob(1024) WHERE id = abs(random()) % ? + 1');
  for (let i = 0; i < opts.txns; i++) upd.run(opts.rows);
  w.close();
  const h = await readJournal(`${dbPath}-mycelite/journal`);
  const dbBytes = fs.statSync(dbPath).size;
  console.log(
    `database ${(dbBytes / 2 ** 20).toFixed(1)} MiB, ${h.snapshots.length} snapshots, journal ${(fs.statSync(`${dbPath}-mycelite/journal`).size / 2 ** 20).toFixed(1)} MiB`,
  );

  // 1. Appends, one snapshot each.
  const st = await FsStorage.open(path.join(dir, 'data'), { compaction: false });
  const appends: number[] = [];
  let head = EMPTY_POSITION;
  for (const s of h.snapshots) {
    const t = performance.now();
    const r = await st.append('app', head, h.journalId, [s]);
    appends.push(performance.now() - t);
    if (!r.ok) throw new Error(`append ${s.header.txid} refused: ${r.reason}`);
    head = r.state.head;
  }
  // 2. The check alone, and the head file's write, on a head file of its own.
  const hf = HeadFile.open(path.join(dir, 'head'));
  hf.reset(h.journalId, EMPTY_POSITION);
  const checks: number[] = [];
  const writes: number[] = [];
  for (const s of h.snapshots) {
    const t0 = performance.now();
    const staged = hf.stage([s]);
    const t1 = performance.now();
    hf.write(staged);
    writes.push(performance.now() - t1);
    checks.push(t1 - t0);
  }
  hf.close();
  // Without the first two (the table, the load), sorted.
  const tail = (xs: number[]): number[] => xs.slice(2).sort((a, b) => a - b);
  console.log(
    `append (check, fsync, head file) p50 ${ms(percentile(tail(appends), 50))} p99 ${ms(percentile(tail(appends), 99))}`,
  );
  console.log(
    `  of which the check p50 ${ms(percentile(tail(checks), 50))} p99 ${ms(percentile(tail(checks), 99))}, the head file write p50 ${ms(percentile(tail(writes), 50))} p99 ${ms(percentile(tail(writes), 99))}`,
  );
  console.log(
    `  the load (txid 2, ${(h.snapshots[1]!.bytes.length / 2 ** 20).toFixed(1)} MiB): append ${ms(appends[1]!)}, check ${ms(checks[1]!)}, write ${ms(writes[1]!)}`,
  );

  // 3. The image of the head: replaying the stored journal, then from the head file.
  const state = (await st.state('app'))!;
  const t2 = performance.now();
  await buildImageFile(
    st,
    'app',
    state,
    state.head.txid,
    path.join(dir, 'replay'),
    path.join(dir, 'replayed.image'),
  );
  const replayMs = performance.now() - t2;
  const images = new ImageCache(st, path.join(dir, 'images'));
  const t3 = performance.now();
  const image = await images.get('app', state);
  const headMs = performance.now() - t3;
  await image.file.close();
  const same = fs
    .readFileSync(path.join(dir, 'replayed.image'))
    .equals(fs.readFileSync(path.join(dir, 'images', fs.readdirSync(path.join(dir, 'images'))[0]!)));
  console.log(
    `image of txid ${state.head.txid}: replaying the journal ${ms(replayMs)}, from the head file ${ms(headMs)} (same bytes: ${same})`,
  );
  await images.close();
  await st.close();
  console.log(`largest RSS ${(rss / 2 ** 20).toFixed(0)} MiB`);
} finally {
  clearInterval(sample);
  fs.rmSync(dir, { recursive: true, force: true });
}
