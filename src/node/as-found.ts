/**
 * A failed command leaves the directory as it found it: what an open that failed created (an empty
 * database file, its `-mycelite/` directory with a lock and an empty journal) is removed.
 * @module
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * Runs `run`; when it rejects, removes each of `paths` that did not exist before it ran (a directory with
 * what is in it), then rejects with the same error.
 */
export async function asFound<T>(paths: readonly string[], run: () => Promise<T>): Promise<T> {
  const created = paths.map((p) => path.resolve(p)).filter((p) => !fs.existsSync(p));
  try {
    return await run();
  } catch (e) {
    for (const p of created) fs.rmSync(p, { recursive: true, force: true });
    throw e;
  }
}

/** The database file and its `-mycelite/` directory: what opening `file` may create. */
export function databaseFiles(file: string): string[] {
  return [file, `${file}-mycelite`];
}
