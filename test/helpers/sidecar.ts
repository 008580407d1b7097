/** `mycelite replicate` as a child process (tests SIGKILL it): its output and when it is replicating. */
import { type ChildProcess, spawn } from 'node:child_process';
import { MYCELITE_BIN } from './hub.js';

export interface Sidecar {
  proc: ChildProcess;
  /** stderr so far. */
  err(): string;
  /** Resolves once it printed its "replicating" line (startup done: every commit so far is in the journal). */
  ready: Promise<void>;
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>;
  /** Resolves once stderr matches `re` (rejects if the process exits first). */
  waitFor(re: RegExp): Promise<void>;
}

export function spawnSidecar(args: string[], env: Record<string, string> = {}): Sidecar {
  const proc = spawn(process.execPath, [MYCELITE_BIN, 'replicate', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let err = '';
  const waiters: { re: RegExp; resolve: () => void; reject: (e: Error) => void }[] = [];
  let onReady: () => void = () => {};
  let onFail: (e: Error) => void = () => {};
  const ready = new Promise<void>((resolve, reject) => {
    onReady = resolve;
    onFail = reject;
  });
  ready.catch(() => undefined);
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
    if (/^replicating /m.test(err)) onReady();
    for (const w of waiters.splice(0)) {
      if (w.re.test(err)) w.resolve();
      else waiters.push(w);
    }
  });
  proc.stdout!.resume();
  const exited = new Promise<number | null>((resolve) =>
    proc.on('close', (code) => {
      onFail(new Error(`the sidecar exited (${code}) before replicating: ${err}`));
      for (const w of waiters.splice(0)) w.reject(new Error(`exited (${code}) before ${w.re}: ${err}`));
      resolve(code);
    }),
  );
  const waitFor = (re: RegExp): Promise<void> =>
    re.test(err)
      ? Promise.resolve()
      : new Promise<void>((resolve, reject) => {
          waiters.push({ re, resolve, reject });
        });
  return { proc, err: () => err, ready, exited, waitFor };
}
