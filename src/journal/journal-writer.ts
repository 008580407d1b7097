/**
 * Appends snapshots to a journal file. A snapshot is streamed: body chunks are written after the space
 * for its header as they are produced, then the header and trailer, then one fsync; a body of at most
 * 64 KiB is held and written with its header and trailer in one write. Until `confirm()`
 * a snapshot is tentative and `abandon()` cuts it off again (docs/ARCHITECTURE.md, "Commit protocol").
 */

import { type FileHandle, type FileSystem, writeFileAtomic } from '../files/file-system.js';
import {
  createXxh64,
  encodeFileHeader,
  encodeSnapshotHeader,
  FILE_HEADER_SIZE,
  FORMAT_VERSION,
  JournalReader,
  type Position,
  SNAPSHOT_HEADER_SIZE,
  SNAPSHOT_TRAILER_SIZE,
  type SnapshotHeader,
  type SnapshotInfo,
} from '../format/index.js';
import { fileSource } from './file-source.js';
import { type JournalScan, scanJournal } from './journal-scan.js';

/** The history a new journal starts: its id and the position before its first snapshot. */
export interface JournalStart {
  journalId: Uint8Array;
  baseTxid: bigint;
  baseChecksum: bigint;
}

/** What the writer knows about the end of its journal. */
interface Tail extends Position {
  end: number;
  timestamp: number;
}

/** The fields of a snapshot header the caller decides. */
export type SnapshotFields = Pick<
  SnapshotHeader,
  'pageSize' | 'dbPages' | 'flags' | 'postChecksum' | 'commitTag'
>;

/** A snapshot being written: feed body chunks to `sink`, then `finish`. */
export interface SnapshotAppender {
  sink(chunk: Uint8Array): void;
  /** Writes header and trailer and syncs (unless `durable` is false). Returns the snapshot. */
  finish(fields: SnapshotFields, patchCount: number, durable: boolean): SnapshotInfo;
  /** Forgets the snapshot: nothing of it stays in the file. */
  cancel(): void;
}

/** The one writer of a journal file. */
/** Zeros for preallocating. */
const ZEROS = new Uint8Array(1 << 20);
/** Bodies up to this length are written together with their header and trailer (see `begin`). */
const ONE_WRITE_BODY = 64 << 10;
/** Snapshots appended together are gathered into writes of this size. */
const WRITE_GATHER = 1 << 20;

export class JournalWriter {
  private tail: Tail;
  private lastBefore: SnapshotInfo | undefined;
  private confirmed: Tail;
  /** Bytes of torn tail cut off when the journal was opened. */
  readonly tornBytes: number;
  /** The last snapshot in the file (tentative or not), if any. */
  last: SnapshotInfo | undefined;
  /** The txid before the file's first snapshot (its header's base; moves up when rebased). */
  baseTxid: bigint;
  /** Bytes of zeros to keep written past the end (see `preallocate`); 0: none. */
  private ahead = 0;
  /** The file's size while preallocating (the end plus the zeros written past it). */
  private allocated = 0;
  /** Where a small snapshot is put together before its one write (allocated at the first). */
  private staging = new Uint8Array(0);

  private constructor(
    private file: FileHandle,
    public journalId: Uint8Array,
    tail: Tail,
    tornBytes: number,
    last: SnapshotInfo | undefined,
    baseTxid: bigint,
  ) {
    this.baseTxid = baseTxid;
    this.last = last;
    this.tail = tail;
    this.confirmed = tail;
    this.tornBytes = tornBytes;
  }

  /**
   * Opens the journal at `path`, creating it (with a new random journal id) when missing. Scans it, cuts
   * off a torn tail, and returns a writer positioned after the last valid snapshot.
   */
  static open(fs: FileSystem, path: string): JournalWriter {
    if (fs.fileSize(path) === 0) {
      JournalWriter.create(fs, path);
    }
    const scan = scanJournal(fs, path);
    const problem = scan.headerProblem ?? scan.damage;
    if (problem) throw new Error(`open journal ${path}: ${problem.message}`, { cause: problem });
    return JournalWriter.fromScan(fs, scan);
  }

  /**
   * Opens the journal `scan` describes for appending after its last valid snapshot, cutting whatever
   * follows it (the caller decided it may go: a torn tail, or damage it has set aside).
   */
  static fromScan(fs: FileSystem, scan: JournalScan): JournalWriter {
    const { header } = scan;
    if (!header) throw new Error(`open journal ${scan.path}: it has no valid header`);
    const file = fs.open(scan.path);
    try {
      const tail: Tail = { end: scan.end, ...scan.head, timestamp: scan.last?.timestamp ?? 0 };
      if (file.size() > scan.end) {
        file.truncate(scan.end);
        file.sync();
      }
      const w = new JournalWriter(file, header.journalId, tail, scan.tailBytes, scan.last, header.baseTxid);
      w.lastBefore = scan.lastBefore;
      return w;
    } catch (e) {
      file.close();
      throw new Error(`open journal ${scan.path}: ${(e as Error).message}`, { cause: e });
    }
  }

  /**
   * Creates (atomically replacing) an empty journal at `path`: a new random history from the empty
   * database, or, with `from`, a copy of another history (a replica's) that starts at `from`'s base.
   */
  static create(fs: FileSystem, path: string, from?: JournalStart): void {
    const header = encodeFileHeader({
      version: FORMAT_VERSION,
      journalId: from?.journalId ?? crypto.getRandomValues(new Uint8Array(16)),
      createdAt: Date.now(),
      baseTxid: from?.baseTxid ?? 0n,
      baseChecksum: from?.baseChecksum ?? 0n,
    });
    writeFileAtomic(fs, path, (f) => f.write(header, 0));
  }

  /**
   * Appends a snapshot that is already encoded (received from a hub or a writer) and confirms it. The
   * caller has validated it (StreamParser); this checks only that it continues this journal.
   */
  appendEncoded(bytes: Uint8Array, h: SnapshotHeader, durable: boolean): SnapshotInfo {
    if (this.pending) throw new Error('a tentative snapshot is neither confirmed nor abandoned');
    if (h.txid !== this.tail.txid + 1n || h.preChecksum !== this.tail.checksum || bytes.length !== h.length) {
      throw new Error(
        `snapshot ${h.txid} does not continue the journal at txid ${this.tail.txid} (or its length is wrong)`,
      );
    }
    const start = this.tail.end;
    this.reserve(start + bytes.length);
    this.file.write(bytes, start);
    if (durable) this.file.sync();
    this.tail = {
      end: start + bytes.length,
      txid: h.txid,
      checksum: h.postChecksum,
      timestamp: Math.max(h.timestamp, this.tail.timestamp),
    };
    this.lastBefore = this.last;
    this.last = { ...h, offset: start };
    this.confirmed = this.tail;
    return this.last;
  }

  /**
   * Appends encoded snapshots that continue the journal (not synced: the caller syncs), gathered into
   * writes of up to 1 MiB instead of one write each; where each one starts.
   */
  appendEncodedAll(snapshots: readonly { bytes: Uint8Array; header: SnapshotHeader }[]): number[] {
    if (this.pending) throw new Error('a tentative snapshot is neither confirmed nor abandoned');
    let { txid, checksum } = this.tail;
    let total = 0;
    for (const { bytes, header: h } of snapshots) {
      if (h.txid !== txid + 1n || h.preChecksum !== checksum || bytes.length !== h.length) {
        throw new Error(
          `snapshot ${h.txid} does not continue the journal at txid ${txid} (or its length is wrong)`,
        );
      }
      txid = h.txid;
      checksum = h.postChecksum;
      total += bytes.length;
    }
    const n = snapshots.length;
    if (n === 0) return [];
    const start = this.tail.end;
    this.reserve(start + total);
    const offsets: number[] = [];
    const gather = new Uint8Array(Math.min(total, WRITE_GATHER));
    let used = 0;
    let at = start;
    const flush = (): void => {
      if (used > 0) this.file.write(gather.subarray(0, used), at - used);
      used = 0;
    };
    let timestamp = this.tail.timestamp;
    for (const { bytes, header } of snapshots) {
      offsets.push(at);
      timestamp = Math.max(timestamp, header.timestamp);
      if (bytes.length > gather.length - used) flush();
      if (bytes.length > gather.length) this.file.write(bytes, at);
      else {
        gather.set(bytes, used);
        used += bytes.length;
      }
      at += bytes.length;
    }
    flush();
    this.tail = { end: at, txid, checksum, timestamp };
    this.lastBefore = n > 1 ? { ...snapshots[n - 2]!.header, offset: offsets[n - 2]! } : this.last;
    this.last = { ...snapshots[n - 1]!.header, offset: offsets[n - 1]! };
    this.confirmed = this.tail;
    return offsets;
  }

  /** The position after the last snapshot written (tentative or not). */
  get position(): Position {
    return { txid: this.tail.txid, checksum: this.tail.checksum };
  }

  /** Where the snapshot of the position's txid starts (undefined: the base, or not known). */
  get headOffset(): number | undefined {
    const last = this.last;
    return last && last.txid === this.tail.txid && last.postChecksum === this.tail.checksum
      ? last.offset
      : undefined;
  }

  /** Offset where the next snapshot goes. */
  get end(): number {
    return this.tail.end;
  }

  /** True while the last snapshot is tentative (written, not yet confirmed). */
  get pending(): boolean {
    return this.tail.end !== this.confirmed.end;
  }

  /**
   * Keeps up to `bytes` of zeros (a quarter of the journal, at least 64 KiB) written past the end of the
   * file, so that an append overwrites blocks
   * the file already has: its fdatasync then flushes data only, not a new file size (measured on ext4:
   * 0.2 ms against 0.5–0.9 ms per append + fdatasync). The zeros are a torn tail to every reader (no
   * snapshot header starts in them, docs/FORMAT.md "Validation"); `close()` cuts them, and so does the
   * next open after a crash.
   */
  preallocate(bytes: number): void {
    this.ahead = bytes;
    this.allocated = this.tail.end;
  }

  /** Makes sure the file's blocks reach `end` (zeros past the last snapshot), when preallocating. */
  private reserve(end: number): void {
    if (this.ahead === 0 || end <= this.allocated) return;
    // A quarter of the journal, 64 KiB at least and `ahead` at most: small journals stay small.
    const to = end + Math.min(this.ahead, Math.max(64 << 10, end >> 2));
    for (let at = this.allocated; at < to; ) {
      const n = Math.min(ZEROS.length, to - at);
      this.file.write(ZEROS.subarray(0, n), at);
      at += n;
    }
    this.allocated = to;
  }

  /** The file was cut at `end`: the zeros past it are gone. */
  private cutAt(end: number): void {
    this.file.truncate(end);
    if (this.ahead > 0) this.allocated = end;
  }

  /** Starts a snapshot after the last one. */
  begin(): SnapshotAppender {
    if (this.pending) throw new Error('a tentative snapshot is neither confirmed nor abandoned');
    const start = this.tail.end;
    const hash = createXxh64();
    let pos = start + SNAPSHOT_HEADER_SIZE;
    // A small body is copied into `staging` after room for its header, and header, body and trailer go
    // to the file in one write (three writes a commit were a tenth of a small commit's capture). Past
    // ONE_WRITE_BODY bytes the body streams to the file as it comes (staged = -1).
    let staged = 0;
    const stream = (): void => {
      if (staged > 0) {
        this.reserve(start + SNAPSHOT_HEADER_SIZE + staged);
        this.file.write(
          this.staging.subarray(SNAPSHOT_HEADER_SIZE, SNAPSHOT_HEADER_SIZE + staged),
          start + SNAPSHOT_HEADER_SIZE,
        );
      }
      staged = -1;
    };
    return {
      sink: (chunk) => {
        hash.update(chunk);
        if (staged >= 0 && staged + chunk.length <= ONE_WRITE_BODY) {
          if (this.staging.length === 0) {
            this.staging = new Uint8Array(SNAPSHOT_HEADER_SIZE + ONE_WRITE_BODY + SNAPSHOT_TRAILER_SIZE);
          }
          this.staging.set(chunk, SNAPSHOT_HEADER_SIZE + staged);
          staged += chunk.length;
        } else {
          stream();
          this.reserve(pos + chunk.length);
          this.file.write(chunk, pos);
        }
        pos += chunk.length;
      },
      finish: (fields, patchCount, durable) => {
        const h: SnapshotHeader = {
          ...fields,
          length: pos + SNAPSHOT_TRAILER_SIZE - start,
          txid: this.tail.txid + 1n,
          timestamp: Math.max(Date.now(), this.tail.timestamp),
          patchCount,
          preChecksum: this.tail.checksum,
        };
        const header = encodeSnapshotHeader(h);
        hash.update(header);
        const trailer = new Uint8Array(SNAPSHOT_TRAILER_SIZE);
        new DataView(trailer.buffer).setBigUint64(0, hash.digest(), true);
        this.reserve(pos + SNAPSHOT_TRAILER_SIZE);
        if (staged >= 0 && this.staging.length > 0) {
          const all = this.staging.subarray(0, SNAPSHOT_HEADER_SIZE + staged + SNAPSHOT_TRAILER_SIZE);
          all.set(header, 0);
          all.set(trailer, SNAPSHOT_HEADER_SIZE + staged);
          this.file.write(all, start);
        } else {
          stream();
          this.file.write(trailer, pos);
          this.file.write(header, start);
        }
        if (durable) this.file.sync();
        this.tail = {
          end: pos + SNAPSHOT_TRAILER_SIZE,
          txid: h.txid,
          checksum: h.postChecksum,
          timestamp: h.timestamp,
        };
        this.lastBefore = this.last;
        this.last = { ...h, offset: start };
        return this.last;
      },
      cancel: () => {
        if (staged < 0) this.cutAt(start);
      },
    };
  }

  /** Makes the last snapshot final: its transaction committed. */
  confirm(): void {
    this.confirmed = this.tail;
  }

  /** Cuts off the tentative snapshot: its transaction did not commit. */
  abandon(durable: boolean): void {
    if (!this.pending) return;
    this.cutAt(this.confirmed.end);
    if (durable) this.file.sync();
    this.tail = this.confirmed;
    this.last = this.lastBefore;
  }

  /** Cuts off the last snapshot, confirmed or not (crash recovery: its transaction was rolled back). */
  dropLast(last: SnapshotInfo): void {
    if (last.offset + last.length !== this.tail.end) throw new Error('dropLast: not the last snapshot');
    this.cutAt(last.offset);
    this.file.sync();
    // The snapshot before it, when this writer knows it (it appended the dropped one).
    const before = this.lastBefore;
    this.last = before && before.offset + before.length === last.offset ? before : undefined;
    this.lastBefore = undefined;
    this.tail = this.confirmed = {
      end: last.offset,
      txid: last.txid - 1n,
      checksum: last.preChecksum,
      timestamp: 0,
    };
  }

  /**
   * Rewrites the journal to start after `baseTxid` (a compaction moved the snapshots up to it into the
   * history file): a new file with this journal's id, that base and the snapshots after it, fsynced,
   * renamed over `path` (the directory fsynced), then written to from here on. Not while a snapshot is
   * tentative. Returns how many bytes the snapshots after `base` moved towards the start.
   */
  rebase(fs: FileSystem, path: string, baseTxid: bigint): number {
    if (this.pending) throw new Error('rebase: a tentative snapshot is neither confirmed nor abandoned');
    const src = fileSource(this.file);
    const reader = new JournalReader({ size: () => this.tail.end, read: (o, n) => src.read(o, n) });
    let cut = reader.header.baseTxid === baseTxid ? FILE_HEADER_SIZE : -1;
    let base: Position = { txid: baseTxid, checksum: reader.header.baseChecksum };
    for (const s of reader.snapshots()) {
      if (s.txid !== baseTxid) continue;
      cut = s.offset + s.length;
      base = { txid: s.txid, checksum: s.postChecksum };
    }
    if (cut < 0) throw new Error(`rebase: ${path} does not hold txid ${baseTxid}`);
    const tmp = `${path}.tmp`;
    const out = fs.open(tmp, { create: true });
    try {
      out.truncate(0);
      out.write(encodeFileHeader({ ...reader.header, baseTxid: base.txid, baseChecksum: base.checksum }), 0);
      for (let at = cut; at < this.tail.end; ) {
        const n = Math.min(4 << 20, this.tail.end - at);
        out.write(src.read(at, n), FILE_HEADER_SIZE + at - cut);
        at += n;
      }
      out.sync();
    } catch (e) {
      out.close();
      fs.delete(tmp);
      throw e;
    }
    out.close();
    fs.rename(tmp, path);
    fs.syncDir(path);
    const next = fs.open(path);
    this.file.close();
    this.file = next;
    const delta = cut - FILE_HEADER_SIZE;
    const move = (s: SnapshotInfo | undefined): SnapshotInfo | undefined =>
      s && s.offset >= cut ? { ...s, offset: s.offset - delta } : undefined;
    this.last = move(this.last);
    this.lastBefore = move(this.lastBefore);
    this.tail = { ...this.tail, end: this.tail.end - delta };
    this.confirmed = this.tail;
    this.baseTxid = base.txid;
    if (this.ahead > 0) this.allocated = this.tail.end;
    return delta;
  }

  /**
   * Cuts off `first` and every snapshot after it (a replica's batch that its database refused).
   * `before` is the snapshot before `first`, when the caller knows it (it becomes `last`).
   */
  dropFrom(first: SnapshotInfo, before: SnapshotInfo | undefined): void {
    if (this.pending) throw new Error('a tentative snapshot is neither confirmed nor abandoned');
    if (first.offset >= this.tail.end) throw new Error('dropFrom: not a snapshot of this journal');
    this.cutAt(first.offset);
    this.file.sync();
    this.last = before && before.offset + before.length === first.offset ? before : undefined;
    this.lastBefore = undefined;
    this.tail = this.confirmed = {
      end: first.offset,
      txid: first.txid - 1n,
      checksum: first.preChecksum,
      timestamp: before?.timestamp ?? 0,
    };
  }

  /**
   * Replaces everything after byte `offset` (a snapshot boundary) with `bytes` (whole snapshots that
   * continue the snapshot ending there), fsyncs, and goes on after them. Not while a snapshot is
   * tentative. The caller makes the change crash-safe (src/shared/suffix.ts keeps an intent first).
   */
  replaceSuffix(fs: FileSystem, offset: number, bytes: Uint8Array): void {
    if (this.pending)
      throw new Error('replaceSuffix: a tentative snapshot is neither confirmed nor abandoned');
    writeSuffix(this.file, offset, bytes);
    const scan = scanJournal(fs, this.file.path);
    const problem = scan.headerProblem ?? scan.damage;
    if (problem || scan.end !== offset + bytes.length) {
      throw new Error(`replaceSuffix: ${this.file.path} does not read back whole after the rewrite`, {
        cause: problem,
      });
    }
    this.tail = this.confirmed = { end: scan.end, ...scan.head, timestamp: scan.last?.timestamp ?? 0 };
    this.last = scan.last;
    this.lastBefore = scan.lastBefore;
    this.journalId = scan.header!.journalId;
    this.baseTxid = scan.header!.baseTxid;
    if (this.ahead > 0) this.allocated = this.file.size();
  }

  /** The journal file (for readers in the same process). */
  get handle(): FileHandle {
    return this.file;
  }

  /** Closes the file, first cutting the zeros written ahead (if that fails, the next open cuts them). */
  close(): void {
    try {
      if (this.ahead > 0 && this.allocated > this.tail.end) this.file.truncate(this.tail.end);
    } catch {
      // a torn tail of zeros: harmless
    } finally {
      this.file.close();
    }
  }
}

/** Cuts `file` at `offset`, writes `bytes` there and fsyncs (a suffix rewrite, see replaceSuffix). */
export function writeSuffix(file: FileHandle, offset: number, bytes: Uint8Array): void {
  file.truncate(offset);
  for (let at = 0; at < bytes.length; ) {
    const n = Math.min(4 << 20, bytes.length - at);
    file.write(bytes.subarray(at, at + n), offset + at);
    at += n;
  }
  file.sync();
}
