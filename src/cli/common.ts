/**
 * What the CLI commands share: how errors are reported, how paths are checked, how values are printed.
 */

import * as fs from 'node:fs';
import * as path from 'node:path';
import { InvalidArgumentError } from 'commander';
import { parseHubUrls } from '../client/hub-urls.js';
import { JournalFormatError } from '../format/index.js';

/** Ends a command with an exit code; its message (if any) was already printed. */
export class CliExit extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
    this.name = 'CliExit';
  }
}

/** A command used wrongly (a missing or bad option): one line, exit code 2, nothing done. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** The message of `e` followed by the messages of its causes, joined with ': ' (repeats left out). */
export function describeError(e: unknown): string {
  const parts: string[] = [];
  const seen = new Set<unknown>();
  for (let err: unknown = e; err !== undefined && err !== null && !seen.has(err); ) {
    seen.add(err);
    const message = err instanceof Error ? err.message : String(err);
    if (message !== '' && !parts.some((p) => p.includes(message))) parts.push(message);
    err = err instanceof Error ? err.cause : undefined;
  }
  return parts.join(': ') || 'unknown error';
}

/** Stack traces of `e` and its causes (for MYCELITE_DEBUG=1). */
export function describeStack(e: unknown): string {
  const parts: string[] = [];
  const seen = new Set<unknown>();
  for (let err: unknown = e; err !== undefined && err !== null && !seen.has(err); ) {
    seen.add(err);
    parts.push(err instanceof Error ? (err.stack ?? err.message) : String(err));
    err = err instanceof Error ? err.cause : undefined;
  }
  return parts.join('\nCaused by: ');
}

export function writeOut(text: string): void {
  process.stdout.write(text);
}

export function writeErr(text: string): void {
  process.stderr.write(text);
}

/** Throws a clear error unless the directory that would hold `file` exists. */
export function requireParentDirectory(file: string): void {
  const dir = path.dirname(path.resolve(file));
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dir);
  } catch {
    throw new Error(`cannot open ${file}: directory ${dir} does not exist`);
  }
  if (!stat.isDirectory()) throw new Error(`cannot open ${file}: ${dir} is not a directory`);
  if (fs.existsSync(file) && fs.statSync(file).isDirectory()) {
    throw new Error(`cannot open ${file}: it is a directory, not a database file`);
  }
}

/** Where a journal problem is, when the error says (JournalFormatError anywhere in the cause chain). */
export function journalErrorLocation(e: unknown): { offset: number; txid: string | undefined } | undefined {
  for (let err: unknown = e; err instanceof Error; err = err.cause) {
    if (err instanceof JournalFormatError) {
      return { offset: err.offset, txid: err.txid === undefined ? undefined : err.txid.toString() };
    }
  }
  return undefined;
}

/** A bigint as a JSON number when it is exactly representable, else as a decimal string. */
export function jsonInteger(n: bigint): number | string {
  return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER)
    ? Number(n)
    : n.toString();
}

/** Bytes as lowercase hex. */
export function toHex(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

/** A timestamp (ms since the epoch) as ISO-8601 UTC. */
export function isoTime(ms: number): string {
  return new Date(ms).toISOString();
}

/** Parses a non-negative integer argument (a txid). */
export function parseTxid(value: string): bigint {
  if (!/^\d+$/.test(value.trim())) throw new Error(`"${value}" is not a txid (a whole number such as 3)`);
  return BigInt(value.trim());
}

const ISO_8601 = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/i;

/**
 * Parses an ISO-8601 date or date-time (`2025-03-01`, `2025-03-01T12:30:00Z`, `…+02:00`). One rule for
 * all: without a zone it is local time, and a date alone is local midnight (JavaScript reads a date alone
 * as UTC but a date-time without zone as local; `2025-03-01` and `2025-03-01T00:00` must be one time).
 * Returns ms since the epoch.
 */
export function parseIsoTime(value: string): number {
  const v = value.trim();
  const local = /^\d{4}-\d{2}-\d{2}$/.test(v) ? `${v}T00:00` : v.replace(' ', 'T');
  const ms = ISO_8601.test(v) ? Date.parse(local) : Number.NaN;
  if (Number.isNaN(ms) || !isCalendarDate(v)) {
    throw new Error(`"${value}" is not an ISO-8601 date or time (for example 2025-03-01T12:30:00Z)`);
  }
  return ms;
}

/** Whether the YYYY-MM-DD at the start of `v` names a real day (Date.parse accepts 2025-02-30). */
function isCalendarDate(v: string): boolean {
  const y = Number(v.slice(0, 4));
  const m = Number(v.slice(5, 7));
  const d = Number(v.slice(8, 10));
  const date = new Date(Date.UTC(y, m - 1, d));
  return date.getUTCMonth() === m - 1 && date.getUTCDate() === d;
}

/** The hub URLs of a command's argument (commas between several); a bad one is a usage error. */
export function hubUrlsOf(value: string): string[] {
  try {
    return parseHubUrls(value);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** Wraps a value parser so that its error becomes commander's "invalid argument" (exit 2, with usage). */
export const asUsage =
  <T>(parse: (v: string) => T) =>
  (value: string): T => {
    try {
      return parse(value);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
  };

/** Every command's words for a hub it cannot reach: what failed, and what to check. */
export function unreachableHub(url: string, detail: string): string {
  return `cannot reach the hub at ${url} (${detail}): check the URL and that \`mycelite serve\` is running`;
}

/**
 * A progress line on stderr for long work, when stderr is a terminal (and not with --json): `what: done/total
 * (pct%)`, redrawn at most every 100 ms, and wiped by `end()`. Elsewhere it prints nothing.
 */
export function progressLine(
  what: string,
  quiet = false,
): { update(done: number, total: number): void; end(): void } {
  const tty = process.stderr.isTTY === true && !quiet;
  let last = 0;
  let shown = false;
  return {
    update(done, total) {
      if (!tty) return;
      const now = Date.now();
      if (shown && now - last < 100 && done < total) return;
      last = now;
      shown = true;
      const pct = total === 0 ? 100 : Math.floor((done / total) * 100);
      process.stderr.write(`\r\x1b[K${what}: ${done}/${total} (${pct}%)`);
    },
    end() {
      if (shown) process.stderr.write('\r\x1b[K');
      shown = false;
    },
  };
}
