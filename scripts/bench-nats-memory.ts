/**
 * What a NATS hub's view of one database costs in memory per snapshot (issue 22: a hub's memory must not
 * grow with history). A writer makes --n small transactions (one 64-byte row inserted each); a
 * NatsStorage (compaction off) on a real single-node nats-server takes them, --batch snapshots per append.
 * Then a second NatsStorage in the same process opens the database (its view reads the whole stream):
 * the memory it added (V8's heap and ArrayBuffers, after forced GCs, less the same storage's before it read
 * the database), divided by the snapshots, is the view's cost per snapshot. The appending storage's own growth is
 * printed too.
 *
 *   node --expose-gc dist/scripts/bench-nats-memory.js [--n 100000] [--batch 1]
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { JournalReader, loadHash, type SnapshotInfo } from '../src/format/index.js';
import { NatsStorage } from '../src/hub/nats-storage.js';
import { fileSource } from '../src/journal/file-source.js';
import { open } from '../src/node/index.js';
import { NodeFileSystem } from '../src/node/node-fs.js';
import { EMPTY_POSITION, type EncodedSnapshot } from '../src/protocol/index.js';
import { startNatsCluster } from '../test/helpers/nats-cluster.js';

const { values } = parseArgs({
  options: {
    n: { type: 'string', default: '100000' },
    batch: { type: 'string', default: '1' },
  },
});
const n = Number(values.n);
const batch = Number(values.batch);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc');

/** V8's heap plus ArrayBuffers (typed arrays' memory is outside heapUsed), after forced GCs. */
function heap(): number {
  for (let i = 0; i < 3; i++) gc!();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}
const mib = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-bench-nats-mem-'));
const cluster = await startNatsCluster(1);
try {
  await loadHash();
  const dbPath = path.join(dir, 'w.db');
  const w = await open(dbPath, { history: false });
  w.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)');
  const ins = w.prepare('INSERT INTO t(b) VALUES (randomblob(64))');
  for (let i = 1; i < n; i++) ins.run();
  w.close();
  const src = fileSource(new NodeFileSystem().open(`${dbPath}-mycelite/journal`, { readonly: true }));
  const reader = new JournalReader(src);
  const infos: SnapshotInfo[] = [...reader.snapshots()];
  const journalId = reader.header.journalId;
  const encoded = (s: SnapshotInfo): EncodedSnapshot => {
    const { offset, ...header } = s;
    return { bytes: src.read(offset, s.length), header };
  };
  console.log(`${infos.length} snapshots, journal ${mib(src.size())}, ${batch} per append`);

  const options = { servers: cluster.url, compaction: false as const, timeoutMs: 60_000 };
  const a = await NatsStorage.open(options);
  const aBefore = heap();
  let head = EMPTY_POSITION;
  const t0 = performance.now();
  for (let i = 0; i < infos.length; i += batch) {
    const r = await a.append('app', head, journalId, infos.slice(i, i + batch).map(encoded));
    if (!r.ok) throw new Error(`append at ${i} refused: ${r.reason}`);
    head = r.state.head;
  }
  const secs = (performance.now() - t0) / 1000;
  const aAfter = heap();
  console.log(`appended in ${secs.toFixed(1)} s (${(infos.length / secs).toFixed(0)} snapshots/s)`);
  console.log(
    `appending hub: heap + ArrayBuffers ${mib(aBefore)} -> ${mib(aAfter)}, ${((aAfter - aBefore) / infos.length).toFixed(0)} B per snapshot`,
  );

  const b = await NatsStorage.open(options);
  await b.state('other'); // the storage's own structures, before the database's view
  const bBefore = heap();
  const t1 = performance.now();
  const state = await b.state('app');
  if (state?.head.txid !== head.txid) throw new Error(`the view holds ${state?.head.txid}, not ${head.txid}`);
  const readSecs = (performance.now() - t1) / 1000;
  const bAfter = heap();
  if (!(await b.snapshotAt('app', head.txid))) throw new Error('no header at the head');
  console.log(
    `view read in ${readSecs.toFixed(1)} s; heap + ArrayBuffers ${mib(bBefore)} -> ${mib(bAfter)}: ${((bAfter - bBefore) / infos.length).toFixed(1)} B per snapshot`,
  );
  await b.close();
  await a.close();
} finally {
  await cluster.stop();
  fs.rmSync(dir, { recursive: true, force: true });
}
