/**
 * Power loss, simulated. SIGKILL keeps the operating system's page cache, so it never loses a write that
 * was not fsynced; a power cut does. `PowerLossFileSystem` wraps another FileSystem, passes every call
 * through to the real files, and keeps beside them a model of what a disk would hold durably:
 *
 * - a file's **data and size** as of its last successful `sync()` (fdatasync: data and size, not its
 *   name); a new file holds nothing durable until it is synced;
 * - a **directory entry** (a file's creation, deletion, rename; a `mkdir`) only once the directory
 *   holding it was synced (`syncDir`, or `delete(path, { syncDir: true })`); a file in a directory whose own creation
 *   is not durable is gone with it;
 * - a **failed sync** (fsyncgate): the writes it should have flushed are never durable, and a later sync
 *   that succeeds does not make them so (Linux may mark the pages clean after a failed writeback).
 *
 * At a chosen sync point (`crashAt`: the Nth `sync`, `syncDir` or `delete(path, { syncDir: true })` of any file, or of
 * one label such as `journal.sync`, labels as in faulty-fs.ts) the world stops: that call and every later
 * one throws `PowerLossError`, except closing files and releasing locks. `recover()` then rewrites the
 * real files to the durable state: unsynced writes dropped, sizes back, files created without a directory
 * sync removed, renames and deletes without one undone. With a `seed`, recovery is torn instead: each
 * 4 KiB page changed since its last sync keeps its old or its new content (or a mix of 512-byte sectors),
 * each file its old or new size, and a random prefix of the unsynced directory changes survives (a
 * metadata journal commits in order); `keepDirectoryChanges` keeps them all and no unsynced data. Only paths under the tracked root are modelled; files that existed
 * when first seen count as durable. Directories are never removed (one whose creation was not durable is
 * emptied of the files it held). Runtime-neutral; used by test/power-loss.test.ts and
 * test/fsync-failure.test.ts (docs/RELIABILITY.md, "Power loss").
 */
import { roleOf } from './faulty-fs.js';
import type { DeleteOptions, FileHandle, FileSystem, LockLevel, OpenOptions } from './file-system.js';

/** Thrown by every call after the simulated power cut. */
export class PowerLossError extends Error {
  readonly code = 'EIO';
  constructor(readonly label: string) {
    super(`EIO: power lost (simulated) at ${label}`);
    this.name = 'PowerLossError';
  }
}

/** Where the power goes: the `nth` sync point (1-based, counted from `crashAt`), of `label` or of any. */
export interface CrashPlan {
  nth: number;
  label?: string;
}

/** How `recover()` treats what was not durable. */
export interface RecoverOptions {
  /** Torn recovery (see the module comment) drawn from this seed; absent: nothing unsynced survives. */
  seed?: number;
  /**
   * Without a seed: every directory change survives (the file system's metadata journal committed them)
   * while data not synced does not.
   */
  keepDirectoryChanges?: boolean;
  /**
   * Files (by path) whose unsynced data all reached the disk (the page cache was written back): a
   * deterministic way to keep one file's writes and drop another's.
   */
  keepUnsynced?: (path: string) => boolean;
}

/** What `recover()` did. */
export interface RecoverResult {
  /** Files rewritten to their durable content. */
  rewritten: number;
  /** Files removed (their directory entry was not durable). */
  removed: number;
  /** Unsynced directory changes that survived (torn recovery) of those pending. */
  keptChanges: number;
  pendingChanges: number;
}

/** A write or a truncate not yet made durable. */
type Op = { offset: number; bytes: Uint8Array } | { size: number };

/** One file (an inode): its durable bytes, and the operations since its last sync. */
class FileState {
  private data = new Uint8Array(0);
  size = 0;
  pending: Op[] = [];

  /** The durable content (a copy). */
  durable(): Uint8Array {
    return this.data.slice(0, this.size);
  }

  /** Makes `ops` durable, in order. */
  commit(ops: Op[]): void {
    for (const op of ops) {
      if ('size' in op) {
        this.resize(op.size);
        continue;
      }
      const end = op.offset + op.bytes.length;
      if (end > this.size) this.resize(end);
      this.data.set(op.bytes, op.offset);
    }
  }

  /** The smallest size an unsynced truncate cut the file to, when below its durable size. */
  pendingCut(): number | undefined {
    let cut: number | undefined;
    for (const op of this.pending) {
      if ('size' in op && op.size < this.size) cut = Math.min(cut ?? op.size, op.size);
    }
    return cut;
  }

  /** Takes the operations a sync starting now covers. */
  take(): Op[] {
    const ops = this.pending;
    this.pending = [];
    return ops;
  }

  private resize(size: number): void {
    if (size > this.data.length) {
      const grown = new Uint8Array(Math.max(size, this.data.length * 2));
      grown.set(this.data.subarray(0, this.size));
      this.data = grown;
    } else if (size < this.size) {
      this.data.fill(0, size, this.size);
    }
    this.size = size;
  }
}

const DIR = 'dir';
type Entry = FileState | typeof DIR;
/** A directory change: `path` now names `entry` (undefined: removed). A group is atomic (a rename). */
type Change = { path: string; entry: Entry | undefined };

const parentOf = (p: string): string => p.slice(0, Math.max(1, p.lastIndexOf('/')));

/** mulberry32. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class PowerLossFileSystem implements FileSystem {
  private root: string | undefined;
  /** The namespace as it is (real files), and as a disk would hold it after a power cut. */
  private readonly entries = new Map<string, Entry>();
  private readonly durableEntries = new Map<string, Entry>();
  /** Directory changes not yet durable, in order. */
  private pending: Change[][] = [];
  /** Paths looked at (registered, or known to be missing then). */
  private readonly seen = new Set<string>();
  private plan: CrashPlan | undefined;
  private planSeen = 0;
  private down: string | undefined;
  /** Label of every sync point since `track`, in order. */
  readonly points: string[] = [];
  readonly tryLockExclusive?: (path: string) => { release(): void } | undefined;

  constructor(
    readonly inner: FileSystem,
    readonly role: (path: string) => string = roleOf,
  ) {
    if (inner.tryLockExclusive) this.tryLockExclusive = (p) => inner.tryLockExclusive!(p);
  }

  /**
   * Models the files under `root` from now on (forgetting any earlier model): what exists there now
   * counts as durable. Everything else passes through untouched.
   */
  track(root: string): void {
    this.reset();
    this.root = root.endsWith('/') ? root.slice(0, -1) : root;
  }

  /** Stops modelling: every call passes through. */
  untrack(): void {
    this.reset();
    this.root = undefined;
  }

  /** Cuts the power at a sync point (see CrashPlan); the sync there does not happen. */
  crashAt(plan: CrashPlan): void {
    this.plan = plan;
    this.planSeen = 0;
  }

  /** Cuts the power now. */
  crash(label = 'crash()'): void {
    this.down ??= label;
    this.plan = undefined;
  }

  /** True after the power was cut (until `recover`). */
  get crashed(): boolean {
    return this.down !== undefined;
  }

  /** Sync points since `track`. */
  get syncPoints(): number {
    return this.points.length;
  }

  /**
   * Cuts the power if it is not cut yet, then rewrites the real files under the root to what a disk
   * would hold (strict, or torn with `seed`), and starts a fresh model of them (all durable).
   */
  recover(options: RecoverOptions = {}): RecoverResult {
    const root = this.root;
    if (root === undefined) throw new Error('PowerLossFileSystem.recover: nothing is tracked');
    this.crash();
    const rand = options.seed === undefined ? undefined : prng(options.seed);
    const final = new Map(this.durableEntries);
    const keep = rand
      ? Math.floor(rand() * (this.pending.length + 1))
      : options.keepDirectoryChanges
        ? this.pending.length
        : 0;
    for (const group of this.pending.slice(0, keep)) for (const c of group) set(final, c);
    const present = (p: string): Entry | undefined => {
      for (let a = parentOf(p); a.length > root.length; a = parentOf(a)) {
        if (final.get(a) !== DIR) return undefined;
      }
      return final.get(p);
    };
    const current = new Map<FileState, string>();
    for (const [p, e] of this.entries) if (e !== DIR) current.set(e, p);
    const paths = new Set([...this.entries.keys(), ...this.durableEntries.keys(), ...final.keys()]);
    const contents = new Map<string, Uint8Array>();
    for (const p of paths) {
      const e = present(p);
      if (!(e instanceof FileState)) continue;
      const now = current.get(e);
      if (now !== undefined && options.keepUnsynced?.(p)) contents.set(p, this.readAll(now));
      else if (rand && now !== undefined)
        contents.set(p, torn(e.durable(), this.readAll(now), rand, e.pendingCut()));
      else contents.set(p, e.durable());
    }
    let removed = 0;
    for (const p of paths) {
      if (this.entries.get(p) instanceof FileState && !contents.has(p)) {
        this.inner.delete(p);
        removed++;
      }
    }
    for (const [p, bytes] of contents) {
      if (!this.inner.exists(parentOf(p))) this.inner.mkdir(parentOf(p));
      const f = this.inner.open(p, { create: true });
      try {
        f.truncate(0);
        if (bytes.length > 0) f.write(bytes, 0);
      } finally {
        f.close();
      }
    }
    const result = {
      rewritten: contents.size,
      removed,
      keptChanges: keep,
      pendingChanges: this.pending.length,
    };
    this.reset();
    return result;
  }

  private reset(): void {
    this.entries.clear();
    this.durableEntries.clear();
    this.pending = [];
    this.seen.clear();
    this.plan = undefined;
    this.down = undefined;
    this.points.length = 0;
  }

  private readAll(p: string): Uint8Array {
    const f = this.inner.open(p, { readonly: true });
    try {
      const b = new Uint8Array(f.size());
      f.read(b, 0);
      return b;
    } finally {
      f.close();
    }
  }

  /** Throws once the power is cut. */
  alive(): void {
    if (this.down !== undefined) throw new PowerLossError(this.down);
  }

  tracked(p: string): boolean {
    return this.root !== undefined && p.startsWith(`${this.root}/`);
  }

  /** A sync point: counted, and where the plan says so, the power cut (the sync does not happen). */
  syncPoint(label: string): void {
    this.alive();
    this.points.push(label);
    const plan = this.plan;
    if (!plan || (plan.label !== undefined && plan.label !== label)) return;
    if (++this.planSeen !== plan.nth) return;
    this.crash(label);
    this.alive();
  }

  /** Registers the directories above `p` (under the root) that exist now as durable. */
  private knowParents(p: string): void {
    for (let a = parentOf(p); a.length > this.root!.length; a = parentOf(a)) {
      if (this.seen.has(a)) break;
      this.seen.add(a);
      if (this.inner.exists(a)) this.register(a, DIR);
    }
  }

  /** Registers the file at `p`, if it exists and was not seen yet, as durable with its content now. */
  private knowFile(p: string): void {
    if (this.seen.has(p)) return;
    this.knowParents(p);
    this.seen.add(p);
    if (!this.inner.exists(p)) return;
    const state = new FileState();
    state.commit([{ offset: 0, bytes: this.readAll(p) }]);
    this.register(p, state);
  }

  private register(p: string, e: Entry): void {
    this.entries.set(p, e);
    this.durableEntries.set(p, e);
  }

  private change(group: Change[]): void {
    for (const c of group) set(this.entries, c);
    this.pending.push(group);
  }

  private label(p: string, method: string): string {
    return `${this.role(p)}.${method}`;
  }

  open(p: string, options?: OpenOptions): FileHandle {
    this.alive();
    if (!this.tracked(p)) return new PowerLossFile(this, this.inner.open(p, options), undefined, '');
    this.knowFile(p);
    const handle = this.inner.open(p, options);
    let state = this.entries.get(p);
    if (!(state instanceof FileState)) {
      state = new FileState();
      this.seen.add(p);
      this.change([{ path: p, entry: state }]);
    }
    return new PowerLossFile(this, handle, state, this.role(p));
  }

  exists(p: string): boolean {
    this.alive();
    return this.inner.exists(p);
  }

  fileSize(p: string): number {
    this.alive();
    return this.inner.fileSize(p);
  }

  delete(p: string, options?: DeleteOptions): void {
    this.alive();
    if (!this.tracked(p)) {
      this.inner.delete(p, options);
      return;
    }
    this.knowFile(p);
    if (!this.inner.exists(p)) return;
    this.inner.delete(p);
    if (this.entries.has(p)) this.change([{ path: p, entry: undefined }]);
    if (options?.syncDir) this.syncDir(p);
  }

  syncDir(p: string): void {
    this.alive();
    if (!this.tracked(p)) {
      this.inner.syncDir(p);
      return;
    }
    this.knowParents(p);
    this.syncPoint(this.label(p, 'syncDir'));
    this.inner.syncDir(p);
    const dir = parentOf(p);
    const rest: Change[][] = [];
    for (const group of this.pending) {
      if (group.some((c) => parentOf(c.path) === dir)) for (const c of group) set(this.durableEntries, c);
      else rest.push(group);
    }
    this.pending = rest;
  }

  mkdir(p: string): void {
    this.alive();
    if (!this.tracked(p)) {
      this.inner.mkdir(p);
      return;
    }
    this.knowParents(p);
    const made: string[] = [];
    for (let a = p; a.length > this.root!.length && !this.inner.exists(a); a = parentOf(a)) made.unshift(a);
    this.inner.mkdir(p);
    for (const a of made) {
      this.seen.add(a);
      this.change([{ path: a, entry: DIR }]);
    }
  }

  rename(from: string, to: string): void {
    this.alive();
    if (!this.tracked(from) && !this.tracked(to)) {
      this.inner.rename(from, to);
      return;
    }
    this.knowFile(from);
    this.knowFile(to);
    this.inner.rename(from, to);
    this.change([
      { path: to, entry: this.entries.get(from) },
      { path: from, entry: undefined },
    ]);
  }
}

function set(map: Map<string, Entry>, c: Change): void {
  if (c.entry === undefined) map.delete(c.path);
  else map.set(c.path, c.entry);
}

/**
 * What a disk may hold after a power cut for a file durable at `old` and now `neu` (see the module
 * comment): the old or the new size; each page the old or new content, or a mix of sectors. Past the new
 * end only the old content exists (a truncate that did not reach the disk left the old bytes). An
 * unsynced truncate to `cut` is metadata, ordered before the blocks written after it: either it reached
 * the disk (nothing of the old content past `cut` remains) or nothing written after it did.
 */
function torn(old: Uint8Array, neu: Uint8Array, rand: () => number, cut?: number): Uint8Array {
  if (cut !== undefined) {
    if (rand() < 0.5) return old;
    old = old.subarray(0, cut);
  }
  const out = new Uint8Array(rand() < 0.5 ? old.length : neu.length);
  const PAGE = 4096;
  const SECTOR = 512;
  const at = (b: Uint8Array, i: number): number => (i < b.length ? b[i]! : 0);
  for (let start = 0; start < out.length; start += PAGE) {
    const end = Math.min(start + PAGE, out.length);
    const r = rand();
    const mode = r < 0.4 ? 'old' : r < 0.8 ? 'new' : 'sectors';
    for (let s = start; s < end; s += SECTOR) {
      const pick = mode === 'old' || (mode === 'sectors' && rand() < 0.5) ? old : neu;
      for (let i = s; i < Math.min(s + SECTOR, end); i++) out[i] = at(i < neu.length ? pick : old, i);
    }
  }
  return out;
}

class PowerLossFile implements FileHandle {
  lock?: (level: LockLevel) => boolean;
  unlock?: (level: 0 | 1) => boolean;
  checkReserved?: () => boolean;
  syncBegin?: () => () => void;

  constructor(
    private readonly fs: PowerLossFileSystem,
    private readonly file: FileHandle,
    private readonly state: FileState | undefined,
    private readonly role: string,
  ) {
    if (file.lock) {
      this.lock = (level) => {
        if (level !== 0) fs.alive();
        return file.lock!(level);
      };
    }
    if (file.unlock) this.unlock = (level) => file.unlock!(level);
    if (file.checkReserved) {
      this.checkReserved = () => {
        fs.alive();
        return file.checkReserved!();
      };
    }
    if (file.syncBegin) {
      this.syncBegin = () => {
        if (state) fs.syncPoint(`${role}.sync`);
        else fs.alive();
        // A flush covers the writes made before it starts; if it fails, they are never durable.
        const ops = state?.take() ?? [];
        const wait = file.syncBegin!();
        return () => {
          wait();
          fs.alive();
          state?.commit(ops);
        };
      };
    }
  }

  get path(): string {
    return this.file.path;
  }

  read(buf: Uint8Array, offset: number): number {
    this.fs.alive();
    return this.file.read(buf, offset);
  }

  write(buf: Uint8Array, offset: number): void {
    this.fs.alive();
    try {
      this.file.write(buf, offset);
      this.state?.pending.push({ offset, bytes: buf.slice() });
    } catch (e) {
      // Part of it may have reached the file (a short write): note what did.
      if (this.state) {
        const n = Math.max(0, Math.min(buf.length, this.file.size() - offset));
        const bytes = new Uint8Array(n);
        if (n > 0) this.file.read(bytes, offset);
        this.state.pending.push({ offset, bytes });
      }
      throw e;
    }
  }

  truncate(size: number): void {
    this.fs.alive();
    this.file.truncate(size);
    this.state?.pending.push({ size });
  }

  sync(): void {
    if (this.state) this.fs.syncPoint(`${this.role}.sync`);
    else this.fs.alive();
    // fsyncgate: a failed flush loses what it should have written, even if a later one succeeds.
    const ops = this.state?.take() ?? [];
    this.file.sync();
    this.state?.commit(ops);
  }

  size(): number {
    this.fs.alive();
    return this.file.size();
  }

  close(): void {
    this.file.close();
  }
}
