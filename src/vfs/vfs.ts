/**
 * The Mycelite VFS: SQLite's file calls (sqlite3_vfs / sqlite3_io_methods) over a FileSystem, with the
 * main database file of each writer connection reported to its Capture.
 *
 * VFS methods never throw into SQLite: each catches, keeps the error for xGetLastError and returns a
 * precise SQLITE_IOERR_* code. Views into WASM memory are taken fresh in each call (memory can grow).
 */

import type { Capture } from '../capture/capture.js';
import type { MovedRollback } from '../capture/moved-rollback.js';
import { setIoErrorDetail } from '../engine/errors.js';
import type { Sqlite3 } from '../engine/sqlite.js';
import type { FileHandle, FileSystem, LockLevel } from '../files/file-system.js';
import { LocalLocks } from './local-locks.js';

/** How the VFS reaches the runtime beyond files. */
export interface VfsOptions {
  fs: FileSystem;
  /** A fresh path for a temporary file (statement journals, VACUUM's temporary database). */
  tempPath(): string;
}

interface OpenFile {
  handle: FileHandle;
  path: string;
  flags: number;
  locks: LocalLocks | undefined;
  capture: Capture | undefined;
  /** The capture of the database whose rollback journal this is. */
  journalOf: Capture | undefined;
  /** The main database file of a connection. */
  mainDb: boolean;
  /** A captured database: what lets `xAccess` answer for its `-wal` without a stat (see `walGone`). */
  wal?: WalWatch;
  deleteOnClose: boolean;
  /** `PRAGMA locking_mode=EXCLUSIVE` was run on this connection (SQLite would then try WAL without shm). */
  exclusive?: boolean;
  /** A rollback journal kept elsewhere by journal durability: never fsynced. */
  noSync: boolean;
  /**
   * A rollback (or super-) journal opened with CREATE: its first fsync also fsyncs its directory, so its
   * name is durable before SQLite writes the database (as SQLite's unix VFS does).
   */
  syncDir: boolean;
}

/**
 * Whether a captured database's `-wal` is known absent. At the start of every transaction SQLite takes its
 * SHARED lock, reads the header's bytes 24–39 (change counter, page count, freelist) and then asks whether
 * `-wal` exists: a stat of a missing file, the most expensive call of a point select. The writer's file is
 * in rollback mode (open() folds a WAL left by native SQLite and leaves rollback mode; the VFS keeps
 * `journal_mode=WAL` off). Another program makes a `-wal` SQLite must see only by switching the file to
 * WAL mode first — a rollback-mode commit, which changes the change counter — and cannot commit while
 * SQLite holds SHARED. So while the bytes read under this lock equal those a stat found no `-wal` at, no
 * `-wal` appeared that matters: SQLite is answered from that. (A file already switched to WAL mode fails
 * every transaction on its header bytes 18–19 whatever the answer: this VFS has no shared memory.)
 *
 * The writer's own commit moves the counter too: when `-wal` was found absent under the lock that
 * commit held throughout (its SHARED, then RESERVED and EXCLUSIVE), the bytes 24–39 it committed are
 * also bytes no `-wal` matters at — nobody else could commit in between, and the next commit by anyone
 * moves the counter again. So a writer's next transaction is answered without a stat too. They are taken
 * at `SQLITE_FCNTL_COMMIT_PHASETWO` only, from SQLite's writes since the last unlock (a transaction
 * rolled back unlocks without it: its header never reached the file and counts for nothing).
 */
interface WalWatch {
  /** Bytes 24–39 as read under the current lock; `seen` false until then (and after a write there). */
  header: Uint8Array;
  seen: boolean;
  /** Bytes 24–39 when a stat last found no `-wal`; `known` false when that is not established. */
  absentAt: Uint8Array;
  known: boolean;
  /** `-wal` was answered absent under the current lock (from a stat or from `absentAt`). */
  absentNow: boolean;
  /** Bytes 24–39 SQLite wrote under the current lock, for its commit; undefined if none, or partly. */
  written: Uint8Array | undefined;
}

const HEADER_AT = 24;
const HEADER_LEN = 16;

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
};

/** A registered Mycelite VFS. */
export interface MyceliteVfs {
  name: string;
  /** The next read-write open of `path` as a main database reports to `capture`. */
  expect(path: string, capture: Capture): void;
  /** Stops reporting `path` (after its connection closed). */
  forget(path: string): void;
}

/** The name the Mycelite VFS is registered under, for the writer, replicas and read-only connections. */
export const MYCELITE_VFS = 'mycelite';

const installed = new Map<string, MyceliteVfs>();

/** Registers (once per name) the Mycelite VFS with the loaded SQLite module. */
export function installMyceliteVfs(sqlite3: Sqlite3, name: string, options: VfsOptions): MyceliteVfs {
  const existing = installed.get(name);
  if (existing) return existing;
  const { capi, wasm } = sqlite3;
  const { fs } = options;
  const files = new Map<number, OpenFile>();
  const expected = new Map<string, Capture>();
  const captured = new Map<string, Capture>();
  const journals = new Map<string, Capture>();
  /** `-wal` paths of captured databases open now → their file (see WalWatch). */
  const walWatched = new Map<string, OpenFile>();
  let lastError: Error | undefined;
  /** The rollback journal at `path`, when journal durability moved it (in memory, then a file). */
  const rollbackFor = (path: string): MovedRollback | undefined => journals.get(path)?.rollback;

  const keep = (e: unknown, rc: number): number => {
    lastError = e instanceof Error ? e : new Error(String(e));
    return rc;
  };
  const heap = (p: number, n: number): Uint8Array => wasm.heap8u().subarray(p, p + n);
  /**
   * C strings SQLite passes again and again (a pager's journal and WAL names, to xAccess, and the
   * journal's to xOpen and xDelete, at every transaction; the pragma name of the SQLITE_FCNTL_PRAGMA it
   * sends at every transaction), decoded once per pointer: a hit is checked byte for byte against the
   * memory there.
   */
  const names = new Map<number, { name: string; bytes: Uint8Array }>();
  const nameAt = (z: number): string => {
    const mem = wasm.heap8u();
    const hit = names.get(z);
    if (hit) {
      const b = hit.bytes;
      let i = 0;
      while (i < b.length && mem[z + i] === b[i]) i++;
      if (i === b.length && mem[z + i] === 0) return hit.name;
    }
    let end = z;
    while (mem[end] !== 0) end++;
    const name = wasm.cstrToJs(z) as string;
    if (names.size >= 64) names.clear();
    names.set(z, { name, bytes: mem.slice(z, end) });
    return name;
  };
  const file = (pFile: number): OpenFile => {
    const f = files.get(pFile);
    if (!f) throw new Error(`no open file for sqlite3_file ${pFile}`);
    return f;
  };

  const io = {
    xCheckReservedLock(pFile: number, pOut: number): number {
      try {
        const f = file(pFile);
        const held = f.handle.checkReserved ? f.handle.checkReserved() : (f.locks?.checkReserved() ?? false);
        wasm.poke32(pOut, held ? 1 : 0);
        return 0;
      } catch (e) {
        return keep(e, capi.SQLITE_IOERR_CHECKRESERVEDLOCK);
      }
    },
    xClose(pFile: number): number {
      const f = files.get(pFile);
      if (!f) return 0;
      files.delete(pFile);
      let failed: unknown;
      try {
        // A capture that cannot finish (an I/O error) still lets go of the file and its locks.
        f.capture?.detach();
      } catch (e) {
        failed = e;
      }
      try {
        if (f.capture) captured.delete(f.path);
        if (f.wal && walWatched.get(`${f.path}-wal`) === f) walWatched.delete(`${f.path}-wal`);
        f.locks?.unlock(0);
        if (f.handle.unlock) f.handle.unlock(0);
        f.handle.close();
        if (f.deleteOnClose) fs.delete(f.path);
      } catch (e) {
        failed ??= e;
      }
      return failed === undefined ? 0 : keep(failed, capi.SQLITE_IOERR_CLOSE);
    },
    xDeviceCharacteristics(_pFile: number): number {
      return capi.SQLITE_IOCAP_POWERSAFE_OVERWRITE;
    },
    xFileControl(pFile: number, op: number, pArg: number): number {
      try {
        const f = file(pFile);
        if (op === capi.SQLITE_FCNTL_SYNC) {
          // pArg names the super-journal of a transaction that writes several databases (ATTACH).
          f.capture?.onCommitPhaseOne(pArg !== 0);
          return 0;
        }
        if (op === capi.SQLITE_FCNTL_COMMIT_PHASETWO) {
          f.capture?.onCommitPhaseTwo();
          const wal = f.wal;
          // Not with locking_mode=EXCLUSIVE, where SQLite asks no more and a rollback does not unlock.
          if (wal?.absentNow && wal.written && !f.exclusive) {
            wal.absentAt.set(wal.written);
            wal.known = true;
          }
          if (wal) wal.written = undefined;
          return 0;
        }
        if (op === capi.SQLITE_FCNTL_PRAGMA && f.capture) return pragma(f, pArg);
        return capi.SQLITE_NOTFOUND;
      } catch (e) {
        return keep(e, capi.SQLITE_IOERR);
      }
    },
    xFileSize(pFile: number, pSize: number): number {
      try {
        wasm.poke64(pSize, BigInt(file(pFile).handle.size()));
        return 0;
      } catch (e) {
        return keep(e, capi.SQLITE_IOERR_FSTAT);
      }
    },
    xLock(pFile: number, level: number): number {
      try {
        const f = file(pFile);
        if (f.wal && level === 1) {
          f.wal.seen = false;
          f.wal.absentNow = false;
          f.wal.written = undefined;
        }
        const ok = f.handle.lock ? f.handle.lock(level as LockLevel) : f.locks!.lock(level as LockLevel);
        if (ok) f.capture?.onLock(level);
        return ok ? 0 : capi.SQLITE_BUSY;
      } catch (e) {
        return keep(e, capi.SQLITE_IOERR_LOCK);
      }
    },
    xRead(pFile: number, pDest: number, n: number, offset: bigint | number): number {
      try {
        const f = file(pFile);
        const at = Number(offset);
        const dest = heap(pDest, n);
        const got = f.handle.read(dest, at);
        // A transaction's first look at the header: was the file written by another program meanwhile?
        if (f.capture && at < 28) f.capture.onRead(at, dest);
        if (f.wal && at <= HEADER_AT && at + n >= HEADER_AT + HEADER_LEN) {
          f.wal.header.set(dest.subarray(HEADER_AT - at, HEADER_AT - at + HEADER_LEN));
          f.wal.seen = true;
        }
        // A WAL-format file (a restore or replica of a history `mycelite replicate` captured): this VFS
        // has no shared memory for a WAL, so uncaptured connections (replica, views, read-only opens)
        // read it as the rollback-format database it is otherwise (header bytes 18-19: 1, not 2).
        if (
          !f.capture &&
          f.mainDb &&
          at <= 18 &&
          at + n >= 20 &&
          dest[18 - at] === 2 &&
          dest[19 - at] === 2
        ) {
          dest[18 - at] = 1;
          dest[19 - at] = 1;
        }
        return got < n ? capi.SQLITE_IOERR_SHORT_READ : 0;
      } catch (e) {
        return keep(e, capi.SQLITE_IOERR_READ);
      }
    },
    xSectorSize(_pFile: number): number {
      return 4096;
    },
    xSync(pFile: number, _flags: number): number {
      try {
        const f = file(pFile);
        if (f.noSync) return 0;
        // Our journal's fsync (capture) may run beside the database's; both are done before this returns.
        const journalSynced = f.capture?.beforeDatabaseSync();
        try {
          f.handle.sync();
        } finally {
          journalSynced?.();
        }
        if (f.syncDir) {
          fs.syncDir(f.path);
          f.syncDir = false;
        }
        return 0;
      } catch (e) {
        return keep(e, capi.SQLITE_IOERR_FSYNC);
      }
    },
    xTruncate(pFile: number, size: bigint | number): number {
      try {
        const f = file(pFile);
        if (f.wal) f.wal.seen = false;
        f.capture?.beforeTruncate(Number(size));
        f.handle.truncate(Number(size));
        return 0;
      } catch (e) {
        return keep(e, capi.SQLITE_IOERR_TRUNCATE);
      }
    },
    xUnlock(pFile: number, level: number): number {
      try {
        const f = file(pFile);
        if (f.wal) {
          // A transaction that ends without its COMMIT_PHASETWO (a rollback) leaves nothing to take.
          f.wal.written = undefined;
          if (level === 0) {
            f.wal.seen = false;
            f.wal.absentNow = false;
          }
        }
        let failed: unknown;
        try {
          f.capture?.onUnlock(level);
        } catch (e) {
          // The lock is released all the same: holding it would lock other connections out until close.
          failed = e;
        }
        const ok = f.handle.unlock ? f.handle.unlock(level as 0 | 1) : f.locks!.unlock(level as 0 | 1);
        if (failed !== undefined) throw failed;
        return ok ? 0 : capi.SQLITE_IOERR_UNLOCK;
      } catch (e) {
        return keep(e, capi.SQLITE_IOERR_UNLOCK);
      }
    },
    xWrite(pFile: number, pSrc: number, n: number, offset: bigint | number): number {
      try {
        const f = file(pFile);
        const at = Number(offset);
        if (f.capture) f.capture.beforeWrite(at, n);
        const bytes = heap(pSrc, n);
        if (f.wal && at < HEADER_AT + HEADER_LEN && at + n > HEADER_AT) {
          f.wal.seen = false;
          f.wal.written =
            at <= HEADER_AT && at + n >= HEADER_AT + HEADER_LEN
              ? bytes.slice(HEADER_AT - at, HEADER_AT - at + HEADER_LEN)
              : undefined;
        }
        if (f.journalOf) f.journalOf.onRollbackJournalWrite(at, bytes);
        f.handle.write(bytes, at);
        return 0;
      } catch (e) {
        return keep(e, capi.SQLITE_IOERR_WRITE);
      }
    },
  };

  /**
   * SQLITE_FCNTL_PRAGMA on a captured database. `journal_mode=WAL` is answered as SQLite answers it on
   * any VFS without shared memory: the mode stays what it was, and the pragma returns it (an application
   * that sets WAL at start runs unchanged). With `locking_mode=EXCLUSIVE` SQLite would go to WAL without
   * shared memory, which Mycelite does not capture: refused, as is `journal_mode=OFF`.
   */
  const pragma = (f: OpenFile, pArg: number): number => {
    // SQLite 3.54 sends one of these at every transaction (`experimental_pragma_20251114`): its name is
    // decoded once per pointer, and the value only for the two pragmas looked at.
    const name = nameAt(wasm.peekPtr(pArg + 4) as number).toLowerCase();
    if (name !== 'locking_mode' && name !== 'journal_mode') return capi.SQLITE_NOTFOUND;
    const valuePtr = wasm.peekPtr(pArg + 8) as number;
    const value = valuePtr ? wasm.cstrToJs(valuePtr)?.toLowerCase() : undefined;
    if (name === 'locking_mode' && (value === 'exclusive' || value === 'normal')) {
      f.exclusive = value === 'exclusive';
    }
    const refusal =
      name !== 'journal_mode'
        ? undefined
        : value === 'wal' && f.exclusive
          ? 'Mycelite does not support journal_mode=WAL yet (with locking_mode=EXCLUSIVE SQLite would switch to it)'
          : value === 'off'
            ? 'Mycelite does not support journal_mode=OFF: without a journal SQLite cannot roll back, so the database and its history would disagree'
            : undefined;
    if (refusal) {
      const msg = `${refusal}; use DELETE (the default), TRUNCATE, PERSIST or MEMORY`;
      // SQLite frees this message with sqlite3_free; wasm.allocCString allocates with sqlite3_malloc.
      wasm.pokePtr(pArg, wasm.allocCString(msg, false) as unknown as number);
      return capi.SQLITE_ERROR;
    }
    return capi.SQLITE_NOTFOUND;
  };

  const ioStruct = new capi.sqlite3_io_methods();
  (ioStruct as unknown as { $iVersion: number }).$iVersion = 1;
  const ioPtr = ioStruct.pointer as number;
  const pMethodsAt = (
    capi.sqlite3_file as unknown as { structInfo: { members: { pMethods: { offset: number } } } }
  ).structInfo.members.pMethods.offset;

  const vfsStruct = new capi.sqlite3_vfs();
  const pDefault = capi.sqlite3_vfs_find(null);
  const dflt = new capi.sqlite3_vfs(pDefault);
  const v = vfsStruct as unknown as Record<string, unknown>;
  v.$iVersion = 2;
  v.$szOsFile = (capi.sqlite3_file as unknown as { structInfo: { sizeof: number } }).structInfo.sizeof;
  v.$mxPathname = 1024;
  v.$zName = wasm.allocCString(name, false);
  v.$xRandomness = (dflt as unknown as Record<string, unknown>).$xRandomness;
  dflt.dispose();

  // Browsers without cross-origin isolation have no SharedArrayBuffer: xSleep does not sleep there.
  const sleeper =
    typeof SharedArrayBuffer === 'function' ? new Int32Array(new SharedArrayBuffer(4)) : undefined;
  const vfsMethods = {
    xAccess(_pVfs: number, zName: number, _flags: number, pOut: number): number {
      try {
        const p = nameAt(zName);
        const wal = walWatched.get(p)?.wal;
        if (wal?.seen && wal.known && sameBytes(wal.header, wal.absentAt)) {
          wal.absentNow = true;
          wasm.poke32(pOut, 0);
          return 0;
        }
        // As unix SQLite: an empty regular file counts as missing (so an empty journal is not hot).
        const moved = rollbackFor(p);
        const exists = (moved ? moved.size() : fs.fileSize(p)) > 0;
        if (wal?.seen) {
          wal.known = !exists;
          wal.absentAt.set(wal.header);
          wal.absentNow = !exists;
        }
        wasm.poke32(pOut, exists ? 1 : 0);
        return 0;
      } catch (e) {
        return keep(e, capi.SQLITE_IOERR_ACCESS);
      }
    },
    xCurrentTime(_pVfs: number, pOut: number): number {
      wasm.poke(pOut, 2440587.5 + Date.now() / 864e5, 'double');
      return 0;
    },
    xCurrentTimeInt64(_pVfs: number, pOut: number): number {
      wasm.poke(pOut, 210866760000000 + Date.now(), 'i64');
      return 0;
    },
    xDelete(_pVfs: number, zName: number, syncDir: number): number {
      try {
        const p = nameAt(zName);
        const moved = rollbackFor(p);
        if (moved) moved.clear();
        else fs.delete(p, { syncDir: syncDir !== 0 });
        return 0;
      } catch (e) {
        return keep(e, capi.SQLITE_IOERR_DELETE);
      }
    },
    xFullPathname(_pVfs: number, zName: number, nOut: number, pOut: number): number {
      return wasm.cstrncpy(pOut, zName, nOut) < nOut ? 0 : capi.SQLITE_CANTOPEN;
    },
    xGetLastError(_pVfs: number, nOut: number, pOut: number): number {
      const e = lastError;
      if (e && nOut > 0) {
        const bytes = new TextEncoder().encode(e.message).subarray(0, nOut - 1);
        wasm.heap8u().set(bytes, pOut);
        wasm.poke8(pOut + bytes.length, 0);
      }
      return 0;
    },
    xOpen(_pVfs: number, zName: number, pFile: number, flags: number, pOutFlags: number): number {
      try {
        const named = zName !== 0 && wasm.peek8(zName) !== 0;
        const path = named ? nameAt(zName) : options.tempPath();
        const mainDb = (flags & capi.SQLITE_OPEN_MAIN_DB) !== 0;
        const readonly = (flags & capi.SQLITE_OPEN_READONLY) !== 0;
        if (flags & capi.SQLITE_OPEN_WAL) {
          throw new Error('Mycelite does not support WAL mode yet (journal_mode=WAL)');
        }
        let capture: Capture | undefined;
        if (mainDb && !readonly) {
          capture = expected.get(path);
          if (capture) expected.delete(path);
          else if (captured.has(path)) {
            throw new Error(
              `${path} is open for writing through Mycelite in this process; open it read-only`,
            );
          }
        }
        const moved = flags & capi.SQLITE_OPEN_MAIN_JOURNAL ? rollbackFor(path) : undefined;
        const opened = moved
          ? moved.handle()
          : fs.open(path, {
              create: (flags & capi.SQLITE_OPEN_CREATE) !== 0,
              readonly,
              sqliteLocks: mainDb,
            });
        // With journal durability SQLite's calls on the database go through the capture's handle.
        const handle = capture ? capture.attach(opened) : opened;
        const deleteOnClose = (flags & capi.SQLITE_OPEN_DELETEONCLOSE) !== 0;
        const f: OpenFile = {
          handle,
          path,
          flags,
          locks: mainDb && !handle.lock ? new LocalLocks(path) : undefined,
          capture,
          mainDb,
          journalOf: flags & capi.SQLITE_OPEN_MAIN_JOURNAL ? journals.get(path) : undefined,
          deleteOnClose,
          noSync: moved !== undefined,
          syncDir:
            moved === undefined &&
            (flags & capi.SQLITE_OPEN_CREATE) !== 0 &&
            (flags & (capi.SQLITE_OPEN_MAIN_JOURNAL | capi.SQLITE_OPEN_SUPER_JOURNAL)) !== 0,
        };
        if (capture) {
          captured.set(path, capture);
          f.wal = {
            header: new Uint8Array(HEADER_LEN),
            seen: false,
            absentAt: new Uint8Array(HEADER_LEN),
            known: false,
            absentNow: false,
            written: undefined,
          };
          walWatched.set(`${path}-wal`, f);
        }
        files.set(pFile, f);
        // sqlite3_file.pMethods, poked directly: a struct wrapper made and disposed per open (SQLite opens
        // the rollback journal in every write transaction) cost more than the rest of xOpen.
        wasm.pokePtr(pFile + pMethodsAt, ioPtr);
        wasm.poke32(pOutFlags, flags);
        return 0;
      } catch (e) {
        return keep(e, capi.SQLITE_CANTOPEN);
      }
    },
    xSleep(_pVfs: number, micros: number): number {
      try {
        if (sleeper) Atomics.wait(sleeper, 0, 0, Math.max(1, micros / 1000));
      } catch {
        // Atomics.wait is not allowed on a browser's main thread: do not sleep there.
      }
      return 0;
    },
  };

  setIoErrorDetail(() => {
    const e = lastError;
    lastError = undefined;
    return e?.message;
  });
  sqlite3.vfs.installVfs({
    io: { struct: ioStruct, methods: io as never },
    vfs: { struct: vfsStruct, methods: vfsMethods as never },
  });

  const vfs: MyceliteVfs = {
    name,
    expect(path, capture) {
      expected.set(path, capture);
      journals.set(`${path}-journal`, capture);
    },
    forget(path) {
      expected.delete(path);
      captured.delete(path);
      journals.delete(`${path}-journal`);
    },
  };
  installed.set(name, vfs);
  return vfs;
}
