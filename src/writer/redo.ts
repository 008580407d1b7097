/**
 * Bringing a database file up to its journal after a crash (src/writer/recovery.ts, step "bring the database
 * up to the journal"): compare it with a journal state, redo the snapshots after the synced marker aside,
 * or rebuild it from the whole history.
 */

import { type FileHandle, type FileSystem, writeFileAtomic } from '../files/file-system.js';
import { ShadowFile } from '../files/shadow-file.js';
import type { ByteSource, Position } from '../format/index.js';
import { openHistory } from '../history/source.js';
import { databaseChecksum } from '../journal/db-checksum.js';
import { fileSource } from '../journal/file-source.js';
import type { JournalPaths } from '../journal/paths.js';
import { readPageSize } from '../journal/sqlite-header.js';
import { redo, redoPoint, replay } from '../restore/replay.js';

/** A database file and its journal's files. */
export interface DatabaseFiles {
  fs: FileSystem;
  paths: JournalPaths;
  dbPath: string;
}

/** True when the file is exactly the state `head` names (its size and checksum; reads the whole file). */
export function fileIs(db: FileHandle, head: Position): boolean {
  const size = db.size();
  if (size < 100) return size === 0 && head.checksum === 0n;
  const pageSize = readPageSize(db);
  return size % pageSize === 0 && databaseChecksum(db, pageSize) === head.checksum;
}

/**
 * Redoes, over the file but held aside, the snapshots after the latest point of the history at or before
 * `marker` (a file at the marker's state or a later one of the same history is then the head's state);
 * writes them to the file only if the result is exactly `head`'s state, then fsyncs. False (the file
 * untouched) when it is not, or the marker is not of this history.
 */
export function redoAside(
  ctx: Pick<DatabaseFiles, 'fs' | 'paths'>,
  db: FileHandle,
  marker: Position,
  head: Position,
  markerOffset: number | undefined,
): boolean {
  const { fs, paths } = ctx;
  if (marker.txid >= head.txid) return false;
  // With the marker's snapshot found at its offset, only the journal after it is read; else the whole
  // history, from the latest point at or before the marker.
  let source: { source: ByteSource; close(): void };
  if (markerOffset !== undefined) {
    const journal = fs.open(paths.journal, { readonly: true });
    source = { source: fileSource(journal), close: () => journal.close() };
  } else {
    source = openHistory(fs, paths, () => new Error(`${paths.journal} is missing`));
  }
  const shadow = new ShadowFile(db, fs, paths.spill);
  try {
    const from = markerOffset !== undefined ? marker : redoPoint(source.source, marker);
    if (!from) return false;
    redo(source.source, shadow, from, markerOffset);
    if (!fileIs(shadow, head)) return false;
    shadow.commit();
    db.sync();
    return true;
  } catch {
    return false; // a snapshot after it is damaged
  } finally {
    shadow.discard();
    source.close();
  }
}

/** Replays the journal into a temporary file and renames it over the database. */
export function rebuild(ctx: DatabaseFiles): void {
  const { fs, paths, dbPath } = ctx;
  const history = openHistory(fs, paths, () => new Error(`${paths.journal} is missing`));
  try {
    writeFileAtomic(fs, dbPath, (out) => replay(history.source, out));
  } finally {
    history.close();
  }
}
