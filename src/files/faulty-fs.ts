/**
 * The fault-injection seam: a FileSystem that wraps another and gives every operation a label — the role
 * of the file (from its path) and the method, e.g. `journal.write`, `journal.sync`, `db.write`,
 * `db.truncate`, `spill.write`, `inflight.write`, `rollback.delete`, `db.rename`, `journal.syncDir` — and
 * fails the Nth call of a label with EIO, ENOSPC or a short write (half of the bytes reach the file, then
 * ENOSPC). Runtime-neutral; used by the fault tests (test/faults*.test.ts, docs/RELIABILITY.md).
 */
import type { DeleteOptions, FileHandle, FileSystem, LockLevel, OpenOptions } from './file-system.js';

export type FaultKind = 'EIO' | 'ENOSPC' | 'short';

/** Which call fails, and how. */
export interface FaultPlan {
  label: string;
  /** 1-based: the Nth call of `label` counted from when the plan was armed. */
  nth: number;
  kind: FaultKind;
}

/** The error a fault throws: like a Node system error, with `code`. */
export class InjectedFault extends Error {
  readonly code: 'EIO' | 'ENOSPC';
  constructor(
    readonly label: string,
    kind: FaultKind,
    detail = '',
  ) {
    const code = kind === 'EIO' ? 'EIO' : 'ENOSPC';
    super(`${code}: injected fault at ${label}${detail}`);
    this.name = 'InjectedFault';
    this.code = code;
  }
}

/**
 * The role of a file from its path (docs/FORMAT.md names them): `journal`, `spill`, `inflight`, `lock`,
 * `replica` (the marker), `synced` (journal durability's marker), `dir` (the journal directory), `journal-reset` (a replica's new journal),
 * `journal-tmp` (a compaction's rewritten journal), `history` (the history file and its temp file), `history-end` (where open() found it ends), `compact` (a compaction's scratch database and lock),
 * `rollback` (SQLite's `-journal`, or where journal durability keeps it),
 * `kept` (a history a replica's reset kept aside: `DB.replaced-…`, its journal directory and files),
 * `wal`, `tmp` (an atomic write's temp file), `temp` (SQLite's temp files) or `db`.
 */
export function roleOf(path: string): string {
  if (/\.replaced-[^/]*(\/[^/]*)?$/.test(path)) return 'kept';
  if (/-mycelite\/journal$/.test(path)) return 'journal';
  if (/-mycelite$/.test(path)) return 'dir';
  if (/-mycelite\/journal\.reset$/.test(path)) return 'journal-reset';
  if (/-mycelite\/journal\.tmp$/.test(path)) return 'journal-tmp';
  if (/-mycelite\/history(\.tmp)?$/.test(path)) return 'history';
  if (/-mycelite\/history\.end$/.test(path)) return 'history-end';
  if (/-mycelite\/compact-(scratch|lock)$/.test(path)) return 'compact';
  const m = /-mycelite\/(spill|inflight|lock|replica|synced|rollback)$/.exec(path);
  if (m) return m[1]!;
  if (/\.tmp-[a-z0-9]+$/.test(path)) return 'tmp';
  if (/-journal$/.test(path)) return 'rollback';
  if (/-wal$|-shm$/.test(path)) return 'wal';
  if (/\/mycelite-\d+-\d+-\d+$/.test(path)) return 'temp';
  return 'db';
}

/** Methods whose calls can fail (reads fail with EIO only; a short write applies to writes). */
const FAILABLE = new Set([
  'open',
  'read',
  'write',
  'truncate',
  'sync',
  'delete',
  'syncDir',
  'rename',
  'mkdir',
]);

export class FaultyFileSystem implements FileSystem {
  /** Calls per label since construction (failed ones included). */
  readonly calls = new Map<string, number>();
  /** Faults that fired, in order. */
  readonly fired: FaultPlan[] = [];
  private plan: FaultPlan | undefined;
  private seen = 0;
  readonly tryLockExclusive?: (path: string) => { release(): void } | undefined;

  constructor(
    readonly inner: FileSystem,
    readonly role: (path: string) => string = roleOf,
  ) {
    if (inner.tryLockExclusive) this.tryLockExclusive = (p) => inner.tryLockExclusive!(p);
  }

  /** Fails the `nth` call of `label` from now on (one fault; re-arm for another). */
  arm(plan: FaultPlan): void {
    this.plan = plan;
    this.seen = 0;
  }

  disarm(): void {
    this.plan = undefined;
  }

  /** Counts a call; throws (or, for a short write, returns 'short') when it is the armed one. */
  check(label: string, method: string): 'short' | undefined {
    this.calls.set(label, (this.calls.get(label) ?? 0) + 1);
    const plan = this.plan;
    if (!plan || plan.label !== label || !FAILABLE.has(method)) return undefined;
    if (++this.seen !== plan.nth) return undefined;
    this.plan = undefined;
    this.fired.push(plan);
    if (plan.kind === 'short' && method === 'write') return 'short';
    throw new InjectedFault(label, plan.kind === 'short' ? 'ENOSPC' : plan.kind);
  }

  private label(path: string, method: string): string {
    return `${this.role(path)}.${method}`;
  }

  open(path: string, options?: OpenOptions): FileHandle {
    this.check(this.label(path, 'open'), 'open');
    return new FaultyFile(this, this.inner.open(path, options), this.role(path));
  }

  exists(path: string): boolean {
    return this.inner.exists(path);
  }

  fileSize(path: string): number {
    return this.inner.fileSize(path);
  }

  delete(path: string, options?: DeleteOptions): void {
    this.check(this.label(path, 'delete'), 'delete');
    this.inner.delete(path, options);
  }

  syncDir(path: string): void {
    this.check(this.label(path, 'syncDir'), 'syncDir');
    this.inner.syncDir(path);
  }

  mkdir(path: string): void {
    this.check(this.label(path, 'mkdir'), 'mkdir');
    this.inner.mkdir(path);
  }

  rename(from: string, to: string): void {
    this.check(this.label(to, 'rename'), 'rename');
    this.inner.rename(from, to);
  }
}

class FaultyFile implements FileHandle {
  lock?: (level: LockLevel) => boolean;
  unlock?: (level: 0 | 1) => boolean;
  checkReserved?: () => boolean;

  constructor(
    private readonly fs: FaultyFileSystem,
    private readonly file: FileHandle,
    private readonly role: string,
  ) {
    if (file.lock) this.lock = (level) => file.lock!(level);
    if (file.unlock) this.unlock = (level) => file.unlock!(level);
    if (file.checkReserved) this.checkReserved = () => file.checkReserved!();
  }

  get path(): string {
    return this.file.path;
  }

  read(buf: Uint8Array, offset: number): number {
    this.fs.check(`${this.role}.read`, 'read');
    return this.file.read(buf, offset);
  }

  write(buf: Uint8Array, offset: number): void {
    const label = `${this.role}.write`;
    if (this.fs.check(label, 'write') === 'short') {
      const half = buf.length >> 1;
      if (half > 0) this.file.write(buf.subarray(0, half), offset);
      throw new InjectedFault(label, 'short', ` (short write: ${half} of ${buf.length} bytes)`);
    }
    this.file.write(buf, offset);
  }

  truncate(size: number): void {
    this.fs.check(`${this.role}.truncate`, 'truncate');
    this.file.truncate(size);
  }

  sync(): void {
    this.fs.check(`${this.role}.sync`, 'sync');
    this.file.sync();
  }

  size(): number {
    return this.file.size();
  }

  close(): void {
    this.file.close();
  }
}
