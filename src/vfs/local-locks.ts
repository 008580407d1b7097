/**
 * SQLite's locking protocol between connections of one process, for storage that has no locks of its
 * own (the fallback when a FileHandle offers none). One table per file path.
 */
import type { LockLevel } from '../files/file-system.js';

interface Table {
  shared: number;
  /** Owner holding RESERVED, PENDING or EXCLUSIVE. */
  writer: object | undefined;
  writerLevel: LockLevel;
}

const tables = new Map<string, Table>();

/** Lock state of one open file in a process-local table. */
export class LocalLocks {
  level: LockLevel = 0;
  private readonly table: Table;

  constructor(path: string) {
    let t = tables.get(path);
    if (!t) {
      t = { shared: 0, writer: undefined, writerLevel: 0 };
      tables.set(path, t);
    }
    this.table = t;
  }

  lock(level: LockLevel): boolean {
    const t = this.table;
    if (level <= this.level) return true;
    if (level === 1) {
      if (t.writer && t.writer !== this && t.writerLevel >= 3) return false;
      t.shared++;
      this.level = 1;
      return true;
    }
    if (t.writer && t.writer !== this) return false;
    if (level === 4 && t.shared > 1) {
      t.writer = this;
      t.writerLevel = 3;
      this.level = 3;
      return false;
    }
    t.writer = this;
    t.writerLevel = level;
    this.level = level;
    return true;
  }

  unlock(level: 0 | 1): boolean {
    const t = this.table;
    if (this.level >= 2 && t.writer === this) {
      t.writer = undefined;
      t.writerLevel = 0;
    }
    if (level === 0 && this.level >= 1) t.shared--;
    this.level = Math.min(this.level, level) as LockLevel;
    return true;
  }

  checkReserved(): boolean {
    const t = this.table;
    return t.writer !== undefined && t.writerLevel >= 2;
  }
}
