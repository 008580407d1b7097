/**
 * Builds a full image off the hub's event loop (a worker thread): replays a journal file into a database
 * file, then encodes all its pages as one full-image snapshot file (src/journal/image.ts).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadHash, type SnapshotHeader } from '../format/index.js';
import { fileSource } from '../journal/file-source.js';
import { writeImageSnapshot } from '../journal/image.js';
import { NodeFileSystem } from '../node/node-fs.js';
import { replay } from '../restore/replay.js';

export interface ImageJob {
  journal: string;
  replayed: string;
  out: string;
  headTxid: bigint;
}

export type ImageResult = { ok: true; header: SnapshotHeader } | { ok: false; message: string };

/** Replays `job.journal` and writes the image of its last snapshot to `job.out`. */
export function buildImage(job: ImageJob): SnapshotHeader {
  const nodeFs = new NodeFileSystem();
  const src = nodeFs.open(job.journal, { readonly: true });
  const dbFile = nodeFs.open(job.replayed, { create: true });
  const imageFile = nodeFs.open(job.out, { create: true });
  try {
    const { snapshot: last } = replay(fileSource(src), dbFile);
    if (!last || last.txid !== job.headTxid) {
      throw new Error(`replay ended at ${last?.txid ?? 'nothing'}, not the head ${job.headTxid}`);
    }
    imageFile.truncate(0);
    let at = 0;
    const header = writeImageSnapshot(dbFile, last, (chunk) => {
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
      (header) => port.postMessage({ ok: true, header } satisfies ImageResult),
      (e: unknown) => port.postMessage({ ok: false, message: (e as Error).message } satisfies ImageResult),
    );
}
