/**
 * Where each snapshot of a stored journal starts, on disk beside it (`DATA/dbs/<name>/offsets`), so that
 * the hub holds no per-snapshot state in memory and does not read a long journal again when it opens it.
 *
 * Layout: 32 bytes of header — `MYCOFF01`, the journal id (16 bytes), the journal's base txid (u64 LE) —
 * then one u64 LE offset per snapshot, the first for txid base + 1. An entry is written only for a snapshot
 * checked whole (a push's snapshots are checked as they arrive, a journal's tail when it is opened), and
 * fsynced with the journal's own fsync. The file is only a cache of the journal: one for another journal
 * or base is replaced (unlinked first, so a reader still using the old file keeps it), and the storage
 * checks its last entry against the journal (src/hub/fs-storage.ts) before trusting it.
 */
import * as fs from 'node:fs';

const MAGIC = Buffer.from('MYCOFF01', 'latin1');
const HEADER = 32;

export class OffsetIndex {
  private constructor(
    private fd: number,
    /** Entries: offsets of snapshots base + 1 … base + count. */
    public count: number,
  ) {}

  /**
   * Opens the index at `file` for the journal `journalId` whose base is `baseTxid`; one that belongs to
   * another journal or base (or has no valid header) is replaced by an empty one.
   */
  static open(file: string, journalId: Uint8Array, baseTxid: bigint): OffsetIndex {
    const header = Buffer.alloc(HEADER);
    MAGIC.copy(header, 0);
    header.set(journalId, 8);
    header.writeBigUInt64LE(baseTxid, 24);
    if (fs.existsSync(file)) {
      const fd = fs.openSync(file, 'r+');
      const size = fs.fstatSync(fd).size;
      const found = Buffer.alloc(HEADER);
      if (size >= HEADER && fs.readSync(fd, found, 0, HEADER, 0) === HEADER && found.equals(header)) {
        return new OffsetIndex(fd, Math.floor((size - HEADER) / 8));
      }
      fs.closeSync(fd);
      fs.rmSync(file, { force: true });
    }
    const fd = fs.openSync(file, 'w+');
    fs.writeSync(fd, header, 0, HEADER, 0);
    return new OffsetIndex(fd, 0);
  }

  /** Where snapshot base + 1 + `i` starts. */
  at(i: number): number {
    if (i < 0 || i >= this.count) throw new RangeError(`offset index: entry ${i} of ${this.count}`);
    const b = Buffer.alloc(8);
    if (fs.readSync(this.fd, b, 0, 8, HEADER + i * 8) !== 8) throw new Error('offset index: short read');
    return Number(b.readBigUInt64LE(0));
  }

  /** Appends the offsets of the next snapshots (not synced: see `sync`). */
  push(offsets: readonly number[]): void {
    if (offsets.length === 0) return;
    const b = Buffer.alloc(offsets.length * 8);
    for (let i = 0; i < offsets.length; i++) b.writeBigUInt64LE(BigInt(offsets[i]!), i * 8);
    fs.writeSync(this.fd, b, 0, b.length, HEADER + this.count * 8);
    this.count += offsets.length;
  }

  /** Keeps the first `count` entries only. */
  cut(count: number): void {
    if (count >= this.count) return;
    fs.ftruncateSync(this.fd, HEADER + count * 8);
    this.count = count;
  }

  sync(): Promise<void> {
    const fd = this.fd;
    return new Promise((resolve, reject) => fs.fdatasync(fd, (e) => (e ? reject(e) : resolve())));
  }

  close(): void {
    if (this.fd < 0) return;
    fs.closeSync(this.fd);
    this.fd = -1;
  }
}
