/**
 * The sidecar's state (its connections, files, the cursor in the WAL) and its reads of the database as
 * SQLite's readers see it. The sidecar is built in layers, each a class over the one before:
 * SidecarState → WalCapture (wal-capture.ts) → HeadCheck (checks.ts) → WalSwap (swap.ts) → Startup
 * (startup.ts) → Sidecar (sidecar.ts). See replicate.ts.
 */
import * as fs from 'node:fs';
import type { Pages } from '../capture/outside.js';
import { Emitter } from '../client/emitter.js';
import type { Pusher } from '../client/pusher.js';
import { JournalReader, pageTerm } from '../format/index.js';
import { fileSource } from '../journal/file-source.js';
import type { JournalWriter } from '../journal/journal-writer.js';
import { journalPaths } from '../journal/paths.js';
import type { Native } from './native.js';
import type { ReplicateOptions, ReplicatorEvents } from './replicator.js';
import { WalFile, type WalHeader, walIndexEnd } from './wal-file.js';
import type { WalStateFile } from './wal-state.js';

/** Where the capture is in the WAL. */
export interface Cursor {
  header: WalHeader | undefined;
  frame: number;
  ck0: number;
  ck1: number;
}

/** The sidecar's state and reads (the first layer, see above). */
export abstract class SidecarState {
  readonly paths: ReturnType<typeof journalPaths>;
  readonly emitter = new Emitter<ReplicatorEvents>();
  journal!: JournalWriter;
  pusher: Pusher | undefined;
  protected lock: { release(): void } | undefined;
  protected reader: Native | undefined;
  protected writer: Native | undefined;
  protected readonly wal: WalFile;
  protected state: WalStateFile | undefined;
  protected cursor: Cursor = { header: undefined, frame: 0, ck0: 0, ck1: 0 };
  /** The latest frame of each page in the WAL's current generation, up to the cursor. */
  protected frames = new Map<number, number>();
  /** While catching up after a restart: the journal's head state, the old content of pages (see resume). */
  protected base: Pages | undefined;
  /** Pages written since the resume point (their old content is in the WAL, not the journal's head). */
  protected since: Map<number, number> | undefined;
  protected headPages = 0;
  protected headPageSize = 0;
  /** The cursor's frame at the last swap: the reader's read mark. */
  protected swapFrame = 0;
  protected swapAt = 0;
  /** Salt-1 of the last WAL generation seen (it grows by one at each restart). */
  protected genSalt1: number | undefined;
  /** The reader let go of its read transaction for an application's checkpoint (see yieldTo). */
  protected yielded = false;
  /**
   * While the reader was off the WAL (yieldTo), a checkpoint may have copied frames past the cursor into
   * the database file: until the cursor passes this frame, the old content of pages comes from the
   * journal's head state, not the file (see capture). 0: the file holds nothing past the cursor.
   */
  protected fileAheadUntil = 0;
  protected yielding = false;
  protected stopped = false;
  private readonly pageBuf = new Map<number, Uint8Array>();
  /**
   * The database file and the wal-index, read only, open from after the native connections until after
   * they are closed: closing a descriptor of a file drops every POSIX lock this process holds on it,
   * SQLite's read locks included, so these are opened once and never closed in between.
   */
  protected dbFd: number | undefined;
  protected shmFd: number | undefined;

  constructor(
    readonly file: string,
    protected readonly options: ReplicateOptions,
  ) {
    this.paths = journalPaths(file);
    this.wal = new WalFile(`${file}-wal`);
  }

  protected say(line: string): void {
    this.options.onMessage?.(line);
  }

  /** The wal-index's nBackfill: the frames of the WAL's current generation already in the database file. */
  protected backfilled(): number {
    const b = Buffer.alloc(4);
    fs.readSync(this.shmFd!, b, 0, 4, 96);
    return b.readUInt32LE(0);
  }

  /** The database checksum after `txid` in the journal (undefined when the journal does not hold it). */
  protected journalChecksumAt(txid: bigint): bigint | undefined {
    const head = this.journal.position;
    if (txid === head.txid) return head.checksum;
    const reader = new JournalReader(fileSource(this.journal.handle));
    if (txid === reader.header.baseTxid) return reader.header.baseChecksum;
    for (const s of reader.snapshots()) if (s.txid === txid) return s.postChecksum;
    return undefined;
  }

  /** The committed end of the WAL now (0 without a WAL); throws when the wal-index does not describe it. */
  protected committedEnd(h: WalHeader | undefined): number {
    if (!h) return 0;
    for (let tries = 0; tries < 100; tries++) {
      const end = walIndexEnd(this.shmFd!, h);
      if (end !== undefined) return end;
    }
    throw new Error(`cannot read the wal-index ${this.file}-shm: it does not describe ${this.wal.path}`);
  }

  /** The latest frame of each page up to `end`, and every commit frame with its running checksum. */
  protected scanGeneration(
    h: WalHeader | undefined,
    end: number,
  ): { frames: Map<number, number>; commits: Map<number, [number, number]>; last: Cursor } {
    const frames = new Map<number, number>();
    const commits = new Map<number, [number, number]>();
    let last: Cursor = { header: h, frame: 0, ck0: h?.ck0 ?? 0, ck1: h?.ck1 ?? 0 };
    if (h) {
      for (const t of this.wal.transactions(h, 0, [h.ck0, h.ck1], end)) {
        for (const [pgno, i] of t.pages) frames.set(pgno, i);
        commits.set(t.commitFrame, [t.ck0, t.ck1]);
        last = { header: h, frame: t.commitFrame, ck0: t.ck0, ck1: t.ck1 };
      }
    }
    return { frames, commits, last };
  }

  /** The database as SQLite's readers see it at frame `end`: the file with the WAL's frames over it. */
  protected currentPages(h: WalHeader | undefined, end: number, frames = this.frames): Pages {
    const fd = this.dbFd!;
    const fileSize = fs.fstatSync(fd).size;
    const hdr = Buffer.alloc(100);
    fs.readSync(fd, hdr, 0, 100, 0);
    const raw = hdr.readUInt16BE(16);
    const pageSize = h?.pageSize ?? (raw === 1 ? 65536 : raw);
    let dbPages = Math.floor(fileSize / pageSize);
    if (hdr.readUInt32BE(24) === hdr.readUInt32BE(92) && hdr.readUInt32BE(28) > 0) {
      dbPages = hdr.readUInt32BE(28);
    }
    if (h && end > 0) {
      // The last commit frame's size is the database's.
      const b = Buffer.alloc(8);
      const wfd = fs.openSync(this.wal.path, 'r');
      fs.readSync(wfd, b, 0, 8, 32 + (end - 1) * (24 + h.pageSize));
      fs.closeSync(wfd);
      dbPages = b.readUInt32BE(4);
    }
    return {
      pageSize,
      dbPages,
      readPage: (pgno, out) => {
        const i = frames.get(pgno);
        if (h && i !== undefined && i <= end) this.wal.readPage(h, i, out);
        else readFileAt(fd, out, (pgno - 1) * pageSize);
      },
    };
  }

  /** True when the database file's pages are the journal's head (its checksum). */
  protected fileIsHead(): boolean {
    const fd = this.dbFd!;
    const size = this.headPageSize;
    if (size === 0) return fs.fstatSync(fd).size === 0;
    if (fs.fstatSync(fd).size < this.headPages * size) return false;
    const page = this.page(size, 2);
    let sum = 0n;
    for (let pgno = 1; pgno <= this.headPages; pgno++) {
      readFileAt(fd, page, (pgno - 1) * size);
      sum ^= pageTerm(page, pgno);
    }
    return sum === this.journal.position.checksum;
  }

  protected page(size: number, slot: number): Uint8Array {
    const key = size * 4 + slot;
    let b = this.pageBuf.get(key);
    if (!b) {
      b = new Uint8Array(size);
      this.pageBuf.set(key, b);
    }
    return b;
  }

  protected readFilePage(pgno: number, out: Uint8Array): void {
    readFileAt(this.dbFd!, out, (pgno - 1) * out.length);
  }
}

function readFileAt(fd: number, out: Uint8Array, offset: number): void {
  out.fill(0);
  let got = 0;
  while (got < out.length) {
    const n = fs.readSync(fd, out, got, out.length - got, offset + got);
    if (n === 0) break;
    got += n;
  }
}
