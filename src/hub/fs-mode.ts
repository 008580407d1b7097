/**
 * The mode of a database on the filesystem: `DATA/dbs/<name>/mode`, the word `single` or `shared`. It is
 * written (atomically, fsynced) before the journal that creates the database, so a journal never exists
 * without it, except a journal created before modes existed: that database is single-writer.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../files/file-system.js';
import { NodeFileSystem } from '../node/node-fs.js';
import { type DbMode, parseMode } from '../protocol/index.js';

const nodeFs = new NodeFileSystem();

/** The mode stored in `dir`: `single` when there is no mode file; throws when the file is unreadable. */
export function readModeFile(db: string, dir: string): DbMode {
  const file = path.join(dir, 'mode');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'single';
    throw new Error(`cannot read the mode of database ${db} (${file}): ${(e as Error).message}`, {
      cause: e,
    });
  }
  const mode = parseMode(text.trim());
  if (!mode) {
    throw new Error(
      `the mode file of database ${db} (${file}) holds ${JSON.stringify(text.slice(0, 40))}, not "single" or "shared": write the mode it was created with into it`,
    );
  }
  return mode;
}

/** Stores `mode` in `dir` (replacing what a creation that crashed before its journal left). */
export function writeModeFile(dir: string, mode: DbMode): void {
  const bytes = new TextEncoder().encode(`${mode}\n`);
  writeFileAtomic(nodeFs, path.join(dir, 'mode'), (f) => f.write(bytes, 0));
}
