/**
 * A file whose writes are held aside until `commit()`: reads see them, the file underneath does not
 * change. Recovery redoes snapshots into one and checks the result's checksum before the user's database
 * file is touched, so a redo that would not give the journal's state leaves the file as it was found.
 * Held bytes live in memory up to a budget and in a spill file past it.
 */
import type { FileHandle, FileSystem } from './file-system.js';

const BLOCK = 4096;

/** A block's bytes, or its offset in the spill file. */
type Held = Uint8Array | number;

/** Writes to `base`, held until committed. */
export class ShadowFile implements FileHandle {
  private readonly blocks = new Map<number, Held>();
  private memory = 0;
  private spill: FileHandle | undefined;
  private spillEnd = 0;
  private logical: number;
  /** Bytes of the base file at or past this offset are cut off (read as zeros unless written again). */
  private floor: number;

  constructor(
    private readonly base: FileHandle,
    private readonly fs: FileSystem,
    private readonly spillPath: string,
    private readonly budget = 32 << 20,
  ) {
    this.logical = base.size();
    this.floor = this.logical;
  }

  get path(): string {
    return this.base.path;
  }

  size(): number {
    return this.logical;
  }

  read(buf: Uint8Array, offset: number): number {
    const end = Math.min(offset + buf.length, this.logical);
    if (end <= offset) {
      buf.fill(0);
      return 0;
    }
    for (let at = offset; at < end; ) {
      const index = Math.floor(at / BLOCK);
      const within = at - index * BLOCK;
      const n = Math.min(BLOCK - within, end - at);
      this.readBlock(index, within, buf.subarray(at - offset, at - offset + n));
      at += n;
    }
    if (end - offset < buf.length) buf.fill(0, end - offset);
    return end - offset;
  }

  write(bytes: Uint8Array, offset: number): void {
    const end = offset + bytes.length;
    for (let at = offset; at < end; ) {
      const index = Math.floor(at / BLOCK);
      const within = at - index * BLOCK;
      const n = Math.min(BLOCK - within, end - at);
      const src = bytes.subarray(at - offset, at - offset + n);
      const held = this.blocks.get(index);
      if (typeof held === 'number') this.spill!.write(src, held + within);
      else if (held) held.set(src, within);
      else {
        const block = new Uint8Array(BLOCK);
        if (n < BLOCK) this.readBlock(index, 0, block);
        block.set(src, within);
        this.hold(index, block);
      }
      at += n;
    }
    if (end > this.logical) this.logical = end;
  }

  truncate(size: number): void {
    if (size < this.floor) this.floor = size;
    if (size < this.logical) {
      for (const index of [...this.blocks.keys()]) {
        if (index * BLOCK >= size) this.blocks.delete(index);
      }
      // The block holding the new end: its bytes past the end read as zeros if the file grows again.
      const index = Math.floor(size / BLOCK);
      const within = size - index * BLOCK;
      const held = this.blocks.get(index);
      if (within > 0 && held !== undefined) {
        const zeros = new Uint8Array(BLOCK - within);
        if (typeof held === 'number') this.spill!.write(zeros, held + within);
        else held.fill(0, within);
      }
    }
    this.logical = size;
  }

  sync(): void {
    // Nothing reaches the file before commit().
  }

  close(): void {
    this.discard();
  }

  /**
   * Writes the held bytes to the file: blocks first (in order), then zeros where a cut was grown back
   * over, then the file's new length, so a crash in between leaves each byte old or new. No fsync.
   */
  commit(): void {
    const indexes = [...this.blocks.keys()].sort((a, b) => a - b);
    const block = new Uint8Array(BLOCK);
    for (const index of indexes) {
      const at = index * BLOCK;
      const n = Math.min(BLOCK, this.logical - at);
      if (n <= 0) continue;
      this.readBlock(index, 0, block);
      this.base.write(block.subarray(0, n), at);
    }
    const baseSize = this.base.size();
    const zeroTo = Math.min(this.logical, baseSize);
    if (this.floor < zeroTo) {
      const zeros = new Uint8Array(BLOCK);
      for (let at = this.floor; at < zeroTo; ) {
        const index = Math.floor(at / BLOCK);
        const n = Math.min(BLOCK - (at - index * BLOCK), zeroTo - at);
        if (!this.blocks.has(index)) this.base.write(zeros.subarray(0, n), at);
        at += n;
      }
    }
    if (this.base.size() !== this.logical) this.base.truncate(this.logical);
    this.discard();
  }

  /** Drops the held bytes (the file keeps what it had). */
  discard(): void {
    this.blocks.clear();
    this.memory = 0;
    if (this.spill) {
      this.spill.close();
      this.spill = undefined;
      this.fs.delete(this.spillPath);
    }
    this.spillEnd = 0;
    this.logical = this.base.size();
    this.floor = this.logical;
  }

  private readBlock(index: number, within: number, dest: Uint8Array): void {
    const held = this.blocks.get(index);
    if (typeof held === 'number') this.spill!.read(dest, held + within);
    else if (held) dest.set(held.subarray(within, within + dest.length));
    else {
      const at = index * BLOCK + within;
      const fromBase = Math.max(0, Math.min(dest.length, this.floor - at));
      if (fromBase > 0) {
        const got = this.base.read(dest.subarray(0, fromBase), at);
        if (got < fromBase) dest.fill(0, got, fromBase);
      }
      dest.fill(0, fromBase);
    }
  }

  private hold(index: number, block: Uint8Array): void {
    if (this.memory + BLOCK <= this.budget) {
      this.blocks.set(index, block);
      this.memory += BLOCK;
      return;
    }
    this.spill ??= this.fs.open(this.spillPath, { create: true });
    this.spill.write(block, this.spillEnd);
    this.blocks.set(index, this.spillEnd);
    this.spillEnd += BLOCK;
  }
}
