/**
 * SQLite's unix locking protocol (rollback-journal mode) over POSIX byte-range locks, so that our
 * WebAssembly SQLite and native SQLite processes (sqlite3 CLI, better-sqlite3, ...) exclude each
 * other on the same database file.
 *
 * This follows `unixLock` / `posixUnlock` / `unixCheckReservedLock` of SQLite's os_unix.c, on the
 * lock-byte page (https://www.sqlite.org/lockingv3.html):
 *
 * | byte(s)                         | meaning                                                   |
 * | ------------------------------- | --------------------------------------------------------- |
 * | `PENDING_BYTE` (0x40000000)     | write-locked by a writer waiting for readers to drain;     |
 * |                                 | read-locked briefly by anyone acquiring SHARED            |
 * | `RESERVED_BYTE` (PENDING+1)     | write-locked by the one connection that intends to write  |
 * | `SHARED_FIRST` (PENDING+2) ×510 | read-locked by readers, write-locked by the EXCLUSIVE one  |
 *
 * WAL mode additionally locks the `-shm` file and is not covered here.
 *
 * @module
 */
import { fstatSync } from 'node:fs';
import { findConflictingLock, lockRange, lockRangeGuarded, ofdLocks } from './file-lock.js';

/** No lock (SQLITE_LOCK_NONE). */
export const NO_LOCK = 0;
/** Reading allowed, others may read too (SQLITE_LOCK_SHARED). */
export const SHARED_LOCK = 1;
/** Intends to write; readers still allowed, no other RESERVED (SQLITE_LOCK_RESERVED). */
export const RESERVED_LOCK = 2;
/** Waiting for readers to finish; no new readers (SQLITE_LOCK_PENDING). */
export const PENDING_LOCK = 3;
/** Writing; no other lock of any kind (SQLITE_LOCK_EXCLUSIVE). */
export const EXCLUSIVE_LOCK = 4;

/** A SQLite lock level, as passed to xLock / xUnlock. */
export type SqliteLockLevel = 0 | 1 | 2 | 3 | 4;

/** Offset of the lock-byte page: 1 GiB, as in SQLite's default build (`sqlite3PendingByte`). */
export const PENDING_BYTE = 0x40000000;
/** Byte write-locked by the RESERVED holder. */
export const RESERVED_BYTE = PENDING_BYTE + 1;
/** First byte of the range read-locked by SHARED holders and write-locked by the EXCLUSIVE one. */
export const SHARED_FIRST = PENDING_BYTE + 2;
/** Length of the shared range. */
export const SHARED_SIZE = 510;

/** Classic mode only: inodes with a live SqliteFileLocks in this process (see constructor). */
const liveClassicInodes = new Set<string>();

/**
 * SQLite lock state of one open database file, for a VFS's xLock / xUnlock / xCheckReservedLock.
 *
 * Return values map to SQLite codes: `true` → SQLITE_OK, `false` → SQLITE_BUSY (from `lock`) or
 * SQLITE_IOERR_UNLOCK (from `unlock`). Thrown `FileLockError` (file-lock.ts)s (e.g. EBADF, ENOLCK) map to
 * SQLITE_IOERR_LOCK / SQLITE_IOERR_UNLOCK / SQLITE_IOERR_CHECKRESERVEDLOCK.
 *
 * With OFD locks (Linux, see `ofdLocks()`), every instance is its own lock owner: several
 * connections of this process on one file exclude each other exactly like separate processes,
 * and closing other fds of the file is harmless. With classic POSIX locks the process is the
 * owner, so only one live instance per file per process is allowed (the constructor throws
 * otherwise), and the VFS must not close any other fd of the file while locks are held.
 *
 * @example
 * ```ts
 * const locks = new SqliteFileLocks(fd);
 * xLock: (level) => (locks.lock(level) ? SQLITE_OK : SQLITE_BUSY)
 * ```
 */
export class SqliteFileLocks {
  /** The database file descriptor (open read-write for RESERVED and above). */
  readonly fd: number;
  #level: SqliteLockLevel = NO_LOCK;
  #classicKey: string | null = null;
  #closed = false;

  /**
   * @param fd - An open fd of the database file, from `fs.openSync`.
   * @throws Error in classic lock mode if another live instance exists for the same file.
   */
  constructor(fd: number) {
    this.fd = fd;
    if (!ofdLocks()) {
      const st = fstatSync(fd, { bigint: true });
      const key = `${st.dev}:${st.ino}`;
      if (liveClassicInodes.has(key)) {
        throw new Error(
          'classic POSIX locks are per process: only one SqliteFileLocks per database file per process ' +
            '(close() the other one first)',
        );
      }
      liveClassicInodes.add(key);
      this.#classicKey = key;
    }
  }

  /** Current lock level (0 NONE … 4 EXCLUSIVE). */
  get level(): SqliteLockLevel {
    return this.#level;
  }

  /**
   * Raises the lock to `level` without waiting (xLock). No-op if already at or above it.
   *
   * Follows os_unix.c: SHARED takes a PENDING read lock, read-locks the shared range and drops
   * PENDING; RESERVED write-locks RESERVED_BYTE; EXCLUSIVE (from RESERVED) write-locks PENDING_BYTE
   * — after which the level is PENDING even if the rest fails, so no new reader gets in — then
   * write-locks the shared range. SQLite never requests PENDING itself; `lock(3)` takes just the
   * PENDING write lock.
   *
   * @param level - SHARED (1), RESERVED (2), PENDING (3) or EXCLUSIVE (4).
   * @returns true if the level is now held, false if busy (SQLITE_BUSY).
   * @throws Error on a request SQLite would never make (e.g. RESERVED without SHARED), or a
   *   `FileLockError` (file-lock.ts) if the OS fails for a reason other than a conflict.
   */
  lock(level: 1 | 2 | 3 | 4): boolean {
    this.#checkOpen();
    const cur = this.#level;
    if (cur >= level) return true;
    if (level === SHARED_LOCK ? cur !== NO_LOCK : cur === NO_LOCK) {
      throw new Error(`invalid SQLite lock transition ${cur} -> ${level}`);
    }
    const fd = this.fd;

    if (level === SHARED_LOCK) {
      // Under a PENDING read lock (fails while a writer holds PENDING, so writers are not starved),
      // dropped whatever happened.
      const granted = lockRangeGuarded(fd, PENDING_BYTE, SHARED_FIRST, SHARED_SIZE);
      if (granted) this.#level = SHARED_LOCK;
      return granted;
    }

    if ((level === EXCLUSIVE_LOCK && cur === RESERVED_LOCK) || level === PENDING_LOCK) {
      if (cur < PENDING_LOCK) {
        if (!lockRange(fd, 'write', PENDING_BYTE, 1)) return false;
        this.#level = PENDING_LOCK;
      }
      if (level === PENDING_LOCK) return true;
    }

    const granted =
      level === RESERVED_LOCK
        ? lockRange(fd, 'write', RESERVED_BYTE, 1)
        : lockRange(fd, 'write', SHARED_FIRST, SHARED_SIZE);
    if (granted) this.#level = level;
    return granted;
  }

  /**
   * Lowers the lock to `level` (xUnlock). No-op if already at or below it.
   *
   * To SHARED: downgrades the shared range to a read lock, then releases PENDING and RESERVED.
   * To NONE: additionally releases every lock this owner holds on the file (the whole file, as
   * os_unix.c does).
   *
   * @param level - SHARED (1) or NONE (0).
   * @returns true on success, false if the OS refused the downgrade (SQLITE_IOERR_RDLOCK; the
   *   level is then unchanged).
   * @throws `FileLockError` (file-lock.ts) if the OS fails (SQLITE_IOERR_UNLOCK).
   */
  unlock(level: 0 | 1): boolean {
    if (this.#level <= level) return true;
    const fd = this.fd;
    if (this.#level > SHARED_LOCK) {
      if (level === SHARED_LOCK && !lockRange(fd, 'read', SHARED_FIRST, SHARED_SIZE)) return false;
      lockRange(fd, 'unlock', PENDING_BYTE, 2); // PENDING_BYTE and RESERVED_BYTE
      this.#level = SHARED_LOCK;
    }
    if (level === NO_LOCK) {
      lockRange(fd, 'unlock', 0, 0);
      this.#level = NO_LOCK;
    }
    return true;
  }

  /**
   * Tells whether any connection holds RESERVED or higher (xCheckReservedLock): this one (level
   * above SHARED) or another owner (`F_GETLK` on RESERVED_BYTE finds a lock).
   *
   * @returns true if a RESERVED (or higher) lock is held somewhere.
   * @throws `FileLockError` (file-lock.ts) if the OS query fails (SQLITE_IOERR_CHECKRESERVEDLOCK).
   */
  checkReserved(): boolean {
    if (this.#level > SHARED_LOCK) return true;
    return findConflictingLock(this.fd, 'write', RESERVED_BYTE, 1) !== null;
  }

  /**
   * Releases all locks (unlock to NONE) and, in classic mode, frees this file's slot so a new
   * instance may be created. Call it from xClose before closing the fd. Idempotent; does not
   * close the fd.
   */
  close(): void {
    if (this.#closed) return;
    try {
      this.unlock(NO_LOCK);
    } finally {
      this.#closed = true;
      if (this.#classicKey !== null) liveClassicInodes.delete(this.#classicKey);
    }
  }

  #checkOpen(): void {
    if (this.#closed) throw new Error('SqliteFileLocks used after close()');
  }
}
