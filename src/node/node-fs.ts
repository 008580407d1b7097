/** The FileSystem interface over node:fs (synchronous calls, real files, real fsync). */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { DeleteOptions, FileHandle, FileSystem, LockLevel, OpenOptions } from '../files/file-system.js';
import { fileSizeOf, tryExclusiveFileLock } from './file-lock.js';
import { SqliteFileLocks } from './sqlite-locks.js';
import { beginSync, syncThreadAvailable } from './sync-thread.js';

function wrap<T>(what: string, p: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw new Error(`${what} ${p}: ${(e as Error).message}`, { cause: e });
  }
}

class NodeFile implements FileHandle {
  constructor(
    readonly path: string,
    readonly fd: number,
  ) {}

  lock?: (level: LockLevel) => boolean;
  unlock?: (level: 0 | 1) => boolean;
  checkReserved?: () => boolean;
  private locks: SqliteFileLocks | undefined;

  /** Takes SQLite's POSIX (OFD) byte-range locks, so native SQLite processes see our transactions. */
  withSqliteLocks(): this {
    const locks = new SqliteFileLocks(this.fd);
    this.locks = locks;
    this.lock = (level) => (level === 0 ? locks.unlock(0) : locks.lock(level));
    this.unlock = (level) => locks.unlock(level);
    this.checkReserved = () => locks.checkReserved();
    // The addon is loaded for the locks: SQLite asks a database's size at every transaction.
    this.size = () => wrap('stat', this.path, () => fileSizeOf(this.fd));
    return this;
  }

  read(buf: Uint8Array, offset: number): number {
    let done = 0;
    while (done < buf.length) {
      const n = wrap('read', this.path, () =>
        fs.readSync(this.fd, buf, done, buf.length - done, offset + done),
      );
      if (n === 0) break;
      done += n;
    }
    if (done < buf.length) buf.fill(0, done);
    return done;
  }

  write(buf: Uint8Array, offset: number): void {
    let done = 0;
    while (done < buf.length) {
      done += wrap('write', this.path, () =>
        fs.writeSync(this.fd, buf, done, buf.length - done, offset + done),
      );
    }
  }

  truncate(size: number): void {
    wrap('truncate', this.path, () => fs.ftruncateSync(this.fd, size));
  }

  sync(): void {
    wrap('fsync', this.path, () => fs.fdatasyncSync(this.fd));
  }

  syncBegin?: () => () => void = syncThreadAvailable()
    ? () => beginSync(this.fd, this.path, () => this.sync())
    : undefined;

  size(): number {
    return wrap('stat', this.path, () => fs.fstatSync(this.fd).size);
  }

  close(): void {
    this.locks?.close();
    wrap('close', this.path, () => fs.closeSync(this.fd));
  }
}

/** node:fs as a Mycelite FileSystem. */
export class NodeFileSystem implements FileSystem {
  open(p: string, options: OpenOptions = {}): FileHandle {
    const flags = options.readonly ? 'r' : options.create ? fs.constants.O_RDWR | fs.constants.O_CREAT : 'r+';
    const fd = wrap('open', p, () => fs.openSync(p, flags, 0o644));
    const file = new NodeFile(p, fd);
    return options.sqliteLocks ? file.withSqliteLocks() : file;
  }

  tryLockExclusive(p: string): { release(): void } | undefined {
    return tryExclusiveFileLock(p) ?? undefined;
  }

  exists(p: string): boolean {
    return fs.existsSync(p);
  }

  fileSize(p: string): number {
    // No exception for a missing file: SQLite asks about its (usually absent) journal on every read.
    return fs.statSync(p, { throwIfNoEntry: false })?.size ?? 0;
  }

  delete(p: string, { syncDir = false }: DeleteOptions = {}): void {
    try {
      fs.unlinkSync(p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
        throw new Error(`delete ${p}: ${(e as Error).message}`);
      return;
    }
    if (syncDir) this.syncDir(p);
  }

  syncDir(p: string): void {
    const dir = path.dirname(p);
    const fd = wrap('open directory', dir, () => fs.openSync(dir, 'r'));
    try {
      wrap('fsync directory', dir, () => fs.fsyncSync(fd));
    } finally {
      fs.closeSync(fd);
    }
  }

  mkdir(p: string): void {
    wrap('mkdir', p, () => fs.mkdirSync(p, { recursive: true }));
  }

  rename(from: string, to: string): void {
    wrap('rename', from, () => fs.renameSync(from, to));
  }
}
