/**
 * SQLite's rollback journal under journal durability (docs/ARCHITECTURE.md): the database file never
 * holds an uncommitted byte, so this journal only serves ROLLBACK, savepoints and cache spill inside a
 * transaction and is worthless after a crash. It lives in memory up to a budget and in a file past it,
 * is never fsynced, and SQLite's delete of it just empties it.
 */
import type { FileHandle, FileSystem } from '../files/file-system.js';

/** The moved rollback journal of one database. */
export class MovedRollback {
  private buf = new Uint8Array(0);
  private length = 0;
  private file: FileHandle | undefined;

  constructor(
    private readonly fs: FileSystem,
    /** Where it goes past the budget. */
    readonly path: string,
    private readonly budget: number,
  ) {}

  size(): number {
    return this.file ? this.file.size() : this.length;
  }

  /** Empties it (SQLite deleted or truncated it). */
  clear(): void {
    this.length = 0;
    if (this.buf.length > 1 << 20) this.buf = new Uint8Array(0);
    if (this.file) {
      const f = this.file;
      this.file = undefined;
      f.close();
      this.fs.delete(this.path);
    }
  }

  /** A FileHandle for the VFS; closing it keeps the content (SQLite deletes it by name). */
  handle(): FileHandle {
    return {
      path: this.path,
      read: (buf, offset) => this.read(buf, offset),
      write: (buf, offset) => this.write(buf, offset),
      truncate: (size) => this.truncate(size),
      sync: () => {},
      size: () => this.size(),
      close: () => {},
    };
  }

  private read(buf: Uint8Array, offset: number): number {
    if (this.file) return this.file.read(buf, offset);
    const n = Math.max(0, Math.min(buf.length, this.length - offset));
    if (n > 0) buf.set(this.buf.subarray(offset, offset + n));
    if (n < buf.length) buf.fill(0, n);
    return n;
  }

  private write(bytes: Uint8Array, offset: number): void {
    const end = offset + bytes.length;
    if (!this.file && end > this.budget) this.spill();
    if (this.file) {
      this.file.write(bytes, offset);
      return;
    }
    if (end > this.buf.length) {
      const grown = new Uint8Array(Math.min(this.budget, Math.max(end, this.buf.length * 2, 64 << 10)));
      grown.set(this.buf.subarray(0, this.length));
      this.buf = grown;
    }
    if (offset > this.length) this.buf.fill(0, this.length, offset);
    this.buf.set(bytes, offset);
    if (end > this.length) this.length = end;
  }

  private truncate(size: number): void {
    if (this.file) {
      this.file.truncate(size);
      return;
    }
    if (size > this.length) {
      this.write(new Uint8Array(size - this.length), this.length);
      return;
    }
    this.length = size;
  }

  private spill(): void {
    const f = this.fs.open(this.path, { create: true });
    try {
      f.truncate(0);
      f.write(this.buf.subarray(0, this.length), 0);
    } catch (e) {
      f.close();
      throw e;
    }
    this.file = f;
    this.buf = new Uint8Array(0);
  }
}
