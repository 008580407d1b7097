/**
 * Builds a full image off the hub's event loop (a worker thread): replays a journal file (or a database's
 * compacted history joined with its live journal, from its last checkpoint) into a database file, then
 * encodes all its pages as one full-image snapshot file (src/journal/image.ts).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadHash, type SnapshotHeader } from '../format/index.js';
import { openHistory } from '../history/source.js';
import { fileSource } from '../journal/file-source.js';
import { writeImageSnapshot } from '../journal/image.js';
import { NodeFileSystem } from '../node/node-fs.js';
import { replay } from '../restore/replay.js';
import type { WorkerAnswer } from './worker.js';

export interface ImageJob {
  journal: string;
  /** The compacted history beside `journal` (may not exist yet): read the two joined (src/history/source.ts). */
  history?: string;
  replayed: string;
  out: string;
  headTxid: bigint;
}

/** Replays `job.journal` (with its history) up to `job.headTxid` and writes that state's image to `job.out`. */
export function buildImage(job: ImageJob): SnapshotHeader {
  const nodeFs = new NodeFileSystem();
  const missing = (): Error => new Error(`no journal at ${job.journal}`);
  let src: { source: ReturnType<typeof fileSource>; close(): void };
  if (job.history !== undefined) {
    src = openHistory(nodeFs, { journal: job.journal, history: job.history }, missing);
  } else {
    const f = nodeFs.open(job.journal, { readonly: true });
    src = { source: fileSource(f), close: () => f.close() };
  }
  const dbFile = nodeFs.open(job.replayed, { create: true });
  const imageFile = nodeFs.open(job.out, { create: true });
  try {
    const { snapshot: last } = replay(src.source, dbFile, { txid: job.headTxid });
    if (!last || last.txid !== job.headTxid) {
      throw new Error(`replay ended at ${last?.txid ?? 'nothing'}, not the head ${job.headTxid}`);
    }
    imageFile.truncate(0);
    let at = 0;
    // The image's body is whole pages, never compressed: none of the head snapshot's flags carry over.
    const header = writeImageSnapshot(dbFile, { ...last, flags: 0 }, (chunk) => {
      imageFile.write(chunk, at);
      at += chunk.length;
    });
    imageFile.sync();
    return header;
  } finally {
    src.close();
    dbFile.close();
    imageFile.close();
  }
}

if (parentPort && workerData) {
  const port = parentPort;
  loadHash()
    .then(() => buildImage(workerData as ImageJob))
    .then(
      (value) => port.postMessage({ ok: true, value } satisfies WorkerAnswer<SnapshotHeader>),
      (e: unknown) =>
        port.postMessage({ ok: false, message: (e as Error).message } satisfies WorkerAnswer<SnapshotHeader>),
    );
}
