/**
 * A failed command leaves the directory as it found it: what an open that failed created (an empty
 * database file, its `-mycelite/` directory with a lock and an empty journal) is removed — but only while
 * it holds nothing (no snapshot in its journal, an empty database file) and no one holds its writer lock,
 * so that another process opening the same new database at the same moment keeps what it made.
 * @module
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FILE_HEADER_SIZE } from '../format/constants.js';
import { tryExclusiveFileLock } from './file-lock.js';

/**
 * Runs `run`, which opens (and may create) the database or replica `file`; when it rejects, removes the
 * `file-mycelite/` directory and the (empty) file it created, if they still hold nothing, then rejects
 * with the same error.
 */
export async function asFound<T>(file: string, run: () => Promise<T>): Promise<T> {
  const db = path.resolve(file);
  const dir = `${db}-mycelite`;
  const hadFile = fs.existsSync(db);
  const hadDir = fs.existsSync(dir);
  try {
    return await run();
  } catch (e) {
    if (!hadDir) removeUnused(db, dir, !hadFile);
    throw e;
  }
}

function size(file: string): number | undefined {
  try {
    return fs.statSync(file).size;
  } catch {
    return undefined;
  }
}

function removeUnused(db: string, dir: string, fileToo: boolean): void {
  const emptyFile = fileToo && size(db) === 0;
  if (!fs.existsSync(dir)) {
    if (emptyFile) fs.rmSync(db, { force: true });
    return;
  }
  if ((size(path.join(dir, 'journal')) ?? 0) > FILE_HEADER_SIZE) return; // it holds snapshots: keep it
  let lock: ReturnType<typeof tryExclusiveFileLock> | undefined;
  try {
    lock = tryExclusiveFileLock(path.join(dir, 'lock'));
    if (lock === null) return; // another process has it open: it is theirs
  } catch {
    // No lock addon (the open failed for that): no Mycelite process here can hold the lock either.
  }
  try {
    if (emptyFile) fs.rmSync(db, { force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  } finally {
    lock?.release();
  }
}
