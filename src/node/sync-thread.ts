/**
 * fdatasync on another thread, so that a commit flushes the writer's journal and its database at the
 * same time (docs/ARCHITECTURE.md, "Commit protocol"): `begin(fd)` hands the fd to one worker thread and
 * returns at once; the returned function blocks (Atomics.wait) until the worker is done and throws its
 * error. One request in flight per process (the VFS is synchronous, so a commit waits for its own).
 * Set MYCELITE_SYNC_THREAD=0 to fsync on the calling thread instead.
 */
import { getSystemErrorName } from 'node:util';
import { Worker } from 'node:worker_threads';

const IDLE = 0;
const REQUEST = 1;
const DONE = 2;
/** Longest wait for one fsync before giving up with an error (ms). */
const WAIT_MS = 120_000;

// state (IDLE → REQUEST by the caller → DONE by the worker → IDLE by the caller), fd, result errno.
const WORKER = `
const { workerData } = require('node:worker_threads');
const fs = require('node:fs');
const st = new Int32Array(workerData);
for (;;) {
  const s = Atomics.load(st, 0);
  if (s !== ${REQUEST}) { Atomics.wait(st, 0, s); continue; }
  let err = 0;
  try { fs.fdatasyncSync(st[1]); } catch (e) { err = typeof e.errno === 'number' && e.errno !== 0 ? e.errno : -5; }
  st[2] = err;
  Atomics.store(st, 0, ${DONE});
  Atomics.notify(st, 0);
}
`;

let state: Int32Array | undefined;
let unavailable = process.env['MYCELITE_SYNC_THREAD'] === '0';

function start(): Int32Array | undefined {
  if (state || unavailable) return state;
  try {
    const sab = new SharedArrayBuffer(12);
    const worker = new Worker(WORKER, { eval: true, workerData: sab });
    worker.unref();
    worker.on('error', () => {
      unavailable = true;
    });
    state = new Int32Array(sab);
  } catch {
    unavailable = true;
  }
  return state;
}

/** Waits for the request in flight (if any) and returns its errno (0: none or success). */
function settle(st: Int32Array): number {
  const until = performance.now() + WAIT_MS; // monotonic: applications (and tests) may replace Date.now
  while (Atomics.load(st, 0) === REQUEST) {
    if (performance.now() > until) throw new Error(`fsync on the sync thread took over ${WAIT_MS} ms`);
    Atomics.wait(st, 0, REQUEST, 1000);
  }
  const err = Atomics.load(st, 0) === DONE ? st[2]! : 0;
  Atomics.store(st, 0, IDLE);
  return err;
}

/** True when fsyncs can run on the sync thread. */
export function syncThreadAvailable(): boolean {
  return !unavailable;
}

/**
 * Starts fdatasync(fd) on the sync thread; the returned function waits for it and throws its error
 * (naming `path`). Falls back to a synchronous fdatasync when the thread cannot be had.
 */
export function beginSync(fd: number, path: string, fallback: () => void): () => void {
  const st = start();
  if (!st) {
    fallback();
    return () => {};
  }
  settle(st); // a request nobody waited for (its caller threw): it is finished first
  Atomics.store(st, 1, fd);
  Atomics.store(st, 0, REQUEST);
  Atomics.notify(st, 0);
  return () => {
    const err = settle(st);
    if (err !== 0) {
      let name: string;
      try {
        name = getSystemErrorName(err);
      } catch {
        name = `errno ${err}`;
      }
      throw new Error(`fsync ${path}: ${name}`);
    }
  };
}
