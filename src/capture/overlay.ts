/**
 * A transaction's writes to the database file, held off the file until the transaction's snapshot is
 * durable in the journal (`durability: 'journal'`, docs/ARCHITECTURE.md "Journal durability"). Reads of
 * the file see the writes; the file itself keeps the content it had when the transaction began, which
 * is the old content the snapshot is diffed against. After the commit the writes are copied to the file
 * (`writeBack`); after a rollback they are dropped.
 *
 * Writes are kept in chunks of a fixed size (the database's page size), in memory up to a budget and in
 * a spill file past it, so a transaction of any size runs in bounded memory.
 */
import type { FileHandle, FileSystem } from '../files/file-system.js';

/** A chunk's bytes, or its offset in the spill file. */
type Chunk = Uint8Array | number;

const POOL_BYTES = 8 << 20;
/** Chunks kept after their write-back, whose bytes are the file's (the next transaction's old pages). */
const CLEAN_BYTES = 8 << 20;

/** The pending writes of one transaction to one file. */
export class PageOverlay {
  private readonly chunks = new Map<number, Chunk>();
  /** Chunks of finished transactions, reused. */
  private pool: Uint8Array[] = [];
  /**
   * Copies of chunks equal to the file's bytes (written back by earlier transactions), oldest first, and
   * of those this transaction overwrote: their old content, so the snapshot need not read it back.
   */
  private readonly clean = new Map<number, Uint8Array>();
  private readonly olds = new Map<number, Uint8Array>();
  private unit = 0;
  private memory = 0;
  private spill: FileHandle | undefined;
  private spillEnd = 0;
  /** Where write-back gathers runs of chunks (at most 1 MiB; a fresh 1 MiB per commit was garbage). */
  private run = new Uint8Array(0);
  /** Size of the file as SQLite sees it; -1 while nothing is held. */
  private logical = -1;
  /** The file's bytes at or past this offset are not seen (a truncate cut them off). */
  private floor = 0;
  /**
   * The file's size when holding started: nothing writes the file until the write-back (SQLite's
   * RESERVED lock keeps other writers out), so the write-back need not ask again.
   */
  private fileSize = 0;

  constructor(
    private readonly file: FileHandle,
    private readonly fs: FileSystem,
    private readonly spillPath: string,
    private readonly budget: number,
  ) {}

  size(): number {
    return this.logical >= 0 ? this.logical : this.file.size();
  }

  /** Starts holding: `unit` is the chunk size (a power of two: the database's page size). */
  private start(unit: number): void {
    if (this.logical >= 0) return;
    if (unit !== this.unit) this.clean.clear();
    this.unit = unit;
    this.logical = this.file.size();
    this.floor = this.logical;
    this.fileSize = this.logical;
  }

  /** Reads into `buf` from `offset` as the file would read with the writes applied; returns bytes read. */
  read(buf: Uint8Array, offset: number): number {
    if (this.logical < 0) return this.file.read(buf, offset);
    const end = Math.min(offset + buf.length, this.logical);
    if (end <= offset) {
      buf.fill(0);
      return 0;
    }
    const u = this.unit;
    let at = offset;
    while (at < end) {
      const index = Math.floor(at / u);
      const within = at - index * u;
      const n = Math.min(u - within, end - at);
      const dest = buf.subarray(at - offset, at - offset + n);
      const c = this.chunks.get(index);
      if (c === undefined) {
        const copy = this.olds.get(index) ?? this.clean.get(index);
        if (copy && (index + 1) * u <= this.floor) dest.set(copy.subarray(within, within + n));
        else this.readFile(dest, at);
      } else if (typeof c === 'number') this.spill!.read(dest, c + within);
      else dest.set(c.subarray(within, within + n));
      at += n;
    }
    if (end - offset < buf.length) buf.fill(0, end - offset);
    return end - offset;
  }

  /** Writes `bytes` at `offset`; `unit` is the chunk size to use if this is the first write held. */
  write(bytes: Uint8Array, offset: number, unit: number): void {
    this.start(unit);
    const u = this.unit;
    let at = offset;
    const end = offset + bytes.length;
    while (at < end) {
      const index = Math.floor(at / u);
      const within = at - index * u;
      const n = Math.min(u - within, end - at);
      const src = bytes.subarray(at - offset, at - offset + n);
      const c = this.chunks.get(index);
      if (typeof c === 'number') this.spill!.write(src, c + within);
      else if (c) c.set(src, within);
      else {
        const copy = this.clean.get(index);
        if (copy) {
          this.clean.delete(index);
          this.olds.set(index, copy);
        }
        const chunk = this.take(u);
        if (n < u) this.read(chunk, index * u);
        chunk.set(src, within);
        this.put(index, chunk);
      }
      at += n;
    }
    if (end > this.logical) this.logical = end;
  }

  /** Sets the file's size as SQLite sees it. */
  truncate(size: number, unit: number): void {
    this.start(unit);
    if (size < this.floor) this.floor = size;
    if (size < this.logical) {
      const u = this.unit;
      for (const index of [...this.chunks.keys()]) {
        if (index * u >= size) {
          const c = this.chunks.get(index)!;
          this.chunks.delete(index);
          if (typeof c !== 'number') {
            this.memory -= c.length;
            this.recycle(c);
          }
        } else if ((index + 1) * u > size) {
          // The cut-off tail of a chunk reads as zeros if the file grows again.
          const zeros = new Uint8Array((index + 1) * u - size);
          this.writeChunkBytes(index, zeros, size - index * u);
        }
      }
    }
    this.logical = size;
  }

  /**
   * Indexes of the pages of `pageSize` bytes the held writes touch, ascending (in a typed array, outside
   * V8's heap: a transaction of a million pages made a Set and an array of them that outlived the
   * commit's scavenges, tens of MiB of old-space garbage at its peak).
   */
  pageIndexes(pageSize: number): Int32Array {
    const u = this.unit;
    if (pageSize === u) return Int32Array.from(this.chunks.keys()).sort();
    const out = new Set<number>();
    for (const index of this.chunks.keys()) {
      const first = Math.floor((index * u) / pageSize);
      const last = Math.floor(((index + 1) * u - 1) / pageSize);
      for (let p = first; p <= last; p++) out.add(p);
    }
    return Int32Array.from(out).sort();
  }

  /** The file's content of chunk `index` before this transaction, when a copy is at hand (else read the file). */
  oldPage(index: number, pageSize: number): Uint8Array | undefined {
    return pageSize === this.unit ? this.olds.get(index) : undefined;
  }

  /** Offset from which the file's own bytes are not seen (the smallest size truncated to). */
  get cutFrom(): number {
    return this.logical >= 0 ? this.floor : this.file.size();
  }

  /** Copies the held writes to the file, in runs, and sets its size. Returns the bytes written. */
  writeBack(): number {
    if (this.logical < 0) return 0;
    const u = this.unit;
    // The file is written before it is cut, so that a crash anywhere in here leaves each byte with its
    // old or its new value (what redo at open needs): first zeros where a truncate cut the file and it
    // grew back without writes, then the chunks, then the size.
    const size = this.fileSize;
    this.zeroCutRange(size);
    const indexes = Int32Array.from(this.chunks.keys()).sort();
    const per = Math.max(1, Math.floor((1 << 20) / u));
    let written = 0;
    let end = size; // the file's size as the writes below leave it
    let i = 0;
    while (i < indexes.length) {
      let j = i + 1;
      while (j < indexes.length && indexes[j] === indexes[j - 1]! + 1 && j - i < per) j++;
      const first = indexes[i]!;
      const c = this.chunks.get(first)!;
      if (j === i + 1 && typeof c !== 'number') {
        this.file.write(c, first * u);
      } else {
        const run = this.runBuffer((j - i) * u);
        for (let k = i; k < j; k++) {
          const ck = this.chunks.get(indexes[k]!)!;
          const dest = run.subarray((k - i) * u, (k - i + 1) * u);
          if (typeof ck === 'number') this.spill!.read(dest, ck);
          else dest.set(ck);
        }
        this.file.write(run.subarray(0, (j - i) * u), first * u);
      }
      written += (j - i) * u;
      end = Math.max(end, (first + j - i) * u);
      i = j;
    }
    if (end !== this.logical) this.file.truncate(this.logical);
    this.keepClean();
    return written;
  }

  /** A buffer of at least `bytes` for gathering a run of chunks, kept for the next write-back. */
  private runBuffer(bytes: number): Uint8Array {
    if (this.run.length < bytes) this.run = new Uint8Array(bytes);
    return this.run;
  }

  /** Writes zeros over the file's bytes in [floor, min(size, logical)) that no held chunk covers. */
  private zeroCutRange(fileSize: number): void {
    const u = this.unit;
    const end = Math.min(fileSize, this.logical);
    let zeros: Uint8Array | undefined;
    for (let at = this.floor; at < end; ) {
      const index = Math.floor(at / u);
      const next = Math.min((index + 1) * u, end);
      if (!this.chunks.has(index)) {
        zeros ??= new Uint8Array(u);
        this.file.write(zeros.subarray(0, next - at), at);
      }
      at = next;
    }
  }

  /** After the write-back: the chunks written in memory become the file's clean copies. */
  private keepClean(): void {
    const u = this.unit;
    for (const i of this.clean.keys()) if ((i + 1) * u > this.floor) this.clean.delete(i);
    for (const c of this.olds.values()) this.recycle(c);
    this.olds.clear();
    for (const [i, c] of this.chunks) {
      if (typeof c === 'number' || (i + 1) * u > this.logical) continue;
      this.clean.delete(i);
      this.clean.set(i, c);
      this.chunks.delete(i);
    }
    for (const [i, c] of this.clean) {
      if (this.clean.size * u <= CLEAN_BYTES) break;
      this.clean.delete(i);
      this.recycle(c);
    }
  }

  private recycle(c: Uint8Array): void {
    if (c.length === this.unit && this.pool.length * this.unit < POOL_BYTES) this.pool.push(c);
  }

  /** Forgets the copies of the file's bytes kept from earlier transactions (the file changed under them). */
  forgetClean(): void {
    for (const c of this.clean.values()) this.recycle(c);
    this.clean.clear();
  }

  /** Drops everything held and deletes the spill file. */
  clear(): void {
    // In-memory chunks are kept for the next transaction (up to 8 MiB of them): less garbage per commit.
    for (const c of this.chunks.values()) if (typeof c !== 'number') this.recycle(c);
    this.chunks.clear();
    // Not written back (a rollback): the old copies are still the file's bytes.
    for (const [i, c] of this.olds) this.clean.set(i, c);
    this.olds.clear();
    this.memory = 0;
    this.logical = -1;
    this.floor = 0;
    this.spillEnd = 0;
    if (this.spill) {
      const s = this.spill;
      this.spill = undefined;
      s.close();
      this.fs.delete(this.spillPath);
    }
  }

  private readFile(dest: Uint8Array, at: number): void {
    if (at >= this.floor) {
      dest.fill(0);
      return;
    }
    const visible = Math.min(dest.length, this.floor - at);
    const got = this.file.read(dest.subarray(0, visible), at);
    if (got < dest.length) dest.fill(0, got);
  }

  private writeChunkBytes(index: number, src: Uint8Array, within: number): void {
    const c = this.chunks.get(index)!;
    if (typeof c === 'number') this.spill!.write(src, c + within);
    else c.set(src, within);
  }

  private take(u: number): Uint8Array {
    const c = this.pool.pop();
    if (c && c.length === u) return c;
    this.pool.length = 0;
    return new Uint8Array(u);
  }

  private put(index: number, chunk: Uint8Array): void {
    if (this.memory + chunk.length <= this.budget) {
      this.chunks.set(index, chunk);
      this.memory += chunk.length;
      return;
    }
    this.spill ??= this.fs.open(this.spillPath, { create: true });
    this.spill.write(chunk, this.spillEnd);
    this.chunks.set(index, this.spillEnd);
    this.spillEnd += chunk.length;
    this.recycle(chunk); // written to the spill file: the next write takes it again (no page of garbage each)
  }
}
