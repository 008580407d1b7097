// A replica process for test/faults-replica-reset.test.ts: opens the replica (recovering it), prints
// "ready", resets it to the image in IMAGE (a 64-byte stream header, then the image snapshot), prints
// "done", until killed.
//   node reset-child.js REPLICA IMAGE
import * as fs from 'node:fs';
import {
  decodeFileHeader,
  decodeSnapshotHeader,
  FILE_HEADER_SIZE,
  loadHash,
  SNAPSHOT_HEADER_SIZE,
  type SnapshotHeader,
} from '../../src/format/index.js';
import { nodeRuntime } from '../../src/node/index.js';
import { ReplicaStore } from '../../src/replica/replica.js';

const [replica, image] = process.argv.slice(2) as [string, string];
await loadHash();
const bytes = new Uint8Array(fs.readFileSync(image));
const header = decodeFileHeader(bytes.subarray(0, FILE_HEADER_SIZE));
const snapshot = bytes.subarray(FILE_HEADER_SIZE);
const h = decodeSnapshotHeader(snapshot.subarray(0, SNAPSHOT_HEADER_SIZE)) as SnapshotHeader;
const store = await ReplicaStore.open(nodeRuntime, replica);
process.stdout.write('ready\n');
await store.reset(header, snapshot, h);
process.stdout.write('done\n');
store.close();
