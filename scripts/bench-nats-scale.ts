/**
 * Many databases on one NATS cluster (issue 20, item 5): `--dbs` databases (each created with one small
 * append) on a real 3-node cluster (R3), in the `--layout` given (`shards`: a subject each in 16 shard
 * streams; `streams`: a stream, so a Raft group, each). Then two phases, each `--seconds` long:
 *
 * - idle: nothing written, every view released: the CPU of each nats-server and of the hub (this
 *   process's NatsStorage), and their memory (RSS);
 * - trickle: `--rate` appends a second spread over `--active` databases through hub A, each followed
 *   live on hub B (another NatsStorage in this process): the lag from the append's call to B's
 *   subscriber hearing it (p50, p99, max), and the CPU of each nats-server meanwhile.
 *
 * Linux (/proc) only. Figures in docs/BENCHMARKS.md come from:
 *
 *   node dist/scripts/bench-nats-scale.js [--dbs 10000] [--layout shards] [--active 100] [--rate 50] [--seconds 20]
 */
import { parseArgs } from 'node:util';
import { NatsStorage } from '../src/hub/nats-storage.js';
import { EMPTY_POSITION, type EncodedSnapshot } from '../src/protocol/index.js';
import { makeHistory } from '../test/helpers/hub.js';
import { startNatsCluster } from '../test/helpers/nats-cluster.js';
import { cpuOf, rssOf, selfCpu } from '../test/helpers/proc.js';
import { tempDir } from '../test/helpers/util.js';

const { values } = parseArgs({
  options: {
    dbs: { type: 'string', default: '10000' },
    layout: { type: 'string', default: 'shards' },
    active: { type: 'string', default: '100' },
    rate: { type: 'string', default: '50' },
    seconds: { type: 'string', default: '20' },
    concurrency: { type: 'string', default: '64' },
  },
});
const dbs = Number(values.dbs);
const layout = values.layout as 'shards' | 'streams';
if (layout !== 'shards' && layout !== 'streams') throw new Error('--layout is shards or streams');
const active = Math.min(dbs, Number(values.active));
const rate = Number(values.rate);
const seconds = Number(values.seconds);
const concurrency = Number(values.concurrency);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const pct = (x: number): string => `${x.toFixed(1)}%`;
const mib = (x: number): string => `${x.toFixed(0)} MiB`;

// One small transaction per append: snapshot i continues snapshot i - 1 (a few hundred bytes each).
const statements = ['create table t(id integer primary key, v text)'].concat(
  Array.from({ length: 2000 }, (_, i) => `insert into t(v) values ('row ${i}')`),
);
const h = await makeHistory(`${tempDir('mycelite-bench-scale-')}/a.db`, statements);
const snaps: EncodedSnapshot[] = h.snapshots;

const cluster = await startNatsCluster(3);
try {
  const pids = [0, 1, 2].map((i) => cluster.pid(i)!);
  const names = Array.from({ length: dbs }, (_, i) => `db${i}`);
  const open = (viewIdleMs: number): Promise<NatsStorage> =>
    NatsStorage.open({ servers: cluster.servers, compaction: false, viewIdleMs, layout });

  // Create every database (its first append), `concurrency` at a time.
  const make = await open(1000);
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < names.length) {
        const db = names[next++]!;
        const r = await make.append(db, EMPTY_POSITION, h.journalId, snaps.slice(0, 1));
        if (!r.ok) throw new Error(`append to ${db} refused: ${r.reason}`);
      }
    }),
  );
  await make.close();
  const made = (performance.now() - t0) / 1000;
  console.log(`${dbs} databases (${layout}) created in ${made.toFixed(1)} s (${(dbs / made).toFixed(0)}/s)`);

  // Idle: a hub that has served every database, with its views released.
  const hub = await open(500);
  const heads = new Map<string, number>(); // txid of each active database's head
  try {
    for (let i = 0; i < active; i++) heads.set(names[i]!, 1);
    const views = async (): Promise<number> => (await hub.health()).figures?.mycelite_nats_views?.value ?? -1;
    await Promise.all(names.slice(0, active).map((db) => hub.state(db)));
    while ((await views()) > 0) await sleep(100);
    await sleep(2000);
    const hub0 = selfCpu();
    const n0 = pids.map(cpuOf);
    await sleep(seconds * 1000);
    const idleHub = ((selfCpu() - hub0) / seconds) * 100;
    const idleNodes = pids.map((p, i) => ((cpuOf(p) - n0[i]!) / seconds) * 100);
    console.log(
      `idle: nodes ${idleNodes.map(pct).join(' / ')}, hub ${pct(idleHub)}; ` +
        `memory: nodes ${pids.map(rssOf).map(mib).join(' / ')}, this process ${mib(process.memoryUsage().rss / 2 ** 20)}`,
    );
  } finally {
    await hub.close();
  }

  // Trickle: `rate` appends a second through hub A, each heard on hub B.
  const a = await open(60_000);
  const b = await open(60_000);
  try {
    const sent = new Map<string, number>(); // `db/txid` → when its append was called
    const lags: number[] = [];
    for (const db of names.slice(0, active)) {
      b.subscribe(db, (snapshots) => {
        for (const s of snapshots) {
          const at = sent.get(`${db}/${s.header.txid}`);
          if (at !== undefined) lags.push(performance.now() - at);
        }
      });
      await b.state(db);
    }
    const n0 = pids.map(cpuOf);
    const start = performance.now();
    let k = 0;
    const pending: Promise<void>[] = [];
    for (let i = 0; performance.now() - start < seconds * 1000; i++) {
      const due = start + (i * 1000) / rate;
      if (due > performance.now()) await sleep(due - performance.now());
      const db = names[k++ % active]!;
      const txid = heads.get(db)!;
      if (txid >= snaps.length) continue;
      heads.set(db, txid + 1);
      sent.set(`${db}/${txid + 1}`, performance.now());
      const at = { txid: BigInt(txid), checksum: snaps[txid - 1]!.header.postChecksum };
      pending.push(
        a.append(db, at, h.journalId, snaps.slice(txid, txid + 1)).then((r) => {
          if (!r.ok) throw new Error(`append to ${db} refused: ${r.reason}`);
        }),
      );
    }
    await Promise.all(pending);
    const wanted = pending.length;
    const deadline = Date.now() + 30_000;
    while (lags.length < wanted && Date.now() < deadline) await sleep(50);
    const busyNodes = pids.map((p, i) => ((cpuOf(p) - n0[i]!) / ((performance.now() - start) / 1000)) * 100);
    lags.sort((x, y) => x - y);
    const q = (f: number): string =>
      `${(lags[Math.min(lags.length - 1, Math.floor(f * lags.length))] ?? Number.NaN).toFixed(1)} ms`;
    console.log(
      `trickle: ${wanted} appends over ${active} databases at ${rate}/s, heard ${lags.length}: ` +
        `lag p50 ${q(0.5)}, p99 ${q(0.99)}, max ${q(1)}; nodes ${busyNodes.map(pct).join(' / ')}`,
    );
  } finally {
    await a.close();
    await b.close();
  }
} finally {
  await cluster.stop();
}
