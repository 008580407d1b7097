// A replica process for test/replica-batch.test.ts: applies the snapshots of a writer's journal after
// its own position in batches (ReplicaStore.appendBatch), printing each txid reached, until killed.
//   node batch-child.js REPLICA WRITER_JOURNAL BATCH
import { nodeRuntime } from '../../src/node/index.js';
import { ReplicaStore } from '../../src/replica/replica.js';
import { snapshotsAfter } from './replica.js';

const [replica, journal, per] = process.argv.slice(2) as [string, string, string];
const store = await ReplicaStore.open(nodeRuntime, replica);
const snaps = snapshotsAfter(journal, store.position!.txid).snaps;
for (let i = 0; i < snaps.length; i += Number(per)) {
  const batch = snaps.slice(i, i + Number(per)).map((s) => ({ bytes: s.bytes, header: s.header }));
  await store.appendBatch(batch);
  process.stdout.write(`txid ${store.position!.txid}\n`);
}
store.close();
