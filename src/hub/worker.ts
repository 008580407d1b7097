/** Runs one job in a worker thread (src/hub/image-worker.ts, src/hub/compact-worker.ts) and waits for its answer. */
import { Worker } from 'node:worker_threads';

/** What a job worker posts back: its result, or the message of what failed. */
export type WorkerAnswer<T> = { ok: true; value: T } | { ok: false; message: string };

/**
 * Starts `script` (a URL next to this file) with `job` as its workerData; resolves with its answer.
 * `signal` stops the worker (the job is abandoned half done: it must leave only temporary files).
 */
export function runJob<T>(script: URL, job: unknown, what: string, signal?: AbortSignal): Promise<T> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new Error(`${what} was cancelled`));
      return;
    }
    const worker = new Worker(script, { workerData: job });
    const onAbort = (): void => {
      reject(new Error(`${what} was cancelled`));
      void worker.terminate();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const done = (): void => signal?.removeEventListener('abort', onAbort);
    worker.once('message', (r: WorkerAnswer<T>) => {
      done();
      if (r.ok) resolve(r.value);
      else reject(new Error(`${what} failed: ${r.message}`));
    });
    worker.once('error', (e) => {
      done();
      reject(e);
    });
    worker.once('exit', (code) => {
      done();
      reject(new Error(`the ${what} worker exited (${code}) without an answer`));
    });
  });
}
