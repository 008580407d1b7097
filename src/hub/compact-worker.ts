/**
 * Compaction's heavy phase off the hub's event loop (a worker thread): buildHistory (src/history/compact.ts)
 * reads the database's history and journal up to `upTo` (which no append changes) and writes
 * `history.tmp`. The swap (rename, journal rebase) is done by the storage, in the database's append order.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadHash } from '../format/index.js';
import { buildHistory, type CompactPaths, type CompactResult } from '../history/compact.js';
import { parseRetention } from '../history/policy.js';
import { NodeFileSystem } from '../node/node-fs.js';
import type { WorkerAnswer } from './worker.js';

export interface CompactJob {
  paths: CompactPaths;
  /** Retention policy text (src/history/policy.ts). */
  policy: string;
  now: number;
  upTo: bigint;
  checkpointRatio?: number;
}

export type CompactOutcome = CompactResult & {
  end?: { txid: bigint; checksum: bigint };
  /** Time appends to the database waited for the swap (ms; set by the storage, not the worker). */
  swapMs?: number;
};

export function compactJob(job: CompactJob): CompactOutcome {
  return buildHistory(
    new NodeFileSystem(),
    job.paths,
    {
      policy: parseRetention(job.policy),
      now: job.now,
      upTo: job.upTo,
      checkpointRatio: job.checkpointRatio,
    },
    () => new Error(`no journal at ${job.paths.journal}`),
  );
}

if (parentPort && workerData) {
  const port = parentPort;
  loadHash()
    .then(() => compactJob(workerData as CompactJob))
    .then(
      (value) => port.postMessage({ ok: true, value } satisfies WorkerAnswer<CompactOutcome>),
      (e: unknown) =>
        port.postMessage({ ok: false, message: (e as Error).message } satisfies WorkerAnswer<CompactOutcome>),
    );
}
