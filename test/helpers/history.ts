/** Helpers of the history tests: a fake clock for the writer, compaction, restore hashes, leftovers. */
import * as fs from 'node:fs';
import { roleOf } from '../../src/files/faulty-fs.js';
import type { FileSystem } from '../../src/files/file-system.js';
import { JournalReader, loadHash, type SnapshotInfo } from '../../src/format/index.js';
import { buildHistory, type CompactOptions, installHistory } from '../../src/history/compact.js';
import { openHistory } from '../../src/history/source.js';
import { journalPaths } from '../../src/journal/paths.js';
import { NodeFileSystem } from '../../src/node/node-fs.js';
import type { Target } from '../../src/restore/replay.js';
import { logDatabase, restoreDatabase } from '../../src/restore/restore.js';
import { sha256 } from './util.js';

export const nodeFs = new NodeFileSystem();

/**
 * Runs `fn` with Date.now replaced by a clock the caller sets (`clock.now = …`): the writer stamps each
 * snapshot with Date.now(), so this gives snapshots chosen timestamps.
 */
export async function withClock<T>(start: number, fn: (clock: { now: number }) => Promise<T>): Promise<T> {
  const real = Date.now;
  const clock = { now: start };
  Date.now = () => clock.now;
  try {
    return await fn(clock);
  } finally {
    Date.now = real;
  }
}

const missing = (): Error => new Error('journal missing');

/** buildHistory + installHistory on the database at `db` (with `fs`, default the plain one). */
export function compact(db: string, options: CompactOptions, fs: FileSystem = nodeFs) {
  const paths = journalPaths(db);
  const r = buildHistory(fs, paths, options, missing);
  const bytes = r.end ? installHistory(fs, paths, r.end) : undefined;
  return { ...r, bytes };
}

/** Every snapshot of the joined history (history file + live journal) of `db`. */
export async function points(db: string): Promise<SnapshotInfo[]> {
  await loadHash();
  const hs = openHistory(nodeFs, journalPaths(db), missing);
  try {
    return [...new JournalReader(hs.source, { merged: true }).snapshots()];
  } finally {
    hs.close();
  }
}

/** Txids `mycelite log` lists for `db`. */
export async function loggedTxids(db: string): Promise<bigint[]> {
  const out: bigint[] = [];
  for await (const e of logDatabase(nodeFs, db)) out.push(e.txid);
  return out;
}

let n = 0;
/** sha256 of the database restored to `target`. */
export async function restoreHash(db: string, target: Target): Promise<string> {
  const out = `${db}.restore-${process.pid}-${n++}`;
  try {
    await restoreDatabase(nodeFs, db, out, { target, force: true });
    return sha256(fs.readFileSync(out));
  } finally {
    fs.rmSync(out, { force: true });
  }
}

/** Temporary files a compaction leaves only while it runs (or when it was killed). */
export function leftovers(db: string): string[] {
  const p = journalPaths(db);
  return [`${p.history}.tmp`, `${p.journal}.tmp`, p.scratch].filter((f) => fs.existsSync(f));
}

/** Fault labels for the compaction's files (src/files/faulty-fs.ts roleOf knows the writer's only). */
export function historyRole(path: string): string {
  if (/-mycelite\/history$/.test(path)) return 'history';
  if (/-mycelite\/history\.tmp$/.test(path)) return 'history-tmp';
  if (/-mycelite\/journal\.tmp$/.test(path)) return 'journal-tmp';
  if (/-mycelite\/compact-scratch$/.test(path)) return 'scratch';
  return roleOf(path);
}

/** sha256 of each of the database's files (journal, history, db) that exists. */
export function fileHashes(db: string): Record<string, string> {
  const p = journalPaths(db);
  const out: Record<string, string> = {};
  for (const f of [db, p.journal, p.history]) {
    if (fs.existsSync(f)) out[f] = sha256(fs.readFileSync(f));
  }
  return out;
}
