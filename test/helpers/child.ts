/** A Node child process of a torture harness, its output gathered as it runs. */
import { type ChildProcess, spawn } from 'node:child_process';

export interface Proc {
  p: ChildProcess;
  out: string;
  err: string;
  closed: Promise<void>;
  killedByUs: boolean;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Starts `node ARGS` with `env` added to this process's environment. */
export function start(args: string[], env: Record<string, string> = {}): Proc {
  const p = spawn(process.execPath, args, {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  const proc: Proc = { p, out: '', err: '', closed: Promise.resolve(), killedByUs: false };
  p.stdout!.setEncoding('utf8').on('data', (d: string) => {
    proc.out += d;
  });
  p.stderr!.setEncoding('utf8').on('data', (d: string) => {
    proc.err += d;
  });
  p.stdin!.on('error', () => {});
  proc.closed = new Promise((r) => p.once('close', () => r()));
  return proc;
}
