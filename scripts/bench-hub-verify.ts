/**
 * What checking every push against the hub's head file costs, and what building new replicas' images
 * from it saves (docs/ARCHITECTURE.md, "Hub"). A writer makes a database of --rows rows of 1 KiB, then
 * --txns small transactions (one row updated each). An FsStorage (compaction off) takes them one snapshot
 * per append, each fsynced: append latency with the check (the storage as it is), and the check alone
 * (`HeadFile.stage` and `HeadFile.write` on a head file of its own, the same work). Then the full image of
 * the head: built by replaying the stored journal (the way before head files) and from a copy of the
 * head file. Prints the figures and the largest RSS of each phase (the writer's is SQLite's, in wasm).
 *
 * Snapshots are read from the writer's journal one at a time, so the RSS is the hub's work.
 *
 *   node dist/scripts/bench-hub-verify.js [--rows 20000] [--load-txns 1] [--txns 20000]
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Command } from 'commander';
import { JournalReader, loadHash, type SnapshotInfo } from '../src/format/index.js';
import { HeadFile } from '../src/hub/head-file.js';
import { buildImageFile, ImageCache } from '../src/hub/image-cache.js';
import { FsStorage } from '../src/hub/index.js';
import { fileSource } from '../src/journal/file-source.js';
import { open } from '../src/node/index.js';
import { NodeFileSystem } from '../src/node/node-fs.js';
import { EMPTY_POSITION, type EncodedSnapshot } from '../src/protocol/index.js';
import { percentile } from './measure.js';

const opts = new Command('bench-hub-verify')
  .option('--rows <n>', 'rows of 1 KiB in the database', (v) => Number(v), 20_000)
  .option('--load-txns <n>', 'transactions the rows are inserted in', (v) => Number(v), 1)
  .option('--txns <n>', 'transactions after the load, one row updated each', (v) => Number(v), 20_000)
  .parse()
  .opts<{ rows: number; loadTxns: number; txns: number }>();

let rss = 0;
const sampleRss = (): void => {
  rss = Math.max(rss, process.memoryUsage().rss);
};
const sample = setInterval(sampleRss, 50);
const ms = (t: number): string => `${t.toFixed(3)} ms`;
const mib = (b: number): string => `${(b / 2 ** 20).toFixed(0)} MiB`;

/** sha256 of a file, streamed. */
function fileHash(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    fs.createReadStream(file)
      .on('data', (d) => h.update(d))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-bench-verify-'));
try {
  await loadHash();
  const dbPath = path.join(dir, 'w.db');
  const w = await open(dbPath, { history: false });
  w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)');
  const load = w.prepare(
    'WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) INSERT INTO t(b) SELECT randomblob(1024) FROM n',
  );
  for (let i = 0; i < opts.loadTxns; i++) load.run(Math.ceil(opts.rows / opts.loadTxns));
  const upd = w.prepare('UPDATE t SET b = randomblob(1024) WHERE id = abs(random()) % ? + 1');
  for (let i = 0; i < opts.txns; i++) upd.run(opts.rows);
  w.close();
  const jf = new NodeFileSystem().open(`${dbPath}-mycelite/journal`, { readonly: true });
  const src = fileSource(jf);
  const reader = new JournalReader(src);
  const infos = [...reader.snapshots()];
  const journalId = reader.header.journalId;
  const encoded = (s: SnapshotInfo): EncodedSnapshot => {
    const { offset, ...header } = s;
    return { bytes: src.read(offset, s.length), header };
  };
  const dbBytes = fs.statSync(dbPath).size;
  console.log(
    `database ${(dbBytes / 2 ** 20).toFixed(1)} MiB, ${infos.length} snapshots, journal ${(src.size() / 2 ** 20).toFixed(1)} MiB`,
  );

  sampleRss();
  const writerRss = rss;
  rss = 0;
  // 1. Appends, one snapshot each.
  const st = await FsStorage.open(path.join(dir, 'data'), { compaction: false });
  const appends: number[] = [];
  let head = EMPTY_POSITION;
  for (const info of infos) {
    const s = encoded(info);
    const t = performance.now();
    const r = await st.append('app', head, journalId, [s]);
    appends.push(performance.now() - t);
    if (!r.ok) throw new Error(`append ${s.header.txid} refused: ${r.reason}`);
    head = r.state.head;
  }
  // 2. The check alone, and the head file's write, on a head file of its own.
  const hf = HeadFile.open(path.join(dir, 'head'));
  hf.reset(journalId, EMPTY_POSITION);
  const checks: number[] = [];
  const writes: number[] = [];
  for (const info of infos) {
    const s = encoded(info);
    const t0 = performance.now();
    const staged = hf.stage([s]);
    const t1 = performance.now();
    hf.write(staged);
    writes.push(performance.now() - t1);
    checks.push(t1 - t0);
  }
  hf.close();
  // Without the table and the load, sorted.
  const loaded = 1 + opts.loadTxns;
  const tail = (xs: number[]): number[] => xs.slice(loaded).sort((a, b) => a - b);
  const sum = (xs: number[]): number => xs.slice(1, loaded).reduce((a, b) => a + b, 0);
  console.log(
    `append (check, fsync, head file) p50 ${ms(percentile(tail(appends), 50))} p99 ${ms(percentile(tail(appends), 99))}`,
  );
  console.log(
    `  of which the check p50 ${ms(percentile(tail(checks), 50))} p99 ${ms(percentile(tail(checks), 99))}, the head file write p50 ${ms(percentile(tail(writes), 50))} p99 ${ms(percentile(tail(writes), 99))}`,
  );
  const loadBytes = infos.slice(1, loaded).reduce((n, x) => n + x.length, 0);
  console.log(
    `  the load (${opts.loadTxns} snapshots, ${(loadBytes / 2 ** 20).toFixed(1)} MiB): appends ${ms(sum(appends))}, checks ${ms(sum(checks))}, writes ${ms(sum(writes))}`,
  );

  sampleRss();
  const appendRss = rss;
  rss = 0;
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
  sampleRss();
  const replayRss = rss;
  rss = 0;
  const images = new ImageCache(st, path.join(dir, 'images'));
  const t3 = performance.now();
  const image = await images.get('app', state);
  const headMs = performance.now() - t3;
  await image.file.close();
  sampleRss();
  const imageRss = rss;
  const same =
    (await fileHash(path.join(dir, 'replayed.image'))) ===
    (await fileHash(path.join(dir, 'images', fs.readdirSync(path.join(dir, 'images'))[0]!)));
  console.log(
    `image of txid ${state.head.txid}: replaying the journal ${ms(replayMs)}, from the head file ${ms(headMs)} (same bytes: ${same})`,
  );
  console.log(
    `largest RSS: writing the database ${mib(writerRss)}, appends ${mib(appendRss)}, image by replay ${mib(replayRss)}, image from the head file ${mib(imageRss)}`,
  );
  await images.close();
  await st.close();
  jf.close();
} finally {
  clearInterval(sample);
  fs.rmSync(dir, { recursive: true, force: true });
}
