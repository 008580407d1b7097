/**
 * A Mycelite FileSystem over the Origin Private File System, for a dedicated Worker.
 *
 * OPFS's synchronous access handles are what SQLite's synchronous VFS needs, but they are created
 * asynchronously and only one may be open per file. So, like sqlite-wasm's opfs-sahpool VFS, this keeps a
 * **pool** of OPFS files whose handles are all opened once at start: each slot file begins with a 4 KiB
 * header naming the path it holds (or none: free), and the file's data follows. Opening, creating,
 * deleting and renaming are then synchronous header writes:
 *
 * - create: take a free slot, write its header (path + a generation number), flush;
 * - delete: zero the header, flush, truncate the data;
 * - rename(from, to): rewrite `from`'s header to name `to` with a higher generation, flush, then free the
 *   slot that held `to`. A crash in between leaves two slots naming `to`: at start the higher generation
 *   wins, so a rename is atomic.
 *
 * Free slots are topped up in the background (creating an OPFS file is async); an open that finds none
 * throws with what to do. Handles stay open until `close()`; another worker (tab) cannot open the same
 * pool meanwhile, which is the cross-tab exclusion the writer relies on (together with a Web Lock).
 */
import type { FileHandle, FileSystem, OpenOptions } from '../files/file-system.js';
import { type OpfsDirectoryHandle, opfsDirectory, type SyncAccessHandle } from './opfs-types.js';

const HEADER = 4096;
const MAGIC = 0x4d594350; // "MYCP"
const MAX_NAME = HEADER - 16;

interface Slot {
  /** The OPFS file's own name in the pool directory. */
  readonly file: string;
  readonly sah: SyncAccessHandle;
  /** The path it holds; undefined when free (or deleted while still open). */
  path: string | undefined;
  gen: bigint;
  refs: number;
}

export interface PoolOptions {
  /** Slot files to have at start (default 16). */
  capacity?: number;
  /** Free slots below which more are created in the background (default 6). */
  minFree?: number;
  /** How long to wait for another worker (a closing tab) to let go of the pool's files (ms, default 10 s). */
  waitMs?: number;
}

function fail(what: string, path: string, e: unknown): Error {
  const err = e as Error;
  const hint =
    err?.name === 'QuotaExceededError'
      ? ": the browser's storage quota is full (free space, or ask for more with navigator.storage.persist())"
      : '';
  return new Error(`${what} ${path}: ${err?.message ?? String(e)}${hint}`, { cause: e });
}

class PoolFile implements FileHandle {
  private closed = false;

  constructor(
    readonly path: string,
    private readonly slot: Slot,
    private readonly pool: OpfsPoolFileSystem,
    private readonly readonly: boolean,
  ) {}

  /** A closed handle must not reach its slot: the slot may hold another file by now. */
  private live(what: string): void {
    if (this.closed) throw new Error(`${what} ${this.path}: the file handle is closed`);
  }

  read(buf: Uint8Array, offset: number): number {
    this.live('read');
    let n: number;
    try {
      n = this.slot.sah.read(buf, { at: offset + HEADER });
    } catch (e) {
      throw fail('read', this.path, e);
    }
    if (n < buf.length) buf.fill(0, n);
    return n;
  }

  write(buf: Uint8Array, offset: number): void {
    this.live('write');
    if (this.readonly) throw new Error(`write ${this.path}: the file is open read-only`);
    let n: number;
    try {
      n = this.slot.sah.write(buf, { at: offset + HEADER });
    } catch (e) {
      throw fail('write', this.path, e);
    }
    if (n !== buf.length) throw fail('write', this.path, new Error(`wrote ${n} of ${buf.length} bytes`));
  }

  truncate(size: number): void {
    this.live('truncate');
    if (this.readonly) throw new Error(`truncate ${this.path}: the file is open read-only`);
    try {
      this.slot.sah.truncate(size + HEADER);
    } catch (e) {
      throw fail('truncate', this.path, e);
    }
  }

  sync(): void {
    this.live('flush');
    try {
      this.slot.sah.flush();
    } catch (e) {
      throw fail('flush', this.path, e);
    }
  }

  size(): number {
    this.live('size of');
    return Math.max(0, this.slot.sah.getSize() - HEADER);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pool.release(this.slot);
  }
}

/** The pool of OPFS files under one directory, as a synchronous FileSystem. */
export class OpfsPoolFileSystem implements FileSystem {
  private readonly byPath = new Map<string, Slot>();
  private readonly free: Slot[] = [];
  private readonly all: Slot[] = [];
  private readonly dirs = new Set<string>(['/']);
  private readonly locks = new Set<string>();
  private gen = 0n;
  private growing: Promise<void> | undefined;
  private growError: Error | undefined;
  private nextFile = 0;
  private closed = false;

  private constructor(
    private readonly dir: OpfsDirectoryHandle,
    readonly label: string,
    private readonly minFree: number,
  ) {}

  /** Opens (creating) the pool in the OPFS directory `parts` (e.g. ['mycelite', 'app']). */
  static async open(parts: string[], options: PoolOptions = {}): Promise<OpfsPoolFileSystem> {
    const dir = await opfsDirectory(parts);
    const pool = new OpfsPoolFileSystem(dir, parts.join('/'), options.minFree ?? 6);
    try {
      await pool.load(options.waitMs ?? 10_000);
      await pool.grow(Math.max(0, (options.capacity ?? 16) - pool.free.length - pool.byPath.size));
    } catch (e) {
      pool.close();
      throw e;
    }
    return pool;
  }

  private async load(waitMs: number): Promise<void> {
    const files: string[] = [];
    for await (const h of this.dir.values()) if (h.kind === 'file') files.push(h.name);
    // All handles at once: each is an asynchronous round trip, and opening them one after the other
    // made up most of the time to open a pool. Every handle opened is kept (close() releases it) even
    // when another failed.
    const opened = await Promise.allSettled(files.map((name) => this.openHandle(name, waitMs)));
    const slots: Slot[] = [];
    opened.forEach((r, i) => {
      if (r.status !== 'fulfilled') return;
      const slot: Slot = { file: files[i]!, sah: r.value, path: undefined, gen: 0n, refs: 0 };
      this.all.push(slot);
      slots.push(slot);
    });
    const failed = opened.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    const seen = new Map<string, Slot>();
    for (const slot of slots) {
      const m = /^slot-(\d+)$/.exec(slot.file);
      if (m) this.nextFile = Math.max(this.nextFile, Number(m[1]) + 1);
      this.readHeader(slot);
      if (slot.gen > this.gen) this.gen = slot.gen;
      const other = slot.path === undefined ? undefined : seen.get(slot.path);
      if (slot.path !== undefined && (!other || other.gen < slot.gen)) {
        // A crash inside rename left two slots naming one path: the newer generation wins.
        if (other) this.recycle(other);
        seen.set(slot.path, slot);
      } else {
        this.recycle(slot);
      }
    }
    for (const [path, slot] of seen) this.byPath.set(path, slot);
  }

  /** Another tab's worker may still be letting go of the file: retry until `waitMs`. */
  private async openHandle(name: string, waitMs: number): Promise<SyncAccessHandle> {
    const until = Date.now() + waitMs;
    for (;;) {
      try {
        const fh = await this.dir.getFileHandle(name, { create: true });
        return await fh.createSyncAccessHandle();
      } catch (e) {
        if ((e as Error).name !== 'NoModificationAllowedError' || Date.now() > until) {
          throw new Error(
            `cannot open OPFS file ${this.label}/${name}: ${(e as Error).message}` +
              ((e as Error).name === 'NoModificationAllowedError'
                ? ' (another tab or worker holds it: close the other tab, or wait for it to hand over)'
                : ''),
            { cause: e },
          );
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  private readHeader(slot: Slot): void {
    const h = new Uint8Array(HEADER);
    const n = slot.sah.read(h, { at: 0 });
    const v = new DataView(h.buffer);
    if (n < 16 || v.getUint32(0) !== MAGIC) return;
    const len = v.getUint16(12);
    if (len === 0 || len > MAX_NAME) return;
    slot.gen = v.getBigUint64(4);
    slot.path = new TextDecoder().decode(h.subarray(16, 16 + len));
  }

  private writeHeader(slot: Slot, path: string | undefined): void {
    const h = new Uint8Array(path === undefined ? 16 : HEADER);
    if (path !== undefined) {
      const name = new TextEncoder().encode(path);
      if (name.length > MAX_NAME) throw new Error(`path too long for the OPFS pool: ${path}`);
      this.gen++;
      const v = new DataView(h.buffer);
      v.setUint32(0, MAGIC);
      v.setBigUint64(4, this.gen);
      v.setUint16(12, name.length);
      h.set(name, 16);
      slot.gen = this.gen;
    }
    if (slot.sah.getSize() < HEADER) slot.sah.truncate(HEADER);
    slot.sah.write(h, { at: 0 });
    slot.sah.flush();
    slot.path = path;
  }

  /** Marks a slot free: header cleared, data dropped. */
  private recycle(slot: Slot): void {
    if (slot.path !== undefined || slot.sah.getSize() > HEADER) {
      slot.sah.truncate(HEADER);
      slot.sah.write(new Uint8Array(16), { at: 0 });
      slot.sah.flush();
    }
    slot.path = undefined;
    slot.gen = 0n;
    if (!this.free.includes(slot)) this.free.push(slot);
  }

  private grow(count: number): Promise<void> {
    if (count <= 0) return this.growing ?? Promise.resolve();
    const run = (async () => {
      for (let i = 0; i < count && !this.closed; i++) {
        const name = `slot-${this.nextFile++}`;
        const sah = await this.openHandle(name, 0);
        const slot: Slot = { file: name, sah, path: undefined, gen: 0n, refs: 0 };
        this.all.push(slot);
        this.recycle(slot);
      }
    })();
    const done = run.then(
      () => {
        if (this.growing === done) this.growing = undefined;
      },
      (e: unknown) => {
        this.growError = e as Error;
        if (this.growing === done) this.growing = undefined;
      },
    );
    this.growing = done;
    return run;
  }

  private take(path: string): Slot {
    const slot = this.free.pop();
    if (this.free.length < this.minFree && !this.growing) void this.grow(this.minFree * 2).catch(() => {});
    if (!slot) {
      throw new Error(
        `create ${path}: the OPFS pool ${this.label} has no free file left (${this.all.length} in use; ` +
          `more are being added${this.growError ? `, but adding failed: ${this.growError.message}` : ''}). Retry in a moment`,
      );
    }
    return slot;
  }

  release(slot: Slot): void {
    slot.refs--;
    if (slot.refs === 0 && slot.path === undefined && !this.closed) this.recycle(slot);
  }

  open(path: string, options: OpenOptions = {}): FileHandle {
    if (this.closed) throw new Error(`open ${path}: the OPFS pool ${this.label} is closed`);
    let slot = this.byPath.get(path);
    if (!slot) {
      if (!options.create) throw new Error(`open ${path}: no such file`);
      slot = this.take(path);
      try {
        this.writeHeader(slot, path);
      } catch (e) {
        this.free.push(slot);
        throw fail('create', path, e);
      }
      this.byPath.set(path, slot);
    }
    slot.refs++;
    return new PoolFile(path, slot, this, options.readonly === true);
  }

  exists(path: string): boolean {
    if (this.byPath.has(path) || this.dirs.has(path)) return true;
    const prefix = path.endsWith('/') ? path : `${path}/`;
    for (const p of this.byPath.keys()) if (p.startsWith(prefix)) return true;
    return false;
  }

  fileSize(path: string): number {
    const slot = this.byPath.get(path);
    return slot ? Math.max(0, slot.sah.getSize() - HEADER) : 0;
  }

  delete(path: string): void {
    const slot = this.byPath.get(path);
    if (!slot) return;
    this.byPath.delete(path);
    try {
      this.writeHeader(slot, undefined);
      if (slot.refs === 0) this.recycle(slot);
    } catch (e) {
      throw fail('delete', path, e);
    }
  }

  /** Every create, delete and rename is already durable (a flushed header write). */
  syncDir(_path: string): void {}

  mkdir(path: string): void {
    for (let p = path; p.length > 1; p = p.slice(0, Math.max(1, p.lastIndexOf('/')))) this.dirs.add(p);
  }

  rename(from: string, to: string): void {
    const src = this.byPath.get(from);
    if (!src) throw new Error(`rename ${from}: no such file`);
    if (from === to) return;
    const old = this.byPath.get(to);
    try {
      this.writeHeader(src, to);
      this.byPath.delete(from);
      this.byPath.set(to, src);
      if (old) {
        this.writeHeader(old, undefined);
        if (old.refs === 0) this.recycle(old);
      }
    } catch (e) {
      throw fail('rename', `${from} to ${to}`, e);
    }
  }

  /** Process-local: across tabs, the pool itself is exclusive (one worker holds its handles). */
  tryLockExclusive(path: string): { release(): void } | undefined {
    if (this.locks.has(path)) return undefined;
    this.locks.add(path);
    return { release: () => this.locks.delete(path) };
  }

  /** Paths held, for diagnostics. */
  paths(): string[] {
    return [...this.byPath.keys()].sort();
  }

  /** Closes every OPFS handle (another worker can then open the pool). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.all) {
      try {
        s.sah.close();
      } catch {
        // already closed
      }
    }
  }
}
