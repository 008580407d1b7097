/** Shared helpers of the correctness tests: temp dirs, hashes, replay of a database's journal. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import BetterSqlite3 from 'better-sqlite3';
import { JournalReader, memorySource } from '../../src/format/index.js';
import { nodeRuntime } from '../../src/node/index.js';
import type { Target } from '../../src/restore/replay.js';
import { restoreDatabase } from '../../src/restore/restore.js';

/** Helper scripts stay in test/helpers/ (not compiled); compiled tests live in dist/test/. */
export const HELPERS = fileURLToPath(new URL('../../../test/helpers/', import.meta.url));

const dirs: string[] = [];

/** A fresh temporary directory, removed by `cleanupTempDirs`. */
export function tempDir(prefix = 'mycelite-test-'): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  dirs.push(d);
  return d;
}

/** Removes every directory made by `tempDir`. */
export function cleanupTempDirs(): void {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
}

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** sha256 of a file's bytes. */
export function fileHash(p: string): string {
  return sha256(fs.readFileSync(p));
}

let outCounter = 0;

/** Replays the journal of `dbPath` (to `target`) into a new file and returns that file's path. */
export async function replayTo(dbPath: string, target: Target = 'latest'): Promise<string> {
  const out = `${dbPath}.replay-${outCounter++}`;
  await restoreDatabase(nodeRuntime.fs, dbPath, out, { target, force: true });
  return out;
}

/** Replays the journal of `dbPath` and returns the replay's bytes (the replay file is deleted). */
export async function replayBytes(dbPath: string, target: Target = 'latest'): Promise<Buffer> {
  const out = await replayTo(dbPath, target);
  try {
    return fs.readFileSync(out);
  } finally {
    fs.rmSync(out, { force: true });
  }
}

/** Asserts-free comparison: the replay of the journal equals the database file, byte for byte. */
export async function replayMatches(dbPath: string): Promise<{ ok: boolean; db: string; replay: string }> {
  const replay = sha256(await replayBytes(dbPath));
  const db = fileHash(dbPath);
  return { ok: replay === db, db, replay };
}

/** Runs `PRAGMA integrity_check` on `file` with native SQLite (better-sqlite3), read-only. */
export function nativeIntegrity(file: string): string {
  const db = new BetterSqlite3(file, { readonly: true, fileMustExist: true });
  try {
    const rows = db.pragma('integrity_check') as { integrity_check: string }[];
    return rows.map((r) => r.integrity_check).join('\n');
  } finally {
    db.close();
  }
}

/** Journal path of a database. */
export function journalOf(dbPath: string): string {
  return `${dbPath}-mycelite/journal`;
}

/** Asserts that replaying the journal of `dbPath` gives the database file, byte for byte. */
export async function assertReplay(dbPath: string, what: string): Promise<void> {
  const r = await replayMatches(dbPath);
  assert.ok(r.ok, `${what}: replay ${r.replay} != database ${r.db}`);
}

/** The end of the last whole snapshot of the journal at `file` (a live writer keeps zeros past it). */
export function journalEnd(file: string): number {
  const r = new JournalReader(memorySource(new Uint8Array(fs.readFileSync(file))), { merged: true });
  for (const _ of r.snapshots());
  return r.end;
}

/**
 * Resolves once `p` settles (its rejection is thrown), or rejects when it did not within `ms`: a close
 * awaited in a hook or a `finally` that hangs is a failure naming `what`, not a test waiting for ever.
 */
export async function settles<T>(p: Promise<T> | T, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([Promise.resolve(p), late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs `cleanups` last first, each bounded by `ms` (settles), all of them whatever the others do; then
 * throws the first failure. For after-hooks: kill child processes in a `finally` around it.
 */
export async function runCleanups(cleanups: (() => unknown)[], ms: number): Promise<void> {
  const errors: unknown[] = [];
  for (const [i, c] of [...cleanups].reverse().entries()) {
    try {
      await settles(c(), ms, `cleanup ${cleanups.length - i} of ${cleanups.length}`);
    } catch (e) {
      errors.push(e);
    }
  }
  cleanups.length = 0;
  if (errors.length > 0) throw errors[0];
}
