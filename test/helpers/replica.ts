/** Test helpers of the replica tests: feed a writer's journal, snapshot by snapshot, to a replica. */
import * as fs from 'node:fs';
import {
  createXxh64,
  decodeFileHeader,
  encodeSnapshotHeader,
  type FileHeader,
  JournalReader,
  memorySource,
  SNAPSHOT_HEADER_SIZE,
  SNAPSHOT_TRAILER_SIZE,
  type SnapshotHeader,
  type SnapshotInfo,
} from '../../src/format/index.js';

export { prng } from './prng.js';

/** A snapshot read from a journal file: its header and its encoded bytes. */
export interface Encoded {
  header: SnapshotInfo;
  bytes: Uint8Array;
}

/** Reads the snapshots of the journal at `journalPath` after txid `after`. */
export function snapshotsAfter(journalPath: string, after: bigint): { file: FileHeader; snaps: Encoded[] } {
  const bytes = new Uint8Array(fs.readFileSync(journalPath));
  const reader = new JournalReader(memorySource(bytes));
  const snaps: Encoded[] = [];
  for (const s of reader.snapshots()) {
    if (s.txid <= after) continue;
    snaps.push({ header: s, bytes: bytes.slice(s.offset, s.offset + s.length) });
  }
  return { file: decodeFileHeader(bytes.subarray(0, 64)), snaps };
}

/** The same snapshot with header fields changed and a recomputed trailer (a valid but lying snapshot). */
export function reencode(s: Encoded, change: Partial<SnapshotHeader>): Encoded {
  const h: SnapshotHeader = { ...s.header, ...change };
  const header = encodeSnapshotHeader(h);
  const out = s.bytes.slice();
  out.set(header, 0);
  const bodyEnd = out.length - SNAPSHOT_TRAILER_SIZE;
  const hash = createXxh64();
  hash.update(out.subarray(SNAPSHOT_HEADER_SIZE, bodyEnd));
  hash.update(header);
  new DataView(out.buffer).setBigUint64(bodyEnd, hash.digest(), true);
  return { header: { ...h, offset: s.header.offset }, bytes: out };
}
