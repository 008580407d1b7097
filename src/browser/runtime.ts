/**
 * The browser runtime of `openWith`: files in an OPFS pool, temporary files (under /tmp/) in memory.
 * Paths are absolute, '/'-separated names inside the pool; they never reach a real file system.
 */
import type { DeleteOptions, FileHandle, FileSystem, OpenOptions, Runtime } from '../files/file-system.js';
import { MemoryFileSystem } from './memory-fs.js';

/** Where temporary files live: memory, not OPFS. */
export const TEMP_DIR = '/tmp/';

/** Sends each path to the file system that holds it: /tmp/... to memory, the rest to `durable`. */
class RoutedFileSystem implements FileSystem {
  constructor(
    private readonly durable: FileSystem,
    readonly memory: MemoryFileSystem,
  ) {}

  private pick(path: string): FileSystem {
    return path.startsWith(TEMP_DIR) ? this.memory : this.durable;
  }

  open(path: string, options?: OpenOptions): FileHandle {
    return this.pick(path).open(path, options);
  }
  exists(path: string): boolean {
    return this.pick(path).exists(path);
  }
  fileSize(path: string): number {
    return this.pick(path).fileSize(path);
  }
  delete(path: string, options?: DeleteOptions): void {
    this.pick(path).delete(path, options);
  }
  syncDir(path: string): void {
    this.pick(path).syncDir(path);
  }
  mkdir(path: string): void {
    this.pick(path).mkdir(path);
  }
  rename(from: string, to: string): void {
    const fs = this.pick(from);
    if (fs !== this.pick(to)) throw new Error(`rename ${from} to ${to}: not within one file system`);
    fs.rename(from, to);
  }
  tryLockExclusive(path: string): { release(): void } | undefined {
    return this.durable.tryLockExclusive?.(path);
  }
}

/** Normalizes `p` to an absolute path without '.', '..' or empty segments. */
export function normalizePath(p: string): string {
  const out: string[] = [];
  for (const s of p.split('/')) {
    if (s === '' || s === '.') continue;
    if (s === '..') out.pop();
    else out.push(s);
  }
  return `/${out.join('/')}`;
}

let counter = 0;

/** A Runtime over `durable` (an OpfsPoolFileSystem in the worker), with an in-memory /tmp/. */
export function browserRuntime(durable: FileSystem): Runtime & { memory: MemoryFileSystem } {
  const memory = new MemoryFileSystem();
  return {
    fs: new RoutedFileSystem(durable, memory),
    memory,
    resolve: normalizePath,
    tempPath: () => `${TEMP_DIR}sqlite-${Date.now()}-${counter++}`,
  };
}
