/**
 * Synchronous, non-blocking POSIX byte-range (fcntl) locks for Node.js.
 *
 * node:fs has no fcntl(2), so this module wraps a tiny N-API addon of ours (native/file_lock.c). The
 * package ships it prebuilt for linux-x64 (`native/prebuilds/`, made by `npm pack`); elsewhere, and in a
 * clone of the repository, the `install` script builds it with node-gyp.
 *
 * Two flavours of lock exist; the module picks one for the whole process at load time
 * ({@link lockMode}):
 *
 * - **OFD locks** (`F_OFD_SETLK` / `F_OFD_GETLK`, Linux ≥ 3.15): owned by the *open file
 *   description* (the thing `fs.openSync` creates), not by the process. Closing some other fd of
 *   the same file in this process does not drop them, and two fds opened separately in this
 *   process conflict with each other like two processes would. They do conflict with the classic
 *   POSIX locks that native SQLite (sqlite3 CLI, better-sqlite3, ...) takes in other processes.
 * - **Classic POSIX locks** (`F_SETLK` / `F_GETLK`), the fallback elsewhere: owned by the
 *   *process*. Two fds of one file in this process never conflict with each other, and — the
 *   classic trap — closing ANY fd of the file in this process silently releases ALL of this
 *   process's locks on that file. A VFS running in classic mode must therefore keep one lock
 *   owner per file per process and never close another fd of a locked file while it holds locks
 *   (SQLite's os_unix.c defers such closes for the same reason).
 *
 * Set `MYCELITE_FILE_LOCKS=classic` to force classic locks (for tests), or `MYCELITE_FILE_LOCKS=ofd`
 * to fail loudly when OFD locks are unavailable.
 *
 * All calls are non-blocking (`F_SETLK`, never `F_SETLKW`). Windows is not supported.
 *
 * @module
 */
import { closeSync, existsSync, constants as fsConstants, fstatSync, openSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { useKeptDeflate } from '../format/compress.js';

/** The kind of lock to request: shared (`F_RDLCK`), exclusive (`F_WRLCK`) or release (`F_UNLCK`). */
export type LockKind = 'read' | 'write' | 'unlock';

/** Which lock flavour this process uses; see the module documentation. */
export type LockMode = 'ofd' | 'classic';

/** A lock held by someone else that prevents a requested lock, as reported by `F_GETLK`. */
export interface LockHolder {
  /** Kind of the conflicting lock. */
  readonly kind: 'read' | 'write';
  /**
   * Process id of the holder for a classic POSIX lock, or -1 when the holder is an OFD lock
   * (which has no owning process).
   */
  readonly pid: number;
  /** First byte of the conflicting lock. */
  readonly start: number;
  /** Length of the conflicting lock in bytes; 0 means "to end of file and beyond". */
  readonly length: number;
}

/** Error thrown for an fcntl failure other than a lock conflict (e.g. EBADF, EINVAL, ENOLCK). */
export class FileLockError extends Error {
  /** errno name, e.g. `'EBADF'`. */
  readonly code: string;
  /** Positive errno number. */
  readonly errno: number;
  /** The system call that failed, always `'fcntl'`. */
  readonly syscall = 'fcntl';

  /**
   * @param message - Human-readable description including the operation and its arguments.
   * @param errno - Positive errno number reported by the system call.
   */
  constructor(message: string, errno: number) {
    const code = errnoName(errno);
    super(`${message}: ${code} (errno ${errno})`);
    this.name = 'FileLockError';
    this.code = code;
    this.errno = errno;
  }
}

/** Error thrown by {@link exclusiveFileLock} when another owner already holds the lock. */
export class FileLockBusyError extends Error {
  /** errno-like code, always `'EBUSY'`. */
  readonly code = 'EBUSY';
  /** Path of the lock file. */
  readonly path: string;
  /** The conflicting holder, when the OS could report it. */
  readonly holder: LockHolder | null;

  /**
   * @param path - The lock file that is busy.
   * @param holder - The conflicting holder, if known.
   */
  constructor(path: string, holder: LockHolder | null) {
    let who = 'another owner';
    if (holder !== null && holder.pid === process.pid) who = 'this process';
    else if (holder !== null) who = holder.pid > 0 ? `process ${holder.pid}` : 'another open file';
    super(`${path} is locked by ${who}`);
    this.name = 'FileLockBusyError';
    this.path = path;
    this.holder = holder;
  }
}

interface NativeBinding {
  setlk(fd: number, type: number, start: number, len: number, ofd: boolean): number;
  getlk(
    fd: number,
    type: number,
    start: number,
    len: number,
    ofd: boolean,
  ): null | number | { type: number; pid: number; start: number; len: number };
  /** Absent from an addon built before it (a stale native/build): the callers fall back. */
  lockShared?(fd: number, guard: number, start: number, len: number, ofd: boolean): number;
  /** The file's size, or -errno; absent from an addon built before it. */
  fsize?(fd: number): number;
  /**
   * Raw DEFLATE of `body` as src/format/compress.ts makes it, from a stream the addon keeps; null when
   * not smaller. Absent from an addon built before it, and where Node's zlib was not found.
   */
  deflateRaw?(body: Uint8Array): Uint8Array | null;
  readonly ofdAvailable: boolean;
}

/**
 * Loads the addon on first use, not on import, so what needs no lock (the CLI's `--help`, `log`,
 * `restore`, `verify`) works where it is missing. node-gyp-build picks `native/build/Release/` (built
 * here) or the prebuilt binary for this platform in `native/prebuilds/` (shipped in the package).
 */
let loaded: NativeBinding | null = null;
function binding(): NativeBinding {
  if (loaded === null) {
    loaded = loadBinding();
    // Snapshot bodies are compressed by the addon's kept stream from here on (same bytes).
    if (loaded.deflateRaw) useKeptDeflate(loaded.deflateRaw);
  }
  return loaded;
}

function loadBinding(): NativeBinding {
  const require = createRequire(import.meta.url);
  const dir = nativeDir();
  try {
    return (require('node-gyp-build') as (dir: string) => NativeBinding)(dir);
  } catch (err) {
    const cause = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new Error(
      `Mycelite's file-lock addon could not be loaded for ${process.platform}-${process.arch} ` +
        `(${cause}). This package ships a prebuilt one for ${PREBUILT_PLATFORMS.join(', ')} only; ` +
        'elsewhere it is built from native/ when installed, which needs python3, make and a C compiler: ' +
        'install them and run `npm rebuild mycelite`.',
      { cause: err },
    );
  }
}

/** Platforms whose prebuilt addon `npm pack` puts in the package (the packing machine's own). */
const PREBUILT_PLATFORMS = ['linux-x64'];

/** `<package root>/native`: this file is at src/node/ (sources) or dist/src/node/ (compiled). */
function nativeDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'native');
    if (existsSync(join(candidate, 'binding.gyp'))) return candidate;
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new Error(`Mycelite's native/ folder was not found above ${fileURLToPath(import.meta.url)}`);
}

let mode: LockMode | null = null;

/** The lock flavour used by every function of this module in this process (loads the addon). */
export function lockMode(): LockMode {
  if (mode !== null) return mode;
  const wanted = process.env['MYCELITE_FILE_LOCKS'];
  const ofdAvailable = binding().ofdAvailable;
  if (wanted === 'ofd' && !ofdAvailable) {
    throw new Error(
      'MYCELITE_FILE_LOCKS=ofd, but OFD locks (F_OFD_SETLK, Linux >= 3.15) are unavailable here',
    );
  }
  mode = wanted === 'classic' || !ofdAvailable ? 'classic' : 'ofd';
  return mode;
}

/** True when open-file-description locks (`F_OFD_SETLK`) are in use, false for classic POSIX locks. */
export function ofdLocks(): boolean {
  return lockMode() === 'ofd';
}

const TYPE_CODE: Readonly<Record<LockKind, number>> = { read: 0, write: 1, unlock: 2 };
const EAGAIN = osConstants.errno.EAGAIN;
const EACCES = osConstants.errno.EACCES;

let errnoNames: Map<number, string> | null = null;
function errnoName(errno: number): string {
  if (errnoNames === null) {
    errnoNames = new Map();
    for (const [name, value] of Object.entries(osConstants.errno)) {
      if (!errnoNames.has(value)) errnoNames.set(value, name);
    }
  }
  return errnoNames.get(errno) ?? `E${errno}`;
}

function checkArgs(fd: number, kind: string, start: number, length: number): void {
  if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff) throw new RangeError(`invalid fd: ${fd}`);
  if (!(kind in TYPE_CODE)) throw new RangeError(`invalid lock kind: ${kind}`);
  if (!Number.isSafeInteger(start) || start < 0) throw new RangeError(`invalid lock start: ${start}`);
  if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`invalid lock length: ${length}`);
}

function describe(cmd: string, fd: number, kind: string, start: number, length: number): string {
  return `fcntl(${cmd}, ${kind}, start=${start}, length=${length}) on fd ${fd}`;
}

/**
 * Takes, changes or releases a byte-range lock on an open file, without waiting.
 *
 * Converting an existing lock (read → write, write → read) on the same range is atomic where the
 * OS allows. A write lock needs `fd` open for writing, a read lock needs it open for reading.
 *
 * @param fd - File descriptor from `fs.openSync`.
 * @param kind - `'read'` (shared), `'write'` (exclusive) or `'unlock'`.
 * @param start - First byte of the range (may lie beyond end of file).
 * @param length - Number of bytes; 0 means from `start` to end of file and beyond.
 * @returns true if granted (always true for `'unlock'`), false if another owner holds a
 *   conflicting lock (EAGAIN / EACCES).
 * @throws {@link FileLockError} for any other failure (bad fd, no lock support on the file
 *   system, ...); `RangeError` for invalid arguments.
 */
export function lockRange(fd: number, kind: LockKind, start: number, length: number): boolean {
  checkArgs(fd, kind, start, length);
  const err = binding().setlk(fd, TYPE_CODE[kind], start, length, ofdLocks());
  if (err === 0) return true;
  if (err === EAGAIN || err === EACCES) return false;
  throw new FileLockError(describe(ofdLocks() ? 'F_OFD_SETLK' : 'F_SETLK', fd, kind, start, length), err);
}

/**
 * Read-locks the range under a read lock of byte `guard` taken first and released after, whatever
 * happened: SQLite's SHARED lock (os_unix.c `unixLock`: the guard is PENDING_BYTE, so readers do not get
 * in while a writer waits). The same three `fcntl` as {@link lockRange} thrice, in one call of the addon.
 *
 * @returns true if the range is read-locked, false if the guard or the range is held by another owner.
 * @throws {@link FileLockError} if a system call fails (the guard's release included); `RangeError` for
 *   invalid arguments.
 */
export function lockRangeGuarded(fd: number, guard: number, start: number, length: number): boolean {
  const b = binding();
  if (!b.lockShared) {
    if (!lockRange(fd, 'read', guard, 1)) return false;
    let granted = false;
    try {
      granted = lockRange(fd, 'read', start, length);
    } finally {
      lockRange(fd, 'unlock', guard, 1);
    }
    return granted;
  }
  checkArgs(fd, 'read', guard, 1);
  checkArgs(fd, 'read', start, length);
  const rc = b.lockShared(fd, guard, start, length, ofdLocks());
  if (rc === 0) return true;
  const step = rc >> 16;
  const err = rc & 0xffff;
  if (step < 2 && (err === EAGAIN || err === EACCES)) return false;
  const cmd = ofdLocks() ? 'F_OFD_SETLK' : 'F_SETLK';
  throw new FileLockError(
    step === 0
      ? describe(cmd, fd, 'read', guard, 1)
      : step === 1
        ? describe(cmd, fd, 'read', start, length)
        : describe(cmd, fd, 'unlock', guard, 1),
    err,
  );
}

/** The size of the open file `fd` (`fstat`, without building a `fs.Stats`). */
export function fileSizeOf(fd: number): number {
  const b = binding();
  if (!b.fsize) return fstatSync(fd).size;
  const n = b.fsize(fd);
  if (n >= 0) return n;
  throw Object.assign(new Error(`fstat fd ${fd}: ${errnoName(-n)} (errno ${-n})`), {
    code: errnoName(-n),
    errno: -n,
    syscall: 'fstat',
  });
}

/**
 * Reports a lock held by another owner that would prevent `kind` on the range (`F_GETLK`).
 *
 * In OFD mode, locks of the same open file description as `fd` never count; locks of other fds
 * in this process do. In classic mode, no lock of this process counts.
 *
 * @param fd - File descriptor from `fs.openSync`.
 * @param kind - The lock that would be requested: `'read'` or `'write'`.
 * @param start - First byte of the range.
 * @param length - Number of bytes; 0 means to end of file and beyond.
 * @returns The first conflicting holder, or null if the lock would be granted now.
 * @throws {@link FileLockError} if the system call fails; `RangeError` for invalid arguments.
 */
export function findConflictingLock(
  fd: number,
  kind: 'read' | 'write',
  start: number,
  length: number,
): LockHolder | null {
  checkArgs(fd, kind, start, length);
  if (kind !== 'read' && kind !== 'write') throw new RangeError(`cannot probe for lock kind ${kind}`);
  const r = binding().getlk(fd, TYPE_CODE[kind], start, length, ofdLocks());
  if (r === null) return null;
  if (typeof r === 'number') {
    throw new FileLockError(describe(ofdLocks() ? 'F_OFD_GETLK' : 'F_GETLK', fd, kind, start, length), r);
  }
  return { kind: r.type === 1 ? 'write' : 'read', pid: r.pid, start: r.start, length: r.len };
}

/**
 * Tells whether a lock of `kind` on the range would be granted now (`F_GETLK`), without taking it.
 *
 * @param fd - File descriptor from `fs.openSync`.
 * @param kind - `'read'` or `'write'`.
 * @param start - First byte of the range.
 * @param length - Number of bytes; 0 means to end of file and beyond.
 * @returns true if no other owner holds a conflicting lock.
 * @throws {@link FileLockError} if the system call fails; `RangeError` for invalid arguments.
 */
export function probeRange(fd: number, kind: 'read' | 'write', start: number, length: number): boolean {
  return findConflictingLock(fd, kind, start, length) === null;
}

/**
 * Locks (or unlocks) the whole file, from byte 0 to end of file and beyond, without waiting.
 *
 * @param fd - File descriptor from `fs.openSync` (open for writing for a `'write'` lock).
 * @param kind - Lock kind; defaults to `'write'`.
 * @returns true if granted, false if another owner holds a conflicting lock.
 * @throws {@link FileLockError} for other failures.
 */
export function tryLockWholeFile(fd: number, kind: LockKind = 'write'): boolean {
  return lockRange(fd, kind, 0, 0);
}

/** A held exclusive lock on a lock file; see {@link tryExclusiveFileLock}. */
export interface ExclusiveFileLock {
  /** The lock file's path as given. */
  readonly path: string;
  /** The open fd that owns the lock (-1 after release). */
  readonly fd: number;
  /** Releases the lock and closes the fd. Idempotent. */
  release(): void;
}

/** dev:ino of lock files held through this module, so two holders in one process conflict in both modes. */
const heldLockFiles = new Set<string>();

function heldKey(path: string): string | null {
  try {
    const st = statSync(path, { bigint: true });
    return `${st.dev}:${st.ino}`;
  } catch {
    return null;
  }
}

/**
 * Takes an exclusive whole-file write lock on `path` (created if missing, contents untouched),
 * e.g. to make sure a single writer process owns a database. Non-blocking.
 *
 * The lock lasts until `release()` or process exit. A second call for the same file in this
 * process returns null until the first is released, in both lock modes (and without opening a
 * second fd, which in classic mode would drop the first holder's lock when closed).
 *
 * @param path - Lock file path.
 * @returns The held lock, or null if another process (or another holder in this process) has it.
 * @throws {@link FileLockError} or an fs error if the file cannot be opened or locked.
 */
export function tryExclusiveFileLock(path: string): ExclusiveFileLock | null {
  const existing = heldKey(path);
  if (existing !== null && heldLockFiles.has(existing)) return null;
  const fd = openSync(path, fsConstants.O_RDWR | fsConstants.O_CREAT, 0o644);
  let key: string;
  try {
    const st = fstatSync(fd, { bigint: true });
    key = `${st.dev}:${st.ino}`;
    if (heldLockFiles.has(key) || !tryLockWholeFile(fd, 'write')) {
      closeSync(fd);
      return null;
    }
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  heldLockFiles.add(key);
  let open = true;
  return {
    path,
    get fd() {
      return open ? fd : -1;
    },
    release() {
      if (!open) return;
      open = false;
      heldLockFiles.delete(key);
      try {
        lockRange(fd, 'unlock', 0, 0);
      } finally {
        closeSync(fd);
      }
    },
  };
}

/**
 * Like {@link tryExclusiveFileLock}, but throws when the lock is held elsewhere.
 *
 * @param path - Lock file path.
 * @returns The held lock.
 * @throws {@link FileLockBusyError} if another owner holds it (with its pid when the OS reports it).
 */
export function exclusiveFileLock(path: string): ExclusiveFileLock {
  const lock = tryExclusiveFileLock(path);
  if (lock !== null) return lock;
  const key = heldKey(path);
  if (key !== null && heldLockFiles.has(key)) {
    throw new FileLockBusyError(path, { kind: 'write', pid: process.pid, start: 0, length: 0 });
  }
  let holder: LockHolder | null = null;
  try {
    // We hold no lock on this file, so closing this extra fd is safe even in classic mode.
    const fd = openSync(path, fsConstants.O_RDONLY);
    try {
      holder = findConflictingLock(fd, 'write', 0, 0);
    } finally {
      closeSync(fd);
    }
  } catch {
    // diagnostics only
  }
  throw new FileLockBusyError(path, holder);
}
