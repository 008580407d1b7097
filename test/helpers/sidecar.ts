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
}

export function spawnSidecar(args: string[], env: Record<string, string> = {}): Sidecar {
  const proc = spawn(process.execPath, [MYCELITE_BIN, 'replicate', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let err = '';
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
  });
  proc.stdout!.resume();
  const exited = new Promise<number | null>((resolve) =>
    proc.on('close', (code) => {
      onFail(new Error(`the sidecar exited (${code}) before replicating: ${err}`));
      resolve(code);
    }),
  );
  return { proc, err: () => err, ready, exited };
}
