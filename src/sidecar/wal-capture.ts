/**
 * Capture of the WAL's committed transactions into the journal, one snapshot each (the second layer,
 * see sidecar-state.ts); and the record of the database as it is as one snapshot (`recordDifference`),
 * when frames may have been lost.
 */
import { appendChange, type Pages } from '../capture/outside.js';
import {
  BODY_CHUNK_SIZE,
  BodyCompressor,
  FLAG_FULL_IMAGE,
  FLAG_OUTSIDE,
  pageTerm,
  SnapshotBodyWriter,
  type SnapshotInfo,
} from '../format/index.js';
import { nodeRuntime } from '../node/runtime.js';
import { historyPages } from '../timetravel/history-pages.js';
import { type Cursor, SidecarState } from './sidecar-state.js';
import { sameGeneration, type WalHeader, type WalTransaction, walIndexEnd } from './wal-file.js';
import type { WalPosition } from './wal-state.js';

/** Capture (see above). */
export abstract class WalCapture extends SidecarState {
  /** Compression: bodies left to store without trying, poor results in a row (noteCompression). */
  private skipCompress = 0;
  private scratch: Uint8Array | undefined;
  private poorBodies = 0;

  /** Runs `fn` holding SQLite's write lock (see WalSwap). */
  protected abstract underWriteLock<T>(fn: () => T): T;

  /**
   * Runs `fn` (a capture) taking the old content of pages from the WAL's frames written since now, else
   * from the journal's head state rather than the database file: for when the file may already hold
   * frames past the cursor (a checkpoint copied them while the sidecar was stopped or its reader was off
   * the WAL).
   */
  protected fromHead<T>(fn: () => T): T {
    this.since = new Map();
    this.base = historyPages(nodeRuntime.fs, this.paths, this.journal.position.txid).pages;
    try {
      return fn();
    } finally {
      this.base.close?.();
      this.base = undefined;
      this.since = undefined;
    }
  }

  /** Copies every committed transaction after the cursor into the journal. Returns how many. */
  protected capture(): number {
    if (this.fileAheadUntil > 0 && this.base === undefined) {
      const n = this.fromHead(() => this.capture());
      if (this.fileAheadUntil <= this.cursor.frame) this.fileAheadUntil = 0;
      return n;
    }
    const h = this.wal.header();
    const cur = this.cursor;
    const changed = cur.header ? !h || !sameGeneration(cur.header, h) : h !== undefined;
    if (changed) {
      const unsafe = this.unsafeChange(h);
      if (unsafe) {
        this.underWriteLock(() => this.recordDifference(unsafe));
        return 1;
      }
      this.newGeneration(h);
    }
    if (!h) return 0;
    const end = walIndexEnd(this.shmFd!, h);
    if (end === undefined || end <= this.cursor.frame) return 0;
    // A batch: every committed transaction found (up to 1,000 or 16 MiB), one fsync for all of them.
    // The state file names where the batch starts; after a crash the journal's head is some snapshot of
    // the batch, found again by counting commit frames from there (bringUp).
    let n = 0;
    let batch: SnapshotInfo[] = [];
    let bytes = 0;
    const flush = (): void => {
      if (batch.length === 0) return;
      this.journal.handle.sync();
      for (const s of batch) this.noteHead(s);
      batch = [];
      bytes = 0;
      this.writeState(this.cursor);
    };
    this.writeState(this.cursor);
    try {
      for (const t of this.wal.transactions(h, this.cursor.frame, [this.cursor.ck0, this.cursor.ck1], end)) {
        const snap = this.appendTransaction(h, t);
        batch.push(snap);
        bytes += snap.length;
        n++;
        if (batch.length >= 1000 || bytes >= 16 << 20) flush();
      }
    } finally {
      flush();
    }
    return n;
  }

  /**
   * Why the WAL's restart (new salts), truncation or removal, seen now, may have dropped frames the
   * sidecar had not copied; undefined when it certainly did not. SQLite restarts the WAL only when every
   * frame is in the database file and no reader uses the WAL: the sidecar's reader then sits on the
   * file alone, placed there by a swap after every frame was copied (so no frame came after the swap),
   * and it blocks every checkpoint of later frames (so one restart at most: salt-1 grows by one).
   */
  private unsafeChange(h: WalHeader | undefined): string | undefined {
    const was = `the WAL of ${this.file} was reset`;
    if (this.cursor.frame > this.swapFrame) return `${was} while it held frames not yet copied`;
    if (h && this.genSalt1 !== undefined && h.salt1 !== (this.genSalt1 + 1) >>> 0) {
      return `${was} more than once under the sidecar`;
    }
    if (h && this.headPageSize !== 0 && h.pageSize !== this.headPageSize) {
      return `${was} with another page size (${this.headPageSize} → ${h.pageSize})`;
    }
    if (this.yielded && !this.fileIsHead()) {
      return `${was} by the application's checkpoint and the database file is not the journal's head`;
    }
    return undefined;
  }

  /**
   * The WAL restarted (new salts) or was truncated, safely (see unsafeChange): the database file is the
   * journal's head.
   */
  private newGeneration(h: WalHeader | undefined): void {
    this.frames = new Map();
    this.swapFrame = 0;
    this.yielded = false;
    this.fileAheadUntil = 0;
    if (h) this.genSalt1 = h.salt1;
    this.cursor = { header: h, frame: 0, ck0: h?.ck0 ?? 0, ck1: h?.ck1 ?? 0 };
    if (h) this.writeState(this.cursor);
  }

  /**
   * Under SQLite's write lock: appends the database as it is now (the file with the WAL's committed
   * frames over it) as one snapshot — the difference from the journal's head, flagged outside, or the
   * first snapshot of an empty journal — and moves the cursor to the WAL's end. `reason` (a re-bootstrap)
   * is told to the user. Used at startup and when the WAL changed in a way that may have lost frames.
   */
  protected recordDifference(reason: string | undefined): SnapshotInfo | undefined {
    const head = this.journal.position;
    const h = this.wal.header();
    const end = this.committedEnd(h);
    const scan = this.scanGeneration(h, end);
    this.frames = scan.frames;
    const now = this.currentPages(h, scan.last.frame);
    let from: Pages | undefined;
    if (head.txid > 0n) {
      try {
        from = historyPages(nodeRuntime.fs, this.paths, head.txid).pages;
      } catch {
        from = undefined;
      }
    }
    let snap: SnapshotInfo | undefined;
    try {
      snap = appendChange(this.journal, from, now, { flags: head.txid > 0n ? FLAG_OUTSIDE : 0 });
    } finally {
      from?.close?.();
    }
    this.cursor = scan.last;
    this.genSalt1 = h?.salt1;
    // Under the write lock, the cursor at the committed end: the reader's next read mark (the swap that
    // follows) is the cursor, so no checkpoint can take the file past it (a frame number of an older
    // generation would only keep later captures reading old content from the journal, slowly).
    this.fileAheadUntil = 0;
    this.writeState(this.cursor);
    if (snap) this.noteHead(snap);
    if (reason !== undefined) {
      this.say(
        snap
          ? `${reason}: the database as it is now is txid ${snap.txid}, one outside snapshot; the transactions in between are not restorable one by one`
          : `${reason}, but the database is the journal's head: nothing was lost`,
      );
    }
    return snap;
  }

  /** One committed transaction of the WAL → one snapshot, diffed against each page's previous content. */
  private appendTransaction(h: WalHeader, t: WalTransaction): SnapshotInfo {
    const pageSize = h.pageSize;
    const prevPages = this.headPages;
    const dbPages = t.dbPages;
    const full = prevPages === 0;
    const oldBuf = this.page(pageSize, 0);
    const newBuf = this.page(pageSize, 1);
    // The page as it was before this transaction.
    const readOld = (pgno: number): Uint8Array => {
      const since = this.since;
      const i = since ? since.get(pgno) : this.frames.get(pgno);
      if (i !== undefined) this.wal.readPage(h, i, oldBuf);
      else if (this.base) this.base.readPage(pgno, oldBuf);
      else this.readFilePage(pgno, oldBuf);
      return oldBuf;
    };
    // The page after it: its frame, or (a page the database grew back over) what SQLite reads.
    const readNew = (pgno: number): Uint8Array => {
      const i = t.pages.get(pgno) ?? this.frames.get(pgno);
      if (i !== undefined) this.wal.readPage(h, i, newBuf);
      else this.readFilePage(pgno, newBuf);
      return newBuf;
    };
    const touched = new Set<number>();
    for (const pgno of t.pages.keys()) touched.add(pgno);
    for (let p = Math.min(prevPages, dbPages) + 1; p <= Math.max(prevPages, dbPages); p++) touched.add(p);
    const order = full ? range(1, dbPages) : [...touched].sort((a, b) => a - b);
    const appender = this.journal.begin();
    // Bodies that do not compress (random or already compressed data) are not tried for a while: the
    // deflate would only take CPU from the application (limit 0: stored as they are).
    const tryCompress = this.skipCompress === 0;
    if (!tryCompress) this.skipCompress--;
    const packer = new BodyCompressor(appender.sink, tryCompress ? undefined : 0, true); // the appender copies or writes
    // Every chunk is consumed (compressed, or written to the journal) before this returns: one scratch
    // chunk serves every snapshot (as in the writer's capture).
    this.scratch ??= new Uint8Array(BODY_CHUNK_SIZE);
    const body = new SnapshotBodyWriter(pageSize, packer.sink, this.scratch);
    let checksum = full ? 0n : this.journal.position.checksum;
    try {
      for (const pgno of order) {
        const existed = !full && pgno <= prevPages;
        const old = existed ? readOld(pgno) : undefined;
        if (pgno > dbPages) {
          if (old) checksum ^= pageTerm(old, pgno);
          continue;
        }
        const neu = readNew(pgno);
        if (full) {
          body.addFullPage(pgno, neu);
          checksum ^= pageTerm(neu, pgno);
        } else if (body.addDiff(pgno, old, neu) || !old) {
          checksum ^= (old ? pageTerm(old, pgno) : 0n) ^ pageTerm(neu, pgno);
        }
      }
      body.finish();
      const compressed = packer.finish();
      const snap = appender.finish(
        {
          pageSize,
          dbPages,
          flags: (full ? FLAG_FULL_IMAGE : 0) | compressed,
          postChecksum: checksum,
          commitTag: 0,
        },
        body.patchCount,
        false,
      );
      if (tryCompress) this.noteCompression(snap.length - 72 <= body.length * 0.9);
      // Confirmed now, durable at the batch's fsync (capture): nothing reads it before that.
      this.journal.confirm();
      this.cursor = { header: h, frame: t.commitFrame, ck0: t.ck0, ck1: t.ck1 };
      for (const [pgno, i] of t.pages) {
        this.frames.set(pgno, i);
        this.since?.set(pgno, i);
      }
      this.headPages = snap.dbPages;
      this.headPageSize = snap.pageSize;
      return snap;
    } catch (e) {
      if (this.journal.pending) this.journal.abandon(true);
      else appender.cancel();
      throw e;
    }
  }

  /** After 8 bodies in a row that deflate shrank by under 10 %, the next 64 are stored without trying. */
  private noteCompression(shrank: boolean): void {
    this.poorBodies = shrank ? 0 : this.poorBodies + 1;
    if (this.poorBodies >= 8) {
      this.poorBodies = 0;
      this.skipCompress = 64;
    }
  }

  /** A snapshot is durable: push it, tell listeners. */
  private noteHead(snap: SnapshotInfo): void {
    this.headPages = snap.dbPages;
    this.headPageSize = snap.pageSize;
    this.pusher?.noteSnapshot(snap);
    this.emitter.emit('snapshot', snap);
  }

  private positionAt(c: Cursor, snap?: SnapshotInfo): WalPosition {
    const p = this.journal.position;
    return {
      txid: snap?.txid ?? p.txid,
      checksum: snap?.postChecksum ?? p.checksum,
      salt1: c.header?.salt1 ?? 0,
      salt2: c.header?.salt2 ?? 0,
      pageSize: c.header?.pageSize ?? 0,
      frame: c.frame,
      ck0: c.ck0,
      ck1: c.ck1,
    };
  }

  private writeState(c: Cursor): void {
    const p = this.positionAt(c);
    this.state!.write(p, p);
  }
}

function range(from: number, to: number): number[] {
  const out: number[] = [];
  for (let i = from; i <= to; i++) out.push(i);
  return out;
}
