/**
 * The storage interface everything above the format layer runs over: synchronous files, as SQLite's VFS
 * needs them. One implementation per runtime (src/node/node-fs.ts; OPFS in the browser).
 */

/** Lock levels of SQLite's locking protocol (NONE, SHARED, RESERVED, PENDING, EXCLUSIVE). */
export type LockLevel = 0 | 1 | 2 | 3 | 4;

/** An open file. Every method is synchronous and throws on failure (with the path in the message). */
export interface FileHandle {
  readonly path: string;
  /** Reads into `buf` from file `offset`; returns the bytes read (fewer at end of file). */
  read(buf: Uint8Array, offset: number): number;
  /** Writes all of `buf` at file `offset`. */
  write(buf: Uint8Array, offset: number): void;
  truncate(size: number): void;
  /** Flushes the file's data to durable storage. */
  sync(): void;
  /**
   * Starts flushing the file's data to durable storage while the caller goes on (another thread); the
   * returned function waits until it is done and throws its error. Absent: the runtime has no such
   * thread, call `sync()`. At most one flush in flight per process: wait before starting another.
   */
  syncBegin?(): () => void;
  size(): number;
  close(): void;
  /**
   * SQLite's locking protocol, interoperable with other processes where the runtime allows it. Returns
   * false when another holder prevents the lock (SQLITE_BUSY). Absent: locks are process-local only.
   */
  lock?(level: LockLevel): boolean;
  unlock?(level: 0 | 1): boolean;
  checkReserved?(): boolean;
}

/** Options of FileSystem.open. */
export interface OpenOptions {
  create?: boolean;
  readonly?: boolean;
  /** Take SQLite-protocol locks on this file (the main database). */
  sqliteLocks?: boolean;
}

/** A directory tree of files. */
/** Options of FileSystem.delete. */
export interface DeleteOptions {
  /** Make the deletion durable (fsync the directory), as `syncDir` does. */
  syncDir?: boolean;
}

export interface FileSystem {
  open(path: string, options?: OpenOptions): FileHandle;
  exists(path: string): boolean;
  /** Size in bytes of the file at `path` (0 when missing). */
  fileSize(path: string): number;
  /** Deletes the file; with `syncDir`, makes the deletion durable. A missing file is not an error. */
  delete(path: string, options?: DeleteOptions): void;
  /** Makes the creation, deletion or rename of entries in the directory holding `path` durable. */
  syncDir(path: string): void;
  mkdir(path: string): void;
  /** Atomically replaces `to` with `from`. */
  rename(from: string, to: string): void;
  /** Takes an exclusive lock held until released or the process ends; false when another holds it. */
  tryLockExclusive?(path: string): { release(): void } | undefined;
}

/** What a runtime (Node, a browser) gives Mycelite: its files, and how it names paths. */
export interface Runtime {
  fs: FileSystem;
  /** An absolute, normalized path for `path`. */
  resolve(path: string): string;
  tempPath(): string;
}

/** Reads exactly `length` bytes at `offset` (zeros past end of file). */
export function readAt(file: FileHandle, offset: number, length: number): Uint8Array {
  const buf = new Uint8Array(length);
  file.read(buf, offset);
  return buf;
}

/** Writes `data` to `path` atomically: temp file, fsync, rename, fsync directory. */
export function writeFileAtomic(fs: FileSystem, path: string, write: (file: FileHandle) => void): void {
  const tmp = `${path}.tmp-${Math.random().toString(36).slice(2)}`;
  const f = fs.open(tmp, { create: true });
  try {
    f.truncate(0);
    write(f);
    f.sync();
  } catch (e) {
    f.close();
    fs.delete(tmp);
    throw e;
  }
  f.close();
  try {
    fs.rename(tmp, path);
  } catch (e) {
    fs.delete(tmp);
    throw e;
  }
  fs.syncDir(path);
}
