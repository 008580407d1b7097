// Tests for src/node/file-lock.ts and src/node/sqlite-locks.ts against REAL native SQLite
// (better-sqlite3) running in child processes (test/fixtures/native-holder.mjs).
import assert from 'node:assert/strict';
import { type ChildProcess, fork, spawnSync } from 'node:child_process';
import { closeSync, fstatSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  exclusiveFileLock,
  FileLockBusyError,
  FileLockError,
  fileSizeOf,
  findConflictingLock,
  lockMode,
  lockRange,
  lockRangeGuarded,
  ofdLocks,
  probeRange,
  tryExclusiveFileLock,
  tryLockWholeFile,
} from '../src/node/file-lock.js';
import {
  EXCLUSIVE_LOCK,
  NO_LOCK,
  PENDING_BYTE,
  PENDING_LOCK,
  RESERVED_BYTE,
  RESERVED_LOCK,
  SHARED_FIRST,
  SHARED_LOCK,
  SHARED_SIZE,
  SqliteFileLocks,
} from '../src/node/sqlite-locks.js';

// Compiled to dist/test/; fixtures stay in test/fixtures/ (not compiled).
const FIXTURES = fileURLToPath(new URL('../../test/fixtures/', import.meta.url));
const COMPILED_NODE_DIR = new URL('../src/node/', import.meta.url).href;
const TEST_TIMEOUT = 20_000;
const REQUEST_TIMEOUT = 5_000;

type Reply = { ok: true; value: unknown } | { ok: false; code: string; message: string };

/** A forked fixture process answering { id, op } requests over IPC. */
class Child {
  readonly proc: ChildProcess;
  pid = -1;
  #next = 1;
  #pending = new Map<number, (r: Reply) => void>();
  #exited: Promise<void>;

  constructor(script: string, args: string[] = [], env: NodeJS.ProcessEnv = process.env) {
    this.proc = fork(join(FIXTURES, script), args, { env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.proc.on('message', (m: { id?: number } & Reply) => {
      if (m.id !== undefined) this.#pending.get(m.id)?.(m);
    });
    this.#exited = new Promise((resolve) => this.proc.once('exit', () => resolve()));
  }

  async ready(): Promise<this> {
    const msg = await withTimeout(
      new Promise<{ pid: number }>((resolve, reject) => {
        this.proc.once('message', resolve);
        this.proc.once('exit', (code) => reject(new Error(`fixture exited early (${code})`)));
      }),
      'fixture start',
    );
    this.pid = msg.pid;
    return this;
  }

  request(op: string, extra: Record<string, unknown> = {}): Promise<Reply> {
    const id = this.#next++;
    return withTimeout(
      new Promise<Reply>((resolve) => {
        this.#pending.set(id, resolve);
        this.proc.send({ id, op, ...extra });
      }),
      `request ${op}`,
    ).finally(() => this.#pending.delete(id));
  }

  /** Runs a request and returns its value, failing the test if it failed. */
  async ok(op: string, extra: Record<string, unknown> = {}): Promise<unknown> {
    const r = await this.request(op, extra);
    assert.ok(r.ok, `${op} ${JSON.stringify(extra)} failed: ${r.ok ? '' : `${r.code} ${r.message}`}`);
    return r.value;
  }

  /** Runs a request that must fail with `code`. */
  async fails(code: string, op: string, extra: Record<string, unknown> = {}): Promise<void> {
    const r = await this.request(op, extra);
    assert.equal(r.ok, false, `${op} ${JSON.stringify(extra)} should fail with ${code}`);
    if (!r.ok) assert.equal(r.code, code, r.message);
  }

  async kill(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
    await withTimeout(this.#exited, 'child exit');
  }
}

function withTimeout<T>(p: Promise<T>, what: string, ms = REQUEST_TIMEOUT): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

const children: Child[] = [];
async function startChild(script: string, args?: string[], env?: NodeJS.ProcessEnv): Promise<Child> {
  const c = new Child(script, args, env);
  children.push(c);
  return c.ready();
}

const dir = mkdtempSync(join(tmpdir(), 'mycelite-file-lock-'));
const fds: number[] = [];
function open(path: string, flags = 'r+'): number {
  const fd = openSync(path, flags);
  fds.push(fd);
  return fd;
}

after(async () => {
  await Promise.allSettled(children.map((c) => c.kill()));
  for (const fd of fds.splice(0)) {
    try {
      closeSync(fd);
    } catch {
      // already closed by a test
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('file-lock primitives', () => {
  it('uses OFD locks on Linux unless told otherwise', () => {
    if (process.platform === 'linux' && process.env['MYCELITE_FILE_LOCKS'] === undefined) {
      assert.equal(lockMode(), 'ofd');
    }
    assert.equal(ofdLocks(), lockMode() === 'ofd');
  });

  it('two open file descriptions in this process conflict (OFD)', { skip: !ofdLocks() }, () => {
    const path = join(dir, 'prims.bin');
    const a = open(path, 'w+');
    const b = open(path, 'r+');
    assert.equal(lockRange(a, 'write', 100, 10), true);
    assert.equal(lockRange(b, 'read', 105, 1), false);
    assert.equal(lockRange(b, 'write', 109, 5), false);
    assert.equal(lockRange(b, 'write', 110, 5), true, 'adjacent range is free');
    assert.equal(probeRange(b, 'read', 100, 1), false);
    assert.deepEqual(findConflictingLock(b, 'read', 0, 0), {
      kind: 'write',
      pid: -1,
      start: 100,
      length: 10,
    });
    assert.equal(findConflictingLock(a, 'write', 100, 10), null, 'own locks never conflict');
    // Downgrade to read: b can now share, not write.
    assert.equal(lockRange(a, 'read', 100, 10), true);
    assert.equal(lockRange(b, 'read', 100, 1), true);
    assert.equal(lockRange(b, 'write', 101, 1), false);
    assert.equal(lockRange(a, 'unlock', 100, 10), true);
    assert.equal(lockRange(b, 'write', 100, 10), true);
    assert.equal(tryLockWholeFile(a), false);
    assert.equal(lockRange(b, 'unlock', 0, 0), true);
    assert.equal(tryLockWholeFile(a), true);
    assert.equal(tryLockWholeFile(a, 'unlock'), true);
  });

  it('closing another fd of the same file keeps our locks (OFD)', { skip: !ofdLocks() }, () => {
    const path = join(dir, 'close.bin');
    const a = open(path, 'w+');
    assert.equal(lockRange(a, 'write', 0, 1), true);
    closeSync(openSync(path, 'r'));
    const b = open(path, 'r+');
    assert.equal(lockRange(b, 'read', 0, 1), false);
    assert.equal(lockRange(a, 'unlock', 0, 1), true);
  });

  it('lockRangeGuarded: the range read-locked under the guard, which is released whatever happened (OFD)', {
    skip: !ofdLocks(),
  }, () => {
    const path = join(dir, 'guarded.bin');
    const a = open(path, 'w+');
    const b = open(path, 'r+');
    // A writer's PENDING lock on the guard keeps new readers out.
    assert.equal(lockRange(b, 'write', 50, 1), true);
    assert.equal(lockRangeGuarded(a, 50, 60, 10), false);
    assert.equal(findConflictingLock(b, 'write', 60, 10), null, 'the range is not taken');
    assert.equal(lockRange(b, 'unlock', 50, 1), true);
    // A write lock on part of the range: busy, the guard released all the same.
    assert.equal(lockRange(b, 'write', 65, 1), true);
    assert.equal(lockRangeGuarded(a, 50, 60, 10), false);
    assert.equal(findConflictingLock(b, 'write', 50, 1), null, 'the guard was released');
    assert.equal(lockRange(b, 'unlock', 65, 1), true);
    // Granted: the range is read-locked (others may read, not write), the guard is free.
    assert.equal(lockRangeGuarded(a, 50, 60, 10), true);
    assert.equal(findConflictingLock(b, 'write', 50, 1), null, 'the guard was released');
    assert.equal(lockRange(b, 'write', 62, 1), false);
    assert.equal(lockRange(b, 'read', 62, 1), true);
    assert.equal(lockRange(b, 'unlock', 0, 0), true);
    assert.equal(lockRange(a, 'unlock', 0, 0), true);
    const closed = openSync(path, 'r');
    closeSync(closed);
    assert.throws(
      () => lockRangeGuarded(closed, 50, 60, 10),
      (e: unknown) =>
        e instanceof FileLockError && e.code === 'EBADF' && /start=50, length=1/.test(e.message),
    );
    assert.throws(() => lockRangeGuarded(a, 50, -1, 10), RangeError);
  });

  it('fileSizeOf: the size fstat gives, an error naming the fd for a closed one', () => {
    const path = join(dir, 'size.bin');
    const fd = open(path, 'w+');
    assert.equal(fileSizeOf(fd), 0);
    writeSync(fd, Buffer.alloc(12345), 0, 12345, 1 << 20);
    assert.equal(fileSizeOf(fd), fstatSync(fd).size);
    assert.equal(fileSizeOf(fd), (1 << 20) + 12345);
    const closed = openSync(path, 'r');
    closeSync(closed);
    assert.throws(() => fileSizeOf(closed), { code: 'EBADF', syscall: 'fstat' });
  });

  it('reports errors with context', () => {
    const path = join(dir, 'errors.bin');
    const ro = open(path, 'w+');
    const readOnly = open(path, 'r');
    assert.throws(
      () => lockRange(readOnly, 'write', 0, 1),
      (e: unknown) => e instanceof FileLockError && e.code === 'EBADF' && /start=0, length=1/.test(e.message),
    );
    const closed = openSync(path, 'r');
    closeSync(closed);
    assert.throws(() => lockRange(closed, 'read', 0, 1), { name: 'FileLockError', code: 'EBADF' });
    assert.throws(() => probeRange(closed, 'read', 0, 1), { name: 'FileLockError', code: 'EBADF' });
    assert.throws(() => lockRange(ro, 'read', -1, 1), RangeError);
    assert.throws(() => lockRange(ro, 'read', 0, 1.5), RangeError);
    assert.throws(() => lockRange(ro, 'bogus' as 'read', 0, 1), RangeError);
  });

  it('exclusiveFileLock excludes this process and others', { timeout: TEST_TIMEOUT }, () => {
    const path = join(dir, 'writer.lock');
    const tryInChild = () => {
      const code =
        `const m = await import(${JSON.stringify(new URL('file-lock.js', COMPILED_NODE_DIR).href)});` +
        `const l = m.tryExclusiveFileLock(${JSON.stringify(path)}); console.log(l ? 'acquired' : 'busy');`;
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], {
        encoding: 'utf8',
        timeout: 10_000,
      });
      assert.equal(r.status, 0, r.stderr);
      return r.stdout.trim();
    };
    const lock = exclusiveFileLock(path);
    assert.ok(lock.fd >= 0);
    assert.equal(tryExclusiveFileLock(path), null);
    assert.throws(() => exclusiveFileLock(path), FileLockBusyError);
    assert.equal(tryInChild(), 'busy');
    lock.release();
    lock.release();
    assert.equal(lock.fd, -1);
    assert.equal(tryInChild(), 'acquired');
    const again = tryExclusiveFileLock(path);
    assert.ok(again);
    again.release();
  });
});

describe('SqliteFileLocks against native SQLite in another process', () => {
  const db = join(dir, 'interop.db');
  let native: Child;
  let fd: number;
  let ours: SqliteFileLocks;

  before(async () => {
    native = await startChild('native-holder.mjs');
    assert.equal(await native.ok('open', { path: db }), 'delete');
    await native.ok('exec', { sql: 'CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3);' });
    fd = open(db);
    ours = new SqliteFileLocks(fd);
  });

  afterEach(async () => {
    ours.unlock(NO_LOCK);
    if ((await native.ok('inTransaction')) === true) await native.ok('exec', { sql: 'ROLLBACK' });
  });

  it('native read transaction: our SHARED and RESERVED succeed, EXCLUSIVE is busy', {
    timeout: TEST_TIMEOUT,
  }, async () => {
    await native.ok('exec', { sql: 'BEGIN' });
    assert.deepEqual(await native.ok('all', { sql: 'SELECT count(*) AS n FROM t' }), [{ n: 3 }]);
    // The native SHARED lock is visible, owned by the child's pid (native SQLite uses classic locks).
    assert.deepEqual(findConflictingLock(fd, 'write', SHARED_FIRST, SHARED_SIZE), {
      kind: 'read',
      pid: native.pid,
      start: SHARED_FIRST,
      length: SHARED_SIZE,
    });
    assert.equal(ours.checkReserved(), false);
    assert.equal(ours.lock(SHARED_LOCK), true);
    assert.equal(ours.lock(RESERVED_LOCK), true);
    assert.equal(ours.lock(EXCLUSIVE_LOCK), false, 'EXCLUSIVE must be busy while a native reader is in');
    assert.equal(ours.level, PENDING_LOCK, 'a failed EXCLUSIVE leaves PENDING held, as in os_unix.c');
    // PENDING keeps new readers out: once the native reader ends, its next read is busy...
    await native.ok('exec', { sql: 'COMMIT' });
    await native.fails('SQLITE_BUSY', 'all', { sql: 'SELECT count(*) FROM t' });
    // ...and our EXCLUSIVE now goes through.
    assert.equal(ours.lock(EXCLUSIVE_LOCK), true);
    assert.equal(ours.level, EXCLUSIVE_LOCK);
    assert.equal(ours.unlock(NO_LOCK), true);
    assert.equal(ours.level, NO_LOCK);
    assert.deepEqual(await native.ok('all', { sql: 'SELECT count(*) AS n FROM t' }), [{ n: 3 }]);
  });

  it('native write transaction: our RESERVED is busy and checkReserved sees it', {
    timeout: TEST_TIMEOUT,
  }, async () => {
    await native.ok('exec', { sql: 'BEGIN IMMEDIATE' });
    assert.equal(ours.checkReserved(), true);
    assert.equal(ours.lock(SHARED_LOCK), true);
    assert.equal(ours.checkReserved(), true);
    assert.equal(ours.lock(RESERVED_LOCK), false);
    assert.equal(ours.level, SHARED_LOCK);
    // Our SHARED lock blocks the native commit (it needs EXCLUSIVE).
    await native.ok('exec', { sql: 'INSERT INTO t VALUES (4)' });
    await native.fails('SQLITE_BUSY', 'exec', { sql: 'COMMIT' });
    assert.equal(ours.unlock(NO_LOCK), true);
    await native.ok('exec', { sql: 'COMMIT' });
    // After the native commit our locks succeed.
    assert.equal(ours.checkReserved(), false);
    assert.equal(ours.lock(SHARED_LOCK), true);
    assert.equal(ours.lock(RESERVED_LOCK), true);
    assert.equal(ours.checkReserved(), true);
    assert.equal(ours.lock(EXCLUSIVE_LOCK), true);
    assert.equal(ours.unlock(SHARED_LOCK), true);
    assert.equal(ours.level, SHARED_LOCK);
    assert.equal(ours.checkReserved(), false);
  });

  it('native holder that exits (SIGKILL mid-transaction): our locks succeed', {
    timeout: TEST_TIMEOUT,
  }, async () => {
    const other = await startChild('native-holder.mjs');
    await other.ok('open', { path: db });
    await other.ok('exec', { sql: 'BEGIN EXCLUSIVE' });
    assert.equal(ours.lock(SHARED_LOCK), false);
    assert.equal(ours.level, NO_LOCK);
    assert.equal(ours.checkReserved(), true);
    await other.kill();
    assert.equal(ours.checkReserved(), false);
    assert.equal(ours.lock(SHARED_LOCK), true);
    assert.equal(ours.lock(RESERVED_LOCK), true);
    assert.equal(ours.lock(EXCLUSIVE_LOCK), true);
  });

  it('our EXCLUSIVE makes native reads busy; our RESERVED makes native writes busy', {
    timeout: TEST_TIMEOUT,
  }, async () => {
    assert.equal(ours.lock(SHARED_LOCK), true);
    assert.equal(ours.lock(RESERVED_LOCK), true);
    assert.deepEqual(await native.ok('all', { sql: 'SELECT count(*) AS n FROM t' }), [{ n: 4 }]);
    await native.fails('SQLITE_BUSY', 'exec', { sql: 'BEGIN IMMEDIATE' });
    assert.equal(ours.lock(EXCLUSIVE_LOCK), true);
    await native.fails('SQLITE_BUSY', 'all', { sql: 'SELECT count(*) FROM t' });
    // Downgrade to SHARED: native reads and native RESERVED work again.
    assert.equal(ours.unlock(SHARED_LOCK), true);
    assert.deepEqual(await native.ok('all', { sql: 'SELECT count(*) AS n FROM t' }), [{ n: 4 }]);
    await native.ok('exec', { sql: 'BEGIN IMMEDIATE' });
    await native.ok('exec', { sql: 'ROLLBACK' });
    assert.equal(ours.unlock(NO_LOCK), true);
    assert.deepEqual(findConflictingLock(fd, 'write', PENDING_BYTE, 512), null);
  });

  it('closing another fd of the database does not drop our EXCLUSIVE (OFD)', {
    skip: !ofdLocks(),
    timeout: TEST_TIMEOUT,
  }, async () => {
    assert.equal(ours.lock(SHARED_LOCK), true);
    assert.equal(ours.lock(EXCLUSIVE_LOCK), true);
    closeSync(openSync(db, 'r'));
    await native.fails('SQLITE_BUSY', 'all', { sql: 'SELECT count(*) FROM t' });
    assert.equal(ours.unlock(NO_LOCK), true);
    await native.ok('all', { sql: 'SELECT count(*) FROM t' });
  });

  it('two instances in this process exclude each other (OFD)', { skip: !ofdLocks() }, () => {
    const other = new SqliteFileLocks(open(db));
    try {
      assert.equal(ours.lock(SHARED_LOCK), true);
      assert.equal(other.lock(SHARED_LOCK), true);
      assert.equal(ours.lock(RESERVED_LOCK), true);
      assert.equal(other.checkReserved(), true);
      assert.equal(other.lock(RESERVED_LOCK), false);
      assert.equal(ours.lock(EXCLUSIVE_LOCK), false);
      other.close();
      assert.equal(ours.lock(EXCLUSIVE_LOCK), true);
      assert.throws(() => other.lock(SHARED_LOCK), /after close/);
    } finally {
      other.close();
    }
  });

  it('rejects transitions SQLite never makes', () => {
    assert.throws(() => ours.lock(RESERVED_LOCK), /invalid SQLite lock transition/);
    assert.throws(() => ours.lock(EXCLUSIVE_LOCK), /invalid SQLite lock transition/);
    assert.equal(ours.level, NO_LOCK);
  });

  it('classic POSIX locks (forced) also exclude native SQLite, and show the close() trap', {
    timeout: TEST_TIMEOUT,
  }, async () => {
    const classic = await startChild('classic-locker.mjs', [COMPILED_NODE_DIR, db], {
      ...process.env,
      MYCELITE_FILE_LOCKS: 'classic',
    });
    assert.equal(await classic.ok('mode'), 'classic');
    assert.equal(await classic.ok('lock', { level: SHARED_LOCK }), true);
    assert.equal(await classic.ok('lock', { level: RESERVED_LOCK }), true);
    assert.equal(await classic.ok('lock', { level: EXCLUSIVE_LOCK }), true);
    await native.fails('SQLITE_BUSY', 'all', { sql: 'SELECT count(*) FROM t' });
    assert.equal(ours.lock(SHARED_LOCK), false);
    assert.equal(findConflictingLock(fd, 'read', SHARED_FIRST, SHARED_SIZE)?.pid, classic.pid);
    assert.equal(findConflictingLock(fd, 'read', RESERVED_BYTE, 1)?.kind, 'write');
    // The trap: closing ANY other fd of the file in that process drops all its locks.
    await classic.ok('closeOtherFd');
    assert.equal(findConflictingLock(fd, 'write', 0, 0), null);
    await native.ok('all', { sql: 'SELECT count(*) FROM t' });
    await classic.kill();
  });
});
