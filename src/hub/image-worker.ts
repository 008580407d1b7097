/**
 * Builds a full image off the hub's event loop (a worker thread): encodes all pages of a database file as
 * one full-image snapshot file (src/journal/image.ts). The file is a copy of the hub's head file
 * (src/hub/head-file.ts), whose checksum is checked as it is encoded; or it is first replayed from a
 * journal file (or a database's compacted history joined with its live journal, from its last checkpoint).
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { FileHandle } from '../files/file-system.js';
import { hex64, loadHash, pageTerm, type SnapshotHeader } from '../format/index.js';
import { openHistory } from '../history/source.js';
import { fileSource } from '../journal/file-source.js';
import { type ImageFields, writeImageSnapshot } from '../journal/image.js';
import { NodeFileSystem } from '../node/node-fs.js';
import { replay } from '../restore/replay.js';
import type { WorkerAnswer } from './worker.js';

/** Encodes the pages of the file `pages` (a copy of a head file) as the image `fields` describes. */
export interface PagesJob {
  pages: string;
  out: string;
  fields: ImageFields;
}

/** The start of the message of an image whose pages do not give the checksum they should. */
export const PAGES_MISMATCH = 'the head file pages do not give';

/**
 * Writes the image of `job.pages` to `job.out`, checking that the pages give `job.fields.postChecksum`
 * (else throws, naming PAGES_MISMATCH).
 */
export function encodePages(job: PagesJob): SnapshotHeader {
  const nodeFs = new NodeFileSystem();
  const pages = nodeFs.open(job.pages, { readonly: true });
  const imageFile = nodeFs.open(job.out, { create: true });
  try {
    const ps = job.fields.pageSize;
    if (pages.size() !== ps * job.fields.dbPages) {
      throw new Error(
        `${PAGES_MISMATCH} txid ${job.fields.txid}: they are ${pages.size()} bytes, not ${job.fields.dbPages} pages of ${ps}`,
      );
    }
    let sum = 0n;
    // writeImageSnapshot reads whole pages, page-aligned: hash each as it goes by.
    const hashing: FileHandle = {
      path: pages.path,
      size: () => pages.size(),
      read(buf, offset) {
        const n = pages.read(buf, offset);
        for (let i = 0; i + ps <= buf.length; i += ps)
          sum ^= pageTerm(buf.subarray(i, i + ps), (offset + i) / ps + 1);
        return n;
      },
      write: () => pages.write(new Uint8Array(0), 0),
      truncate: () => undefined,
      sync: () => undefined,
      close: () => undefined,
    };
    imageFile.truncate(0);
    let at = 0;
    const header = writeImageSnapshot(hashing, job.fields, (chunk) => {
      imageFile.write(chunk, at);
      at += chunk.length;
    });
    if (sum !== job.fields.postChecksum) {
      throw new Error(
        `${PAGES_MISMATCH} checksum ${hex64(job.fields.postChecksum)} of txid ${job.fields.txid} but ${hex64(sum)}`,
      );
    }
    imageFile.sync();
    return header;
  } finally {
    pages.close();
    imageFile.close();
  }
}

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
    .then(() => {
      const job = workerData as ImageJob | PagesJob;
      return 'pages' in job ? encodePages(job) : buildImage(job);
    })
    .then(
      (value) => port.postMessage({ ok: true, value } satisfies WorkerAnswer<SnapshotHeader>),
      (e: unknown) =>
        port.postMessage({ ok: false, message: (e as Error).message } satisfies WorkerAnswer<SnapshotHeader>),
    );
}
