/** What a benchmark reads of a process from Linux's /proc: its CPU time and resident memory. */
import * as fs from 'node:fs';

/** Clock ticks per second of /proc/PID/stat's times (USER_HZ). */
const TICK = 100;

/** CPU seconds (user + system) of process `pid` so far. */
export function cpuOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / TICK;
}

/** CPU seconds (user + system) of this process so far. */
export function selfCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Resident memory of process `pid` now (MiB). */
export function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) / 1024;
}
