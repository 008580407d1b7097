/**
 * The sidecar (`mycelite replicate DB`): follows a database that other processes write with native
 * SQLite in WAL mode and turns every committed transaction into one snapshot of DB's journal
 * (docs/ARCHITECTURE.md, "WAL capture"). Node only.
 *
 * Two native connections (better-sqlite3) keep the WAL's frames from being overwritten before they are
 * copied. `reader` always holds a read transaction: while it does, SQLite never restarts the WAL over
 * frames the sidecar has not read (a restart needs every reader off the WAL, and a reader on the
 * database file alone blocks every checkpoint). The read transaction moves forward only in a **swap**,
 * done while `writer` holds SQLite's write lock (BEGIN IMMEDIATE, nothing written): every committed
 * frame is copied first, then `reader` ends its transaction, runs a PASSIVE checkpoint and begins a new
 * one, then `writer` commits its empty transaction. The database file is written only by SQLite's own
 * checkpoints.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type BetterSqlite3 from 'better-sqlite3';
import { appendChange, type Pages } from '../capture/outside.js';
import {
  BODY_CHUNK_SIZE,
  BodyCompressor,
  FLAG_COMPRESSED,
  FLAG_FULL_IMAGE,
  FLAG_OUTSIDE,
  JournalReader,
  loadHash,
  pageTerm,
  SnapshotBodyWriter,
  type SnapshotInfo,
} from '../format/index.js';
import { fileSource } from '../journal/file-source.js';
import { JournalWriter } from '../journal/journal-writer.js';
import { journalPaths } from '../journal/paths.js';
import { findConflictingLock } from '../node/file-lock.js';
import { nodeRuntime } from '../node/runtime.js';
import { Emitter } from '../sync/emitter.js';
import type { Pusher } from '../sync/pusher.js';
import { checkHubOptions, type HubOptions, startWriterSync } from '../sync/writer-start.js';
import { historyPages } from '../timetravel/history-pages.js';
import { sameGeneration, WalFile, type WalHeader, type WalTransaction, walIndexEnd } from './wal-file.js';
import { readWalState, type WalPosition, WalStateFile } from './wal-state.js';

export interface ReplicateOptions {
  /** Push every snapshot to this hub database as well. */
  hub?: HubOptions;
  /** How often to look at the WAL besides file-change events (ms, default 50). */
  pollMs?: number;
  /** Swap (and checkpoint) once this many frames were copied since the last one (default 1000). */
  checkpointFrames?: number;
  /** Swap at least this often while frames come in (ms, default 1000). */
  checkpointMs?: number;
  /** While transactions keep coming, wait this long before looking again (ms, default 2; one fsync for more). */
  coalesceMs?: number;
  /** How long startup waits for SQLite's write lock (ms, default 30 s). */
  startTimeoutMs?: number;
  /** Messages for the user (default: none). */
  onMessage?: (line: string) => void;
}

export type ReplicatorEvents = {
  /** A snapshot is durable in the journal (fsynced). */
  snapshot: SnapshotInfo;
  /** The sidecar stopped because of this error (close() was not called). */
  error: Error;
};

export interface Replicator {
  readonly dbPath: string;
  readonly journalPath: string;
  /** The journal's head. */
  position(): { txid: bigint; checksum: bigint };
  /** Committed WAL frames not yet in the journal (the capture lag, in frames; 0 when caught up). */
  pendingFrames(): number;
  /** The hub push, when `hub` was given. */
  readonly sync: Pusher | undefined;
  on<K extends keyof ReplicatorEvents>(event: K, fn: (arg: ReplicatorEvents[K]) => void): () => void;
  /** Copies every transaction committed so far (taking SQLite's write lock for a moment). */
  catchUp(): Promise<void>;
  /** Copies what is committed, stops, releases everything (the hub lease in the background). */
  close(): Promise<void>;
}

/** The lock bytes of the wal-index (SQLite's os_unix.c): base offset, then WRITE, CKPT, RECOVER, READ(0..4). */
const SHM_LOCKS = 120;
const WAL_WRITE_LOCK = 0;
const WAL_CKPT_LOCK = 1;

/** Errors the user can act on (bad input, refused start): one line, exit 1. */
export class ReplicateError extends Error {
  override name = 'ReplicateError';
}

type Native = BetterSqlite3.Database;

/** Where the capture is in the WAL. */
interface Cursor {
  header: WalHeader | undefined;
  frame: number;
  ck0: number;
  ck1: number;
}

/** Starts the sidecar on `dbPath`. Resolves once the journal holds every transaction committed so far. */
/** better-sqlite3, an optional dependency (it needs a prebuilt binary or a compiler to install). */
let NativeDatabase: typeof BetterSqlite3 | undefined;

async function loadNative(): Promise<typeof BetterSqlite3> {
  if (NativeDatabase) return NativeDatabase;
  try {
    NativeDatabase = (await import('better-sqlite3')).default;
  } catch (e) {
    throw new ReplicateError(
      `mycelite replicate reads the database through better-sqlite3, which is not installed here (${(e as Error).message.split('\n')[0]}): run \`npm install better-sqlite3\` (an optional dependency of mycelite: it did not install, e.g. without a compiler or a prebuilt binary for this platform)`,
    );
  }
  return NativeDatabase;
}

export async function replicate(dbPath: string, options: ReplicateOptions = {}): Promise<Replicator> {
  await loadHash();
  await loadNative();
  const file = path.resolve(dbPath);
  checkDatabase(file, dbPath);
  if (options.hub) {
    const bad = checkHubOptions(options.hub);
    if (bad) throw new ReplicateError(bad);
  }
  const s = new Sidecar(file, options);
  try {
    s.start();
  } catch (e) {
    s.release();
    throw e;
  }
  if (options.hub) {
    try {
      // One lease holder per history: a sidecar restarted after a crash takes over its own lease.
      const holder = options.hub.holder ?? `replicate-${hex(s.journal.journalId)}`;
      s.pusher = await startWriterSync(nodeRuntime.fs, s.paths.journal, s.journal.end, {
        ...options.hub,
        holder,
      });
    } catch (e) {
      s.release();
      throw e;
    }
  }
  s.watch();
  return s.api();
}

/** Refuses, before anything is created, a file that is not a SQLite database in WAL mode. */
function checkDatabase(file: string, shown: string): void {
  let head: Buffer;
  try {
    const fd = fs.openSync(file, 'r');
    try {
      head = Buffer.alloc(100);
      fs.readSync(fd, head, 0, 100, 0);
    } finally {
      fs.closeSync(fd);
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ReplicateError(code === 'ENOENT' ? `${shown} does not exist` : `cannot read ${shown}: ${code}`);
  }
  if (head.subarray(0, 16).toString('latin1') !== 'SQLite format 3\0') {
    throw new ReplicateError(`${shown} is not a SQLite database (or is still empty)`);
  }
  if (head[18] !== 2 || head[19] !== 2) {
    throw new ReplicateError(
      `${shown} is not in WAL mode: replicate follows WAL databases (the application sets PRAGMA journal_mode=WAL); open other databases through Mycelite instead`,
    );
  }
}

class Sidecar {
  readonly paths: ReturnType<typeof journalPaths>;
  readonly emitter = new Emitter<ReplicatorEvents>();
  journal!: JournalWriter;
  pusher: Pusher | undefined;
  private lock: { release(): void } | undefined;
  private reader: Native | undefined;
  private writer: Native | undefined;
  private readonly wal: WalFile;
  private state: WalStateFile | undefined;
  private cursor: Cursor = { header: undefined, frame: 0, ck0: 0, ck1: 0 };
  /** The latest frame of each page in the WAL's current generation, up to the cursor. */
  private frames = new Map<number, number>();
  /** While catching up after a restart: the journal's head state, the old content of pages (see resume). */
  private base: Pages | undefined;
  /** Pages written since the resume point (their old content is in the WAL, not the journal's head). */
  private since: Map<number, number> | undefined;
  private headPages = 0;
  private headPageSize = 0;
  /** The cursor's frame at the last swap: the reader's read mark. */
  private swapFrame = 0;
  private swapAt = 0;
  /** Salt-1 of the last WAL generation seen (it grows by one at each restart). */
  private genSalt1: number | undefined;
  /** The reader let go of its read transaction for an application's checkpoint (see yieldTo). */
  private yielded = false;
  /**
   * While the reader was off the WAL (yieldTo), a checkpoint may have copied frames past the cursor into
   * the database file: until the cursor passes this frame, the old content of pages comes from the
   * journal's head state, not the file (see capture). 0: the file holds nothing past the cursor.
   */
  private fileAheadUntil = 0;
  private yielding = false;
  /** Compression: bodies left to store without trying, poor results in a row (noteCompression). */
  private skipCompress = 0;
  private scratch: Uint8Array | undefined;
  /** Transactions the last look found (see watch). */
  private lastFound = 0;
  private poorBodies = 0;
  private watcher: fs.FSWatcher | undefined;
  private timer: ReturnType<typeof setInterval> | undefined;
  private soon: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;
  private failed: Error | undefined;
  private readonly pageBuf = new Map<number, Uint8Array>();
  /**
   * The database file and the wal-index, read only, open from after the native connections until after
   * they are closed: closing a descriptor of a file drops every POSIX lock this process holds on it,
   * SQLite's read locks included, so these are opened once and never closed in between.
   */
  private dbFd: number | undefined;
  private shmFd: number | undefined;

  constructor(
    readonly file: string,
    private readonly options: ReplicateOptions,
  ) {
    this.paths = journalPaths(file);
    this.wal = new WalFile(`${file}-wal`);
  }

  private say(line: string): void {
    this.options.onMessage?.(line);
  }

  start(): void {
    const { paths } = this;
    const fsys = nodeRuntime.fs;
    if (fsys.exists(paths.replica)) {
      throw new ReplicateError(
        `${this.file} is a replica (${paths.replica}): replicate follows the writer's database`,
      );
    }
    if (!fsys.exists(paths.dir)) fsys.mkdir(paths.dir);
    this.lock = fsys.tryLockExclusive?.(paths.lock);
    if (!this.lock) {
      throw new ReplicateError(
        `${this.file}'s journal is held by another process (another mycelite replicate, or an application writing through Mycelite)`,
      );
    }
    const reader = new NativeDatabase!(this.file, { fileMustExist: true });
    this.reader = reader;
    const writer = new NativeDatabase!(this.file, { fileMustExist: true });
    this.writer = writer;
    const mode = String(writer.pragma('journal_mode', { simple: true }));
    if (mode !== 'wal') {
      throw new ReplicateError(`${this.file} is not in WAL mode (journal_mode=${mode})`);
    }
    writer.pragma(`busy_timeout = ${this.options.startTimeoutMs ?? 30_000}`);
    reader.pragma('busy_timeout = 5000');
    this.dbFd = fs.openSync(this.file, 'r');
    // The wal-index exists once a connection has read the database in WAL mode.
    reader.prepare('SELECT count(*) FROM sqlite_schema').get();
    this.shmFd = fs.openSync(`${this.file}-shm`, 'r');
    if (fsys.fileSize(paths.journal) === 0) JournalWriter.create(fsys, paths.journal);
    this.journal = JournalWriter.open(fsys, paths.journal);
    this.journal.preallocate(1 << 20);
    const last = this.journal.last;
    if (last) {
      this.headPages = last.dbPages;
      this.headPageSize = last.pageSize;
    } else if (this.journal.position.txid > 0n) {
      const { pages } = historyPages(fsys, paths, this.journal.position.txid);
      this.headPages = pages.dbPages;
      this.headPageSize = pages.pageSize;
      pages.close?.();
    }
    const saved = readWalState(paths.wal);
    this.state = new WalStateFile(paths.wal);
    // Freeze: no transaction can commit while the journal is brought up to the database.
    writer.exec('BEGIN IMMEDIATE');
    writer.pragma('busy_timeout = 0');
    try {
      this.bringUp(saved);
      this.swapInside();
      this.checkHead('at start');
    } finally {
      writer.exec('COMMIT');
    }
  }

  /** Startup, under the write lock: resume at the journal's head, or record the difference once. */
  private bringUp(saved: WalPosition[] | undefined): void {
    const head = this.journal.position;
    const h = this.wal.header();
    const end = this.committedEnd(h);
    const scan = this.scanGeneration(h, end);
    const match = this.resumePoint(saved?.[0], h, scan.commits);
    if (head.txid > 0n && match && h) {
      // Resume exactly: the transactions after the head's commit frame become snapshots. Their pages'
      // old content comes from the WAL (frames after the head) or from the journal's head state: the
      // database file may already hold later frames that a checkpoint copied while the sidecar was down.
      this.frames = this.scanGeneration(h, match.frame).frames;
      this.cursor = { header: h, frame: match.frame, ck0: match.ck0, ck1: match.ck1 };
      this.genSalt1 = h.salt1;
      this.fromHead(() => this.capture());
      this.say(`resumed at txid ${head.txid}; the journal is at txid ${this.journal.position.txid}`);
      return;
    }
    if (head.txid === 0n) {
      const snap = this.recordDifference(undefined);
      this.say(
        `bootstrapped ${this.file}: txid ${this.journal.position.txid} is the database as it is (${snap?.dbPages ?? 0} pages)`,
      );
      return;
    }
    this.recordDifference(
      `the WAL the journal's head (txid ${head.txid}) came from is gone (checkpointed and reset, or the journal mode switched, while the sidecar was stopped)`,
    );
  }

  /**
   * Where in the WAL the journal's head came from, when the state file's position `p` still describes
   * the WAL and the journal: same generation, its commit frame still there with the same running
   * checksum, the journal's snapshot at its txid with its checksum. The head is then the commit that
   * many transactions after it (each commit frame became exactly one snapshot).
   */
  private resumePoint(
    p: WalPosition | undefined,
    h: WalHeader | undefined,
    commits: Map<number, [number, number]>,
  ): { frame: number; ck0: number; ck1: number } | undefined {
    const head = this.journal.position;
    if (!p || !h || head.txid === 0n || p.txid > head.txid) return undefined;
    if (this.restartedAfter(p, h)) return { frame: 0, ck0: h.ck0, ck1: h.ck1 };
    if (p.salt1 !== h.salt1 || p.salt2 !== h.salt2 || p.pageSize !== h.pageSize) return undefined;
    if (p.frame === 0 ? p.ck0 !== h.ck0 || p.ck1 !== h.ck1 : !sameCk(commits.get(p.frame), p))
      return undefined;
    if (this.journalChecksumAt(p.txid) !== p.checksum) return undefined;
    const need = Number(head.txid - p.txid);
    if (need === 0) return { frame: p.frame, ck0: p.ck0, ck1: p.ck1 };
    const later = [...commits.keys()].filter((f) => f > p.frame);
    const frame = later[need - 1];
    if (frame === undefined) return undefined;
    const [ck0, ck1] = commits.get(frame)!;
    return { frame, ck0, ck1 };
  }

  /**
   * True when the WAL restarted exactly once since the head's position `p` (salt-1 one more), from the
   * head: the database file is the head's state (checksum) and holds no frame of the new generation yet
   * (the wal-index's nBackfill is 0 before and after the check). What SQLite does when the application
   * writes after a clean stop of the sidecar (whose last swap checkpointed everything): its frames are
   * all still there, so the sidecar resumes at the new generation's first frame.
   */
  private restartedAfter(p: WalPosition, h: WalHeader): boolean {
    const head = this.journal.position;
    if (p.txid !== head.txid || p.checksum !== head.checksum || p.salt1 === 0) return false;
    if (h.salt1 !== (p.salt1 + 1) >>> 0 || h.pageSize !== this.headPageSize) return false;
    const backfilled = (): number | undefined =>
      walIndexEnd(this.shmFd!, h) === undefined ? undefined : this.backfilled();
    return backfilled() === 0 && this.fileIsHead() && backfilled() === 0;
  }

  /** The wal-index's nBackfill: the frames of the WAL's current generation already in the database file. */
  private backfilled(): number {
    const b = Buffer.alloc(4);
    fs.readSync(this.shmFd!, b, 0, 4, 96);
    return b.readUInt32LE(0);
  }

  /**
   * Under SQLite's write lock, with every committed transaction copied: checks that the database as
   * SQLite's readers see it (the file with the WAL's committed frames over it, read afresh) is the
   * journal's head (its checksum). If not — a defect, never expected — the difference is recorded as one
   * outside snapshot and said loudly, so the journal never ends short of or apart from the database.
   * Reads the whole database: done at start and at a clean stop only.
   */
  private checkHead(when: string): void {
    const head = this.journal.position;
    if (head.txid === 0n) return;
    const h = this.wal.header();
    const end = this.committedEnd(h);
    const { frames } = this.scanGeneration(h, end);
    const now = this.currentPages(h, end, frames);
    const page = this.page(now.pageSize, 2);
    let sum = 0n;
    for (let pgno = 1; pgno <= now.dbPages; pgno++) {
      now.readPage(pgno, page);
      sum ^= pageTerm(page, pgno);
    }
    if (sum === head.checksum && now.dbPages === this.headPages) return;
    this.recordDifference(
      `check ${when}: the journal's head (txid ${head.txid}) is not ${this.file} as it is (a defect of the sidecar: please report it with this line)`,
    );
  }

  /** The database checksum after `txid` in the journal (undefined when the journal does not hold it). */
  private journalChecksumAt(txid: bigint): bigint | undefined {
    const head = this.journal.position;
    if (txid === head.txid) return head.checksum;
    const reader = new JournalReader(fileSource(this.journal.handle));
    if (txid === reader.header.baseTxid) return reader.header.baseChecksum;
    for (const s of reader.snapshots()) if (s.txid === txid) return s.postChecksum;
    return undefined;
  }

  /** The committed end of the WAL now (0 without a WAL); throws when the wal-index does not describe it. */
  private committedEnd(h: WalHeader | undefined): number {
    if (!h) return 0;
    for (let tries = 0; tries < 100; tries++) {
      const end = walIndexEnd(this.shmFd!, h);
      if (end !== undefined) return end;
    }
    throw new Error(`cannot read the wal-index ${this.file}-shm: it does not describe ${this.wal.path}`);
  }

  /** The latest frame of each page up to `end`, and every commit frame with its running checksum. */
  private scanGeneration(
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

  /**
   * Under SQLite's write lock: appends the database as it is now (the file with the WAL's committed
   * frames over it) as one snapshot — the difference from the journal's head, flagged outside, or the
   * first snapshot of an empty journal — and moves the cursor to the WAL's end. `reason` (a re-bootstrap)
   * is told to the user. Used at startup and when the WAL changed in a way that may have lost frames.
   */
  private recordDifference(reason: string | undefined): SnapshotInfo | undefined {
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

  /** The database as SQLite's readers see it at frame `end`: the file with the WAL's frames over it. */
  private currentPages(h: WalHeader | undefined, end: number, frames = this.frames): Pages {
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

  /**
   * Runs `fn` (a capture) taking the old content of pages from the WAL's frames written since now, else
   * from the journal's head state rather than the database file: for when the file may already hold
   * frames past the cursor (a checkpoint copied them while the sidecar was stopped or its reader was off
   * the WAL).
   */
  private fromHead<T>(fn: () => T): T {
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
  private capture(): number {
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

  /** True when the database file's pages are the journal's head (its checksum). */
  private fileIsHead(): boolean {
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

  /** Runs `fn` holding SQLite's write lock (taken here unless a swap or startup holds it already). */
  private underWriteLock<T>(fn: () => T): T {
    const writer = this.writer!;
    if (writer.inTransaction) return fn();
    writer.pragma('busy_timeout = 10000');
    try {
      writer.exec('BEGIN IMMEDIATE');
    } finally {
      writer.pragma('busy_timeout = 0');
    }
    try {
      const r = fn();
      this.swapInside();
      return r;
    } finally {
      writer.exec('COMMIT');
    }
  }

  private page(size: number, slot: number): Uint8Array {
    const key = size * 4 + slot;
    let b = this.pageBuf.get(key);
    if (!b) {
      b = new Uint8Array(size);
      this.pageBuf.set(key, b);
    }
    return b;
  }

  private readFilePage(pgno: number, out: Uint8Array): void {
    readFileAt(this.dbFd!, out, (pgno - 1) * out.length);
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
    const packer = new BodyCompressor(appender.sink, tryCompress ? undefined : 0);
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
          flags: (full ? FLAG_FULL_IMAGE : 0) | (compressed ? FLAG_COMPRESSED : 0),
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

  /**
   * The swap, with the write lock held: copy everything, move the reader's read transaction to the end
   * (checkpointing in between), so SQLite may copy those frames into the file and later restart the WAL.
   */
  private swapInside(): void {
    const reader = this.reader!;
    this.capture();
    if (reader.inTransaction) reader.exec('COMMIT');
    reader.pragma('wal_checkpoint(PASSIVE)');
    reader.exec('BEGIN');
    reader.prepare('SELECT count(*) FROM sqlite_schema').get();
    this.swapFrame = this.cursor.frame;
    this.swapAt = Date.now();
    this.yielded = false;
  }

  /**
   * The process (pid) holding both SQLite's write lock and its checkpoint lock on the database: an
   * application's FULL, RESTART or TRUNCATE checkpoint, waiting for readers (the sidecar's) to finish.
   */
  private blockingCheckpointer(): number | undefined {
    const w = findConflictingLock(this.shmFd!, 'write', SHM_LOCKS + WAL_WRITE_LOCK, 1);
    if (!w || w.pid === process.pid || w.pid <= 0) return undefined;
    const c = findConflictingLock(this.shmFd!, 'write', SHM_LOCKS + WAL_CKPT_LOCK, 1);
    return c && c.pid === w.pid ? w.pid : undefined;
  }

  /**
   * Lets an application's blocking checkpoint (process `pid`) finish instead of waiting its whole busy
   * timeout for the sidecar's read transaction: with every committed frame copied, the reader ends its
   * transaction; if the checkpointer still holds the write lock then (so no frame can follow the ones
   * copied until its restart), the reader waits until every frame is in the database file and begins
   * again on the file alone, which lets the checkpointer restart or truncate the WAL. A restart seen
   * afterwards is checked (the database file must be the journal's head, see unsafeChange).
   */
  private async yieldTo(pid: number): Promise<void> {
    const reader = this.reader!;
    const h = this.wal.header();
    if (!h || !this.cursor.header || !sameGeneration(h, this.cursor.header)) return;
    if (walIndexEnd(this.shmFd!, h) !== this.cursor.frame) return;
    this.yielding = true;
    reader.exec('COMMIT');
    this.yielded = true;
    try {
      const h2 = this.wal.header();
      const still =
        this.blockingCheckpointer() === pid &&
        h2 !== undefined &&
        sameGeneration(h, h2) &&
        walIndexEnd(this.shmFd!, h) === this.cursor.frame;
      if (!still) return;
      this.swapFrame = this.cursor.frame;
      const until = Date.now() + 2000;
      while (Date.now() < until && !this.stopped) {
        await new Promise((r) => setTimeout(r, 1));
        if (this.blockingCheckpointer() !== pid) break;
        const b = new Uint8Array(100);
        fs.readSync(this.shmFd!, b, 0, 100, 0);
        const v = new DataView(b.buffer);
        if (v.getUint32(96, true) >= v.getUint32(16, true)) break;
      }
    } finally {
      if (!this.stopped) {
        reader.exec('BEGIN');
        reader.prepare('SELECT count(*) FROM sqlite_schema').get();
        this.noteFileAhead(h);
      }
      this.yielding = false;
    }
  }

  /**
   * After the reader was off the WAL (generation `h`): when a checkpoint copied frames past the cursor
   * into the database file meanwhile (the application committed and checkpointed in that window), the
   * file is no longer the old content of the pages those frames wrote. Until the cursor passes the
   * reader's new read mark (at most the WAL's committed end now; nothing past it can be copied while the
   * reader holds it), captures take old content from the journal's head state instead (fromHead).
   */
  private noteFileAhead(h: WalHeader): void {
    const now = this.wal.header();
    if (!now || !sameGeneration(now, h)) return; // a restart: unsafeChange decides
    if (this.backfilled() <= this.cursor.frame) return;
    this.fileAheadUntil = Math.max(this.fileAheadUntil, this.committedEnd(now));
  }

  /**
   * Tries a swap (and with `check`, checkHead after it); false when an application holds the write lock
   * (try again later).
   */
  private trySwap(opts: { check?: string } = {}): boolean {
    const writer = this.writer!;
    try {
      writer.exec('BEGIN IMMEDIATE');
    } catch (e) {
      if ((e as { code?: string }).code?.startsWith('SQLITE_BUSY')) return false;
      throw e;
    }
    try {
      this.swapInside();
      if (opts.check) this.checkHead(opts.check);
    } finally {
      writer.exec('COMMIT');
    }
    return true;
  }

  /** One look at the WAL (from events and the poll). */
  tick(): void {
    if (this.stopped || this.yielding) return;
    try {
      this.lastFound = this.capture();
      const copied = this.cursor.frame - this.swapFrame;
      const due =
        copied >= (this.options.checkpointFrames ?? 1000) ||
        (copied > 0 && Date.now() - this.swapAt >= (this.options.checkpointMs ?? 1000));
      if (due && this.trySwap()) return;
      const pid = this.blockingCheckpointer();
      if (pid !== undefined) {
        this.yieldTo(pid).catch((e) => this.fail(e as Error));
      }
    } catch (e) {
      this.fail(e as Error);
    }
  }

  private fail(e: Error): void {
    if (this.stopped) return;
    this.failed = e;
    this.stop();
    this.release();
    this.emitter.emit('error', e);
  }

  watch(): void {
    // While transactions keep coming (the last look found some), wait a little before looking again, so
    // that more of them share one fsync: fewer flushes competing with the application's own.
    const onChange = (): void => {
      this.soon ??= setTimeout(
        () => {
          this.soon = undefined;
          this.tick();
        },
        this.lastFound > 0 ? (this.options.coalesceMs ?? 2) : 0,
      );
    };
    try {
      // The directory: the WAL may be created, truncated or deleted.
      this.watcher = fs.watch(path.dirname(this.file), (_e, name) => {
        if (name === path.basename(this.wal.path)) onChange();
      });
    } catch {
      this.watcher = undefined;
    }
    this.timer = setInterval(() => this.tick(), this.options.pollMs ?? 50);
  }

  private stop(): void {
    this.stopped = true;
    this.watcher?.close();
    clearInterval(this.timer);
    clearTimeout(this.soon);
  }

  /** Closes what is open (no more capture). */
  release(): void {
    try {
      if (this.reader?.inTransaction) this.reader.exec('COMMIT');
    } catch {
      // closing anyway
    }
    try {
      if (this.writer?.inTransaction) this.writer.exec('ROLLBACK');
    } catch {
      // closing anyway
    }
    this.reader?.close();
    this.writer?.close();
    this.reader = this.writer = undefined;
    this.wal.close();
    // Only now that no connection holds a lock (see dbFd).
    if (this.dbFd !== undefined) fs.closeSync(this.dbFd);
    if (this.shmFd !== undefined) fs.closeSync(this.shmFd);
    this.dbFd = this.shmFd = undefined;
    this.state?.close();
    this.state = undefined;
    try {
      this.journal?.close();
    } catch {
      // the next start cuts what is left
    }
    this.lock?.release();
    this.lock = undefined;
  }

  pendingFrames(): number {
    if (this.stopped || this.shmFd === undefined) return 0;
    const h = this.cursor.header ?? this.wal.header();
    const end = h ? walIndexEnd(this.shmFd, h) : undefined;
    return end === undefined ? 0 : Math.max(0, end - this.cursor.frame);
  }

  async catchUp(opts: { check?: string } = {}): Promise<void> {
    if (this.failed) throw this.failed;
    if (this.stopped) throw new Error('the sidecar is closed');
    while (this.yielding) await new Promise((r) => setTimeout(r, 1));
    for (let tries = 0; !this.trySwap(opts); tries++) {
      if (tries > 2000) throw new Error(`${this.file}: the application held the write lock for 10 s`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  api(): Replicator {
    return {
      dbPath: this.file,
      journalPath: this.paths.journal,
      position: () => this.journal.position,
      pendingFrames: () => this.pendingFrames(),
      sync: this.pusher,
      on: (event, fn) => this.emitter.on(event, fn),
      catchUp: () => this.catchUp(),
      close: async () => {
        if (this.stopped) {
          await this.pusher?.close();
          return;
        }
        try {
          await this.catchUp({ check: 'at stop' });
        } catch {
          // what is committed and not copied is copied at the next start
        }
        this.stop();
        this.release();
        // A graceful stop: give the hub a few seconds to take what was captured.
        await this.pusher?.flush(5_000).catch(() => undefined);
        await this.pusher?.close();
      },
    };
  }
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

function sameCk(ck: [number, number] | undefined, p: WalPosition): boolean {
  return ck !== undefined && ck[0] === p.ck0 && ck[1] === p.ck1;
}

function range(from: number, to: number): number[] {
  const out: number[] = [];
  for (let i = from; i <= to; i++) out.push(i);
  return out;
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
