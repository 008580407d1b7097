/**
 * The content pages had when their transaction began, kept until the transaction commits. Held in memory
 * up to a budget; past it, spilled to a scratch file so a transaction of any size runs in bounded memory.
 */
import type { FileHandle, FileSystem } from '../files/file-system.js';

/** An old page: its bytes, a spill-file offset, or `null` when the page did not exist. */
type Entry = Uint8Array | number | null;

/** Old page content by page index (pgno − 1). */
export class OldPages {
  private readonly map = new Map<number, Entry>();
  private memory = 0;
  private spill: FileHandle | undefined;
  private spillEnd = 0;

  constructor(
    private readonly fs: FileSystem,
    private readonly spillPath: string,
    private readonly budget: number,
  ) {}

  get size(): number {
    return this.map.size;
  }

  has(index: number): boolean {
    return this.map.has(index);
  }

  /** Records the old content of a page (`null`: it did not exist). Copies nothing: `bytes` is kept. */
  set(index: number, bytes: Uint8Array | null): void {
    if (bytes === null || this.memory + bytes.length <= this.budget) {
      this.map.set(index, bytes);
      if (bytes) this.memory += bytes.length;
      return;
    }
    this.spill ??= this.fs.open(this.spillPath, { create: true });
    this.spill.write(bytes, this.spillEnd);
    this.map.set(index, this.spillEnd);
    this.spillEnd += bytes.length;
  }

  /** The old content of page `index` (`pageSize` bytes), or undefined when it did not exist. */
  get(index: number, pageSize: number): Uint8Array | undefined {
    const e = this.map.get(index);
    if (e === null || e === undefined) return undefined;
    if (typeof e !== 'number') return e;
    const buf = new Uint8Array(pageSize);
    this.spill!.read(buf, e);
    return buf;
  }

  /** Page indexes in ascending order. */
  indexes(): Int32Array {
    return Int32Array.from(this.map.keys()).sort();
  }

  /** Forgets everything and deletes the spill file. */
  clear(): void {
    this.map.clear();
    this.memory = 0;
    if (this.spill) {
      this.spill.close();
      this.spill = undefined;
      this.fs.delete(this.spillPath);
    }
    this.spillEnd = 0;
  }
}
