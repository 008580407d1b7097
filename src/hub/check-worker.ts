/**
 * The check of a stored journal's older part off the hub's event loop (a worker thread): what
 * src/hub/fs-storage.ts did not check when it opened the database (it checked the tail after its offset
 * index's last entry). Answers the first damaged snapshot, or null.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadHash } from '../format/index.js';
import { type Damage, findDamage } from './journal-check.js';
import type { WorkerAnswer } from './worker.js';

export interface CheckJob {
  db: string;
  file: string;
  /** Check the snapshots before this offset. */
  upTo: number;
}

if (parentPort && workerData) {
  const port = parentPort;
  const job = workerData as CheckJob;
  loadHash()
    .then(() => findDamage(job.db, job.file, { upTo: job.upTo }) ?? null)
    .then(
      (value) => port.postMessage({ ok: true, value } satisfies WorkerAnswer<Damage | null>),
      (e: unknown) =>
        port.postMessage({ ok: false, message: (e as Error).message } satisfies WorkerAnswer<Damage | null>),
    );
}
