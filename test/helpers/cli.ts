/** Runs the `mycelite` command line as a child process and collects its output. */
import { type ChildProcess, spawn } from 'node:child_process';
import { MYCELITE_BIN } from './hub.js';

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `mycelite ARGS` with `env` added to this process's environment; `track` receives the child. */
export function runCli(
  args: string[],
  env: Record<string, string> = {},
  track?: (proc: ChildProcess) => void,
): Promise<CliRun> {
  const proc = spawn(process.execPath, [MYCELITE_BIN, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  track?.(proc);
  let stdout = '';
  let stderr = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
  });
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  return new Promise((resolve) => proc.on('close', (status) => resolve({ status, stdout, stderr })));
}
