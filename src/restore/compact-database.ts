/**
 * `mycelite compact`: compaction of a database's history from outside its writer. With the database
 * closed it does everything (new history, journal rewritten to start after it). While a writer has the
 * database open it writes the new history only — reading just the snapshots the writer no longer
 * changes — and the writer starts its journal after it at its next compaction (docs/ARCHITECTURE.md,
 * "History"). Runtime-neutral.
 */

import type { FileSystem } from '../files/file-system.js';
import { JournalReader, loadHash } from '../format/index.js';
import { buildHistory, type CompactResult, installHistory, rebaseJournalFile } from '../history/compact.js';
import type { RetentionPolicy } from '../history/policy.js';
import { historyEnd } from '../history/source.js';
import { fileSource } from '../journal/file-source.js';
import { type JournalPaths, journalPaths } from '../journal/paths.js';

export interface CompactDatabaseOptions {
  policy: RetentionPolicy;
  checkpointRatio?: number;
  dryRun?: boolean;
  /** The time retention ages count from (ms; default now). */
  now?: number;
  /** Called as snapshots are merged into the history: `done` of `total`. */
  onProgress?: (done: number, total: number) => void;
}

export interface CompactDatabaseResult extends CompactResult {
  /** False when a writer had the database open: its journal was left for it to trim. */
  journalRewritten: boolean;
}

export async function compactDatabase(
  fs: FileSystem,
  dbPath: string,
  options: CompactDatabaseOptions,
): Promise<CompactDatabaseResult> {
  await loadHash();
  const paths = journalPaths(dbPath);
  if (!fs.exists(paths.journal)) {
    throw new Error(
      `${dbPath} has no Mycelite journal (${paths.journal} not found): open it through Mycelite first`,
    );
  }
  if (fs.exists(paths.replica)) {
    throw new Error(
      `${dbPath} is a replica: its history is the hub's copy, compacted by the hub (mycelite serve --retain)`,
    );
  }
  const compactLock = fs.tryLockExclusive?.(paths.compactLock);
  if (fs.tryLockExclusive && !compactLock) {
    throw new Error(
      `another compaction of ${dbPath} is running (${paths.compactLock} is locked); try again later`,
    );
  }
  try {
    const writerLock = fs.tryLockExclusive?.(paths.lock);
    try {
      const alone = writerLock !== undefined || !fs.tryLockExclusive;
      const result = buildHistory(
        fs,
        paths,
        {
          policy: options.policy,
          checkpointRatio: options.checkpointRatio,
          dryRun: options.dryRun,
          now: options.now,
          ...(options.onProgress ? { onProgress: options.onProgress } : {}),
        },
        () => new Error(`${paths.journal} is missing`),
      );
      if (!result.end) {
        // Nothing new to move, but an earlier compaction may have been interrupted after it put its
        // history in place (a crash, an I/O error): finish it.
        const rewritten = alone && !options.dryRun && finishInstall(fs, paths);
        const bytesAfter = rewritten ? fs.fileSize(paths.history) + fs.fileSize(paths.journal) : 0;
        return { ...result, bytesAfter, journalRewritten: rewritten };
      }
      if (alone) {
        const bytesAfter = installHistory(fs, paths, result.end);
        return { ...result, bytesAfter, journalRewritten: true };
      }
      fs.rename(`${paths.history}.tmp`, paths.history);
      fs.syncDir(paths.history);
      return {
        ...result,
        bytesAfter: fs.fileSize(paths.history) + fs.fileSize(paths.journal),
        journalRewritten: false,
      };
    } finally {
      writerLock?.release();
    }
  } finally {
    compactLock?.release();
  }
}

/**
 * Finishes a compaction that stopped between its two renames: the history is in place but the journal
 * still starts before the history's end (readers allow that overlap), and the journal's temporary copy
 * may be left. Rewrites the journal to start after the history; deletes the stale copy. Only with the
 * writer lock held. Returns true when the journal was rewritten.
 */
function finishInstall(fs: FileSystem, paths: JournalPaths): boolean {
  const stale = `${paths.journal}.tmp`;
  if (!fs.exists(paths.history)) {
    fs.delete(stale);
    return false;
  }
  const end = historyEnd(fs, paths.history)!;
  const j = fs.open(paths.journal, { readonly: true });
  let base: bigint;
  try {
    base = new JournalReader(fileSource(j)).header.baseTxid;
  } finally {
    j.close();
  }
  if (base >= end.txid) {
    fs.delete(stale);
    return false;
  }
  rebaseJournalFile(fs, paths.journal, end);
  return true;
}
