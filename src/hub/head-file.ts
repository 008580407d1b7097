/**
 * A database's pages at the hub's head, on the hub's disk, so that every push can be checked against
 * them before it is stored (docs/ARCHITECTURE.md, "Hub"): `head.db` holds the pages, `head.pos` the
 * position they hold. Only the pages a push touches are ever in memory.
 *
 * `head.pos` (64 bytes, written in place): `MYCHEAD1`, journal id (16), txid (u64), database checksum
 * (u64), page size (u32), pages (u32), flags (u32; bit 0: exact), 4 zero bytes, XXH64 of bytes 0–55.
 * Exact: the pages are that position. Not exact: they are that position or a later state of the same
 * history, possibly torn between two (a crash while they were written); the stored snapshots after the
 * position are then applied again (redo) and the whole file's checksum must come out right. A push's
 * pages are written only after the storage made it durable: the record goes to not-exact first, then
 * the pages, then the truncate (write before truncate), then the record to exact at the new position.
 */

import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { FileHandle } from '../files/file-system.js';
import {
  type ByteSource,
  JournalFormatError,
  memorySource,
  type Position,
  PositionMismatchError,
  pageTerm,
  type SnapshotInfo,
  xxh64,
} from '../format/index.js';
import { databaseChecksum } from '../journal/db-checksum.js';
import { NodeFileSystem } from '../node/node-fs.js';
import type { EncodedSnapshot } from '../protocol/index.js';
import { hashingSource, redo } from '../restore/replay.js';
import { applyChecked, DoesNotApplyError, type PageCount, type PageStore } from './page-check.js';

/** The position the head file's pages hold: a state of one history, and its page geometry. */
export interface HeadPosition extends PageCount {
  journalId: Uint8Array;
  txid: bigint;
}

/** A push's changes to the pages, checked, not written yet. */
export interface Staged {
  /** The position before (the head file's when staged). */
  from: HeadPosition;
  /** The position after the last snapshot. */
  end: HeadPosition;
  /** The new content of every page the snapshots touched (at most `end.dbPages`). */
  pages: Map<number, { bytes: Uint8Array; term: bigint }>;
  /** Pages of the file past this were cut by a snapshot: those not in `pages` are zeros now. */
  floor: number;
}

const MAGIC = [0x4d, 0x59, 0x43, 0x48, 0x45, 0x41, 0x44, 0x31]; // MYCHEAD1
const RECORD_SIZE = 64;
const EXACT = 1;
/** Pages written in one call at most. */
const RUN_PAGES = 256;
const nodeFs = new NodeFileSystem();

export class HeadFile {
  /** What the record says; undefined when there is none (a new or invalidated head file, a torn record). */
  pos: HeadPosition | undefined;
  /** The pages are exactly `pos` (else `pos` or a later, possibly torn, state). */
  exact = false;
  readonly pagesPath: string;
  private readonly pages: FileHandle;
  private readonly record: FileHandle;

  private constructor(dir: string) {
    this.pagesPath = path.join(dir, 'head.db');
    this.pages = nodeFs.open(this.pagesPath, { create: true });
    try {
      this.record = nodeFs.open(path.join(dir, 'head.pos'), { create: true });
    } catch (e) {
      this.pages.close();
      throw e;
    }
    const r = readRecord(this.record);
    if (r) {
      this.pos = r.pos;
      // Exact pages have exactly the size of their position (a file cut or lost behind the record is not).
      this.exact = r.exact && this.pages.size() === r.pos.pageSize * r.pos.dbPages;
    }
  }

  /** Opens (creating) the head file of a database in `dir`. */
  static open(dir: string): HeadFile {
    fs.mkdirSync(dir, { recursive: true });
    return new HeadFile(dir);
  }

  /** Starts over with no pages at `base` of history `journalId` (the empty database, or before a full image). */
  reset(journalId: Uint8Array, base: Position): void {
    this.invalidate();
    this.pages.truncate(0);
    this.pos = { journalId, txid: base.txid, checksum: base.checksum, pageSize: 0, dbPages: 0 };
    this.exact = true;
    this.writeRecord();
  }

  /** Forgets the position: the next use rebuilds the pages from the stored history. */
  invalidate(): void {
    this.pos = undefined;
    this.exact = false;
    this.record.truncate(0);
  }

  /**
   * Checks `snapshots` (the ones after `pos`, in order, their bytes in memory) against the pages and
   * returns their changes, writing nothing. Throws DoesNotApplyError naming the first one whose pages do
   * not give its postChecksum.
   */
  stage(snapshots: EncodedSnapshot[]): Staged {
    const from = this.exactPos();
    const store = new StagedStore(this.pages, from);
    let at: PageCount = from;
    let txid = from.txid;
    for (const s of snapshots) {
      const body = s.raw ?? s; // inflated once, by the push's parser
      at = applyChecked(store, at, memorySource(body.bytes), 0, body.header);
      txid = s.header.txid;
    }
    return { from, end: { ...at, journalId: from.journalId, txid }, pages: store.map, floor: store.floor };
  }

  /** Writes staged changes to the pages (once the storage holds their snapshots durably). */
  write(st: Staged): void {
    const pos = this.exactPos();
    if (pos.txid !== st.from.txid || pos.checksum !== st.from.checksum) {
      throw new Error(`the head file is at ${pos.txid}, not ${st.from.txid} where these changes start`);
    }
    this.exact = false;
    this.writeRecord();
    const ps = st.end.pageSize;
    const n = st.end.dbPages;
    const zero = new Uint8Array(ps);
    const keys = [...st.pages.keys()].sort((a, b) => a - b);
    // Pages past the floor that no snapshot wrote again are zeros: overwrite what the file holds there.
    const zeroUpTo = ps === 0 ? 0 : Math.min(n, Math.ceil(this.pages.size() / ps));
    const run = new RunWriter(this.pages, ps);
    let k = 0;
    for (let p = st.floor + 1; p <= zeroUpTo; p++) {
      while (k < keys.length && keys[k]! < p) run.add(keys[k]!, st.pages.get(keys[k++]!)!.bytes);
      if (keys[k] === p) run.add(p, st.pages.get(keys[k++]!)!.bytes);
      else run.add(p, zero);
    }
    for (; k < keys.length; k++) run.add(keys[k]!, st.pages.get(keys[k]!)!.bytes);
    run.flush();
    this.pages.truncate(ps * n);
    this.pos = st.end;
    this.exact = true;
    this.writeRecord();
  }

  /**
   * Applies the stored snapshot `s` of the journal `src` to the pages directly, checking its trailer
   * checksum and that its pages give its postChecksum. Throws JournalFormatError or DoesNotApplyError;
   * the pages then hold a partial state (invalidate and rebuild). Call `settle()` after the last one.
   */
  applyStored(src: ByteSource, s: SnapshotInfo): void {
    const from = this.exactPos();
    if (this.exact) {
      this.exact = false;
      this.writeRecord(); // the pages may be ahead of the record from here until settle()
    }
    const hashed = hashingSource(src, s);
    let at: PageCount;
    try {
      at = applyChecked(new FileStore(this.pages, from), from, hashed, s.offset, s);
    } catch (e) {
      if (e instanceof DoesNotApplyError && !hashed.matches()) throw damagedTrailer(s);
      throw e;
    }
    if (!hashed.matches()) throw damagedTrailer(s);
    this.pos = { ...at, journalId: from.journalId, txid: s.txid };
  }

  /** After `applyStored` calls: the pages are exactly `pos`. */
  settle(): void {
    if (!this.pos) throw new Error('the head file has no position');
    this.exact = true;
    this.writeRecord();
  }

  /**
   * Redo after a crash: the pages hold `pos` or a later state, possibly torn; applies every snapshot of
   * the journal `src` (the stored ones after `pos`, ending at `head`) again, then checks the whole file's
   * checksum. Throws (with the pages in an unknown state) when it does not come out as `head`'s.
   */
  redo(src: ByteSource, head: HeadPosition): void {
    const last = redo(src, this.pages, { txid: 0n, checksum: 0n }).snapshot;
    const pageSize = last?.pageSize ?? this.pos?.pageSize ?? 0;
    const dbPages = last?.dbPages ?? this.pos?.dbPages ?? 0;
    if (pageSize !== head.pageSize || dbPages !== head.dbPages) {
      throw new PositionMismatchError(
        `redo ended at ${dbPages} pages of ${pageSize}, not ${head.dbPages} of ${head.pageSize}`,
      );
    }
    this.pos = head;
    if (!this.matches()) {
      this.invalidate();
      throw new PositionMismatchError(`redo did not give the database checksum of txid ${head.txid}`);
    }
    this.settle();
  }

  /** True when the whole file's checksum and size are those of `pos` (reads every page). */
  matches(): boolean {
    const p = this.pos;
    if (!p) return false;
    if (this.pages.size() !== p.pageSize * p.dbPages) return false;
    return (p.pageSize === 0 ? 0n : databaseChecksum(this.pages, p.pageSize)) === p.checksum;
  }

  /** Copies the pages to `out` (a clone where the file system can). */
  async copyTo(out: string): Promise<void> {
    await fsp.copyFile(this.pagesPath, out, fs.constants.COPYFILE_FICLONE);
  }

  /** Makes the pages and the record durable (the record last). */
  sync(): void {
    if (!this.pos) return;
    this.pages.sync();
    this.writeRecord();
    this.record.sync();
  }

  close(): void {
    this.pages.close();
    this.record.close();
  }

  private exactPos(): HeadPosition {
    if (!this.pos) throw new Error('the head file has no position');
    return this.pos;
  }

  private writeRecord(): void {
    const p = this.exactPos();
    const b = new Uint8Array(RECORD_SIZE);
    const v = new DataView(b.buffer);
    b.set(MAGIC);
    b.set(p.journalId, 8);
    v.setBigUint64(24, p.txid, true);
    v.setBigUint64(32, p.checksum, true);
    v.setUint32(40, p.pageSize, true);
    v.setUint32(44, p.dbPages, true);
    v.setUint32(48, this.exact ? EXACT : 0, true);
    v.setBigUint64(56, xxh64(b.subarray(0, 56)), true);
    this.record.write(b, 0);
  }
}

function damagedTrailer(s: SnapshotInfo): JournalFormatError {
  return new JournalFormatError('snapshot checksum mismatch', s.offset, s.txid);
}

function readRecord(f: FileHandle): { pos: HeadPosition; exact: boolean } | undefined {
  const b = new Uint8Array(RECORD_SIZE);
  if (f.read(b, 0) < RECORD_SIZE) return undefined;
  const v = new DataView(b.buffer);
  if (MAGIC.some((m, i) => b[i] !== m)) return undefined;
  if (v.getBigUint64(56, true) !== xxh64(b.subarray(0, 56))) return undefined;
  return {
    pos: {
      journalId: b.slice(8, 24),
      txid: v.getBigUint64(24, true),
      checksum: v.getBigUint64(32, true),
      pageSize: v.getUint32(40, true),
      dbPages: v.getUint32(44, true),
    },
    exact: (v.getUint32(48, true) & EXACT) !== 0,
  };
}

/** The pages of the file, changed in place (catching up on stored snapshots). */
class FileStore implements PageStore {
  private pageSize: number;

  constructor(
    private readonly file: FileHandle,
    at: PageCount,
  ) {
    this.pageSize = at.pageSize;
  }

  get(pgno: number): { bytes: Uint8Array; term: bigint } {
    const bytes = new Uint8Array(this.pageSize);
    this.file.read(bytes, (pgno - 1) * this.pageSize);
    return { bytes, term: pageTerm(bytes, pgno) };
  }

  put(pgno: number, bytes: Uint8Array): void {
    this.file.write(bytes, (pgno - 1) * this.pageSize);
  }

  resize(pageSize: number, pages: number): void {
    if (pageSize !== this.pageSize) this.file.truncate(0);
    this.pageSize = pageSize;
    this.file.truncate(pageSize * pages);
  }
}

/** The file's pages seen through a push's changes, held in memory (the file is not touched). */
class StagedStore implements PageStore {
  readonly map = new Map<number, { bytes: Uint8Array; term: bigint }>();
  floor: number;
  private pageSize: number;

  constructor(
    private readonly file: FileHandle,
    at: PageCount,
  ) {
    this.floor = at.dbPages;
    this.pageSize = at.pageSize;
  }

  get(pgno: number): { bytes: Uint8Array; term: bigint } {
    const held = this.map.get(pgno);
    if (held) return held;
    const bytes = new Uint8Array(this.pageSize);
    if (pgno <= this.floor) this.file.read(bytes, (pgno - 1) * this.pageSize);
    return { bytes, term: pageTerm(bytes, pgno) };
  }

  put(pgno: number, bytes: Uint8Array, term: bigint): void {
    this.map.set(pgno, { bytes, term });
  }

  resize(pageSize: number, pages: number): void {
    if (pageSize !== this.pageSize) {
      this.map.clear();
      this.floor = 0;
    } else {
      for (const p of this.map.keys()) if (p > pages) this.map.delete(p);
      this.floor = Math.min(this.floor, pages);
    }
    this.pageSize = pageSize;
  }
}

/** Writes pages in runs of neighbours (one write per run). */
class RunWriter {
  private first = 0;
  private run: Uint8Array[] = [];

  constructor(
    private readonly file: FileHandle,
    private readonly pageSize: number,
  ) {}

  add(pgno: number, bytes: Uint8Array): void {
    if (this.run.length > 0 && (pgno !== this.first + this.run.length || this.run.length >= RUN_PAGES))
      this.flush();
    if (this.run.length === 0) this.first = pgno;
    this.run.push(bytes);
  }

  flush(): void {
    if (this.run.length === 0) return;
    const buf = new Uint8Array(this.run.length * this.pageSize);
    for (const [i, b] of this.run.entries()) buf.set(b, i * this.pageSize);
    this.file.write(buf, (this.first - 1) * this.pageSize);
    this.run = [];
  }
}
