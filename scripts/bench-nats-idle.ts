/**
 * What idle databases cost a NATS hub and its cluster (issue 20, item 5): `--dbs` databases, each one
 * small append, on a real 3-node cluster (R3). Then, with nothing written, the CPU of the hub (this
 * process's NatsStorage) and of each nats-server over `--seconds`, in two states, interleaved `--runs`
 * times: every database's view held (as before views were released: one ordered consumer each, with a
 * heartbeat a second), and every view released (`viewIdleMs`, what a hub does after 10 idle minutes).
 * The streams themselves (one Raft group each) stay in both. Linux (/proc) only.
 *
 *   node dist/scripts/bench-nats-idle.js [--dbs 200] [--seconds 15] [--runs 2]
 */
import { parseArgs } from 'node:util';
import { NatsStorage } from '../src/hub/nats-storage.js';
import { EMPTY_POSITION } from '../src/protocol/index.js';
import { makeHistory, sampleStatements } from '../test/helpers/hub.js';
import { startNatsCluster } from '../test/helpers/nats-cluster.js';
import { cpuOf, selfCpu } from '../test/helpers/proc.js';
import { tempDir } from '../test/helpers/util.js';

const { values } = parseArgs({
  options: {
    dbs: { type: 'string', default: '200' },
    seconds: { type: 'string', default: '15' },
    runs: { type: 'string', default: '2' },
  },
});
const dbs = Number(values.dbs);
const seconds = Number(values.seconds);
const runs = Number(values.runs);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const cluster = await startNatsCluster(3);
try {
  const h = await makeHistory(`${tempDir('mycelite-bench-idle-')}/a.db`, sampleStatements(1, 100));
  const names = Array.from({ length: dbs }, (_, i) => `idle${i}`);
  const make = await NatsStorage.open({ servers: cluster.servers, compaction: false, viewIdleMs: 1000 });
  const t0 = performance.now();
  for (let i = 0; i < names.length; i += 20)
    await Promise.all(
      names.slice(i, i + 20).map(async (db) => {
        const r = await make.append(db, EMPTY_POSITION, h.journalId, h.snapshots.slice(0, 1));
        if (!r.ok) throw new Error(`append to ${db} refused: ${r.reason}`);
      }),
    );
  await make.close();
  console.log(`${dbs} databases created in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  const pids = [0, 1, 2].map((i) => cluster.pid(i)!);
  /** Opens a storage that holds (`held`) or has released every database's view, then measures. */
  const measure = async (held: boolean): Promise<{ hub: number; nodes: number[] }> => {
    const st = await NatsStorage.open({
      servers: cluster.servers,
      compaction: false,
      viewIdleMs: held ? Number.POSITIVE_INFINITY : 500,
    });
    try {
      for (let i = 0; i < names.length; i += 20)
        await Promise.all(names.slice(i, i + 20).map((db) => st.state(db)));
      const views = async (): Promise<number> =>
        (await st.health()).figures?.mycelite_nats_views?.value ?? -1;
      while (!held && (await views()) > 0) await sleep(100);
      await sleep(2000); // the consumers' start settles
      const hub0 = selfCpu();
      const n0 = pids.map(cpuOf);
      await sleep(seconds * 1000);
      return {
        hub: ((selfCpu() - hub0) / seconds) * 100,
        nodes: pids.map((p, i) => ((cpuOf(p) - n0[i]!) / seconds) * 100),
      };
    } finally {
      await st.close();
    }
  };
  const pct = (x: number): string => `${x.toFixed(1)}%`;
  for (let run = 1; run <= runs; run++) {
    for (const held of run % 2 ? [true, false] : [false, true]) {
      const m = await measure(held);
      console.log(
        `run ${run}, views ${held ? 'held    ' : 'released'}: hub ${pct(m.hub)}, nodes ${m.nodes.map(pct).join(' / ')}`,
      );
    }
  }
} finally {
  await cluster.stop();
}
