/**
 * An in-memory FileSystem: SQLite's temporary files in the browser worker, and time-travel copies of a
 * database (a replay into memory, queried read-only). Nothing here is durable.
 */
import type { FileHandle, FileSystem, OpenOptions } from '../files/file-system.js';

interface Entry {
  data: Uint8Array;
  size: number;
}

class MemoryFile implements FileHandle {
  constructor(
    readonly path: string,
    private readonly entry: Entry,
  ) {}

  read(buf: Uint8Array, offset: number): number {
    const n = Math.max(0, Math.min(buf.length, this.entry.size - offset));
    if (n > 0) buf.set(this.entry.data.subarray(offset, offset + n));
    if (n < buf.length) buf.fill(0, n);
    return n;
  }

  write(buf: Uint8Array, offset: number): void {
    const end = offset + buf.length;
    this.reserve(end);
    this.entry.data.set(buf, offset);
    if (end > this.entry.size) this.entry.size = end;
  }

  private reserve(size: number): void {
    if (size <= this.entry.data.length) return;
    const next = new Uint8Array(Math.max(size, this.entry.data.length * 2, 4096));
    next.set(this.entry.data.subarray(0, this.entry.size));
    this.entry.data = next;
  }

  truncate(size: number): void {
    if (size > this.entry.size) this.reserve(size);
    else this.entry.data.fill(0, size, this.entry.size);
    this.entry.size = size;
  }

  sync(): void {}

  size(): number {
    return this.entry.size;
  }

  close(): void {}
}

export class MemoryFileSystem implements FileSystem {
  private readonly files = new Map<string, Entry>();

  open(path: string, options: OpenOptions = {}): FileHandle {
    let e = this.files.get(path);
    if (!e) {
      if (!options.create) throw new Error(`open ${path}: no such file`);
      e = { data: new Uint8Array(0), size: 0 };
      this.files.set(path, e);
    }
    return new MemoryFile(path, e);
  }

  exists(path: string): boolean {
    if (this.files.has(path)) return true;
    const prefix = path.endsWith('/') ? path : `${path}/`;
    for (const p of this.files.keys()) if (p.startsWith(prefix)) return true;
    return false;
  }

  fileSize(path: string): number {
    return this.files.get(path)?.size ?? 0;
  }

  delete(path: string): void {
    this.files.delete(path);
  }

  syncDir(_path: string): void {}

  mkdir(_path: string): void {}

  rename(from: string, to: string): void {
    const e = this.files.get(from);
    if (!e) throw new Error(`rename ${from}: no such file`);
    this.files.delete(from);
    this.files.set(to, e);
  }
}
