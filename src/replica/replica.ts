/**
 * A replica's files and their crash safety: the database, a journal beside it that copies the hub's
 * history (same place and format as a writer's), the writer lock (one writer or replica per file), and
 * the inflight marker that says which snapshot was being applied. Runtime-neutral.
 *
 * Per snapshot, or per batch of snapshots waiting together: set the marker (with what the post step must
 * make true, and for a batch its first txid and where it starts in the journal; fsync), append to the
 * journal (one fsync), apply in one SQLite transaction, run the post step, clear the marker. At open, a
 * set marker is resolved by checksums: the database is at the (last) snapshot (finish the post step),
 * before the first (redo them), or neither (rebuild it from the journal).
 *
 * A reset (a full image starting a history) keeps the old journal until the image has been checked and
 * applied: the new journal is made beside it (`journal.reset`), the marker names the reset and where the
 * old history is kept, the image is applied in one SQLite transaction, and only then is the old journal
 * moved aside and the new one renamed in (see `reset` and `resolveReset`).
 */

import type { Database } from '../engine/database.js';
import { loadSqlite, type Sqlite3 } from '../engine/sqlite.js';
import { type FileHandle, type Runtime, readAt, writeFileAtomic } from '../files/file-system.js';
import {
  encodeFileHeader,
  type FileHeader,
  FLAG_FULL_IMAGE,
  FORMAT_VERSION,
  hex64,
  JournalReader,
  loadHash,
  type Position,
  type SnapshotHeader,
  type SnapshotInfo,
  sameBytes,
} from '../format/index.js';
import { fileSource } from '../journal/file-source.js';
import { JournalWriter } from '../journal/journal-writer.js';
import { journalPaths, missingDirectory } from '../journal/paths.js';
import type { EncodedSnapshot } from '../protocol/index.js';
import { replay } from '../restore/replay.js';
import { installMyceliteVfs, MYCELITE_VFS } from '../vfs/vfs.js';
import {
  ApplyBusyError,
  ChecksumMismatchError,
  checkImage,
  ImageMismatchError,
  type PostStep,
  ReplicaFile,
  unpack,
} from './apply.js';
import { copyFile, historyOf, keptSuffix, newImage, positionOf, REPLICA_TAG, resetPath } from './kept.js';
import { encodeMarker, type Marker, readMarker } from './marker.js';
import { openJournal } from './open-journal.js';

/**
 * What a reset did: the history the replica had (undefined for a new replica) and the one it has now,
 * whether that is another history (another journal id, adopted only when the user asked for it), and
 * where the old one is kept: its journal at `${keptAt}-mycelite/journal` and, after another history was
 * adopted, its database at `keptAt` (a whole replica: `mycelite log/restore/verify` read it).
 */
export interface ReplicaReset {
  from: Position | undefined;
  to: Position;
  otherHistory: boolean;
  keptAt: string | undefined;
}
/** How long an apply keeps retrying while readers hold the database (ms). */
const BUSY_RETRY_MS = 60_000;

/** A replica cannot be opened (another process has it, it is not a replica, ...). */
export class ReplicaOpenError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ReplicaOpenError';
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The files of one replica, opened for applying snapshots. */
export class ReplicaStore {
  private journal: JournalWriter | undefined;
  private markerSet = false;
  private markerTxid = 0n;
  private markerFirst = 0n;
  private markerPre = 0n;
  private markerReset = false;
  private interrupted = false;
  /** A reset that recovery finished (it crashed or failed after its apply): reported once. */
  private finishedReset: ReplicaReset | undefined;
  /** Called after the database file was replaced by a rebuild (readers must reopen it). */
  onReplaced: (() => void) | undefined;
  /**
   * Called right after an apply changed the database file, before anything else runs: readers must drop
   * their page cache. SQLite keeps it while page 1's bytes 24–39 (change counter, page count, freelist)
   * are as it last read them, and an applied snapshot can leave them so: a history captured from an
   * application in WAL mode, where native SQLite does not move the change counter.
   */
  onApplied: (() => void) | undefined;

  private constructor(
    private readonly rt: Runtime,
    readonly dbPath: string,
    private file: ReplicaFile,
    private readonly sqlite3: Sqlite3,
    private readonly marker: FileHandle,
    private readonly release: () => void,
  ) {}

  /** Opens (creating if missing) the replica at `path` and recovers from a crash. */
  static async open(rt: Runtime, path: string): Promise<ReplicaStore> {
    const [sqlite3] = await Promise.all([loadSqlite(), loadHash()]);
    const { fs } = rt;
    const dbPath = rt.resolve(path);
    const p = journalPaths(dbPath);
    const missing = missingDirectory((f) => fs.exists(f), dbPath);
    if (missing) throw new ReplicaOpenError(`cannot open replica ${path}: ${missing}`);
    const hasJournal = fs.fileSize(p.journal) > 0;
    // A reset that did not finish may have moved the old journal aside before renaming the new one in.
    const resetting = fs.exists(p.replica) && fs.exists(resetPath(p.journal));
    if (!hasJournal && !resetting && fs.fileSize(dbPath) > 0) {
      throw new ReplicaOpenError(
        `${path} exists and is not a replica (it has no ${p.journal}): choose a new file for the replica, or move ${path} away`,
      );
    }
    if (hasJournal && !fs.exists(p.replica)) {
      throw new ReplicaOpenError(
        `${path} is a writer's database (its journal was written by open(), not copied from a hub): ` +
          'following a hub into it could throw its own snapshots away. Choose a new file for the replica',
      );
    }
    // A new database file or journal directory is durable only once its directory is fsynced (below).
    const creating = !fs.exists(dbPath) || !fs.exists(p.dir);
    fs.mkdir(p.dir);
    const lock = fs.tryLockExclusive?.(p.lock);
    if (fs.tryLockExclusive && !lock) {
      throw new ReplicaOpenError(
        `${path} is already open for writing or following (another connection or process holds ${p.lock}): close it first`,
      );
    }
    let marker: FileHandle | undefined;
    let file: ReplicaFile | undefined;
    let store: ReplicaStore | undefined;
    try {
      installMyceliteVfs(sqlite3, MYCELITE_VFS, { fs, tempPath: rt.tempPath });
      if (!fs.exists(dbPath)) fs.open(dbPath, { create: true }).close();
      if (creating) fs.syncDir(dbPath);
      if (!hasJournal && !resetting) writeFileAtomic(fs, p.replica, (f) => f.write(REPLICA_TAG, 0));
      file = new ReplicaFile(sqlite3, fs, dbPath, MYCELITE_VFS);
      marker = fs.open(p.inflight, { create: true });
      store = new ReplicaStore(rt, dbPath, file, sqlite3, marker, () => lock?.release());
      await store.recover();
      return store;
    } catch (e) {
      file?.close();
      store?.journal?.close();
      marker?.close();
      lock?.release();
      if (e instanceof ReplicaOpenError) throw e;
      throw new ReplicaOpenError(`open replica ${path}: ${(e as Error).message}`, { cause: e });
    }
  }

  /** The position of the database, or undefined for a new replica (it starts from a full image). */
  get position(): Position | undefined {
    const last = this.journal?.last;
    if (!last) return undefined;
    // While snapshots are being applied (or their apply failed), the database is still before them.
    // (A reset's marker names the new history, not the journal: recovery settles which one holds.)
    if (
      this.markerSet &&
      !this.markerReset &&
      this.markerFirst <= last.txid &&
      this.markerTxid >= last.txid
    ) {
      const checksum = this.markerFirst === last.txid ? last.preChecksum : this.markerPre;
      return this.markerFirst > 1n ? { txid: this.markerFirst - 1n, checksum } : undefined;
    }
    return this.journal!.position;
  }

  /** Pages of the database at the journal's last snapshot (0 for a new replica). */
  get dbPages(): number {
    return this.journal?.last?.dbPages ?? 0;
  }

  /** Makes a waiting apply give up (it is finished at the next open or `recover()`). */
  interrupt(): void {
    this.interrupted = true;
  }

  /** The id of the history this replica copies. */
  get journalId(): Uint8Array | undefined {
    return this.journal?.journalId;
  }

  get journalPath(): string {
    return journalPaths(this.dbPath).journal;
  }

  /** Appends a validated snapshot that continues the journal and applies it to the database. */
  append(bytes: Uint8Array, h: SnapshotHeader): Promise<SnapshotInfo> {
    return this.appendOne({ bytes, header: h });
  }

  private async appendOne(s: EncodedSnapshot): Promise<SnapshotInfo> {
    const { bytes, header: h } = s;
    const journal = this.journal;
    if (!journal) throw new Error('the replica has no history yet: it starts from a full image');
    const before = journal.position.checksum;
    const raw = unpack(s);
    const step = this.file.plan(raw.bytes, raw.header);
    // The marker goes first: while it is clear, the database holds everything the journal holds, so a
    // clean open needs no checksum of the whole file.
    this.setMarker(step);
    // If the append fails (its fsync, say), the marker stays: the snapshot may be in the journal file
    // all the same, and the next open must then check the database against it.
    const info = journal.appendEncoded(bytes, h, true);
    try {
      await this.applyAndFinish(() => this.file.apply(raw.bytes, raw.header, before), step);
    } catch (e) {
      if (e instanceof ChecksumMismatchError) {
        // Nothing was applied: the journal must not keep a snapshot the database did not take.
        journal.dropLast(info);
        this.clearMarker();
      }
      throw e;
    }
    this.clearMarker();
    return info;
  }

  /**
   * Appends consecutive validated snapshots that continue the journal and applies them to the database
   * in one SQLite transaction (one marker, one journal fsync, one commit for all). A full image, or a
   * single snapshot, goes through `append`. The caller bounds the batch (`BATCH_BYTES`).
   */
  async appendBatch(items: readonly EncodedSnapshot[]): Promise<SnapshotInfo[]> {
    if (items.length === 0) return [];
    if (items.length === 1 || items.some((s) => (s.header.flags & FLAG_FULL_IMAGE) !== 0)) {
      const out: SnapshotInfo[] = [];
      for (const s of items) out.push(await this.appendOne(s));
      return out;
    }
    const journal = this.journal;
    if (!journal) throw new Error('the replica has no history yet: it starts from a full image');
    const before = journal.position.checksum;
    const lastBefore = journal.last;
    const raw = items.map(unpack);
    const step = this.file.planBatch(raw);
    this.setMarker(step, { first: items[0]!.header.txid, offset: journal.end, pre: before });
    // The journal is fsynced once, after the last snapshot: a crash (even a power loss) in between
    // leaves at worst a damaged tail past the marker's offset, which the next open cuts (openJournal).
    const infos = items.map((s, i) => journal.appendEncoded(s.bytes, s.header, i === items.length - 1));
    try {
      await this.applyAndFinish(() => this.file.applyBatch(raw, before), step);
    } catch (e) {
      if (e instanceof ChecksumMismatchError) {
        journal.dropFrom(infos[0]!, lastBefore);
        this.clearMarker();
      }
      throw e;
    }
    this.clearMarker();
    return infos;
  }

  /**
   * Replaces the history with a new one starting at a full image (a new replica, or a reset), keeping
   * the old one until the new one is in place:
   *
   * 1. the image is checked against its own postChecksum before anything is written (a damaged or
   *    lying image changes nothing: ImageMismatchError);
   * 2. the new journal is written and fsynced beside the old one (`journal.reset`);
   * 3. the marker is set: a reset, its post step, and the name the old history will be kept under;
   * 4. for another history (another journal id), the database is copied there first;
   * 5. the image is applied in place, in one SQLite transaction (readers see the old data, then the new);
   * 6. the old journal is moved aside (`KEPT-mycelite/journal`), the new one renamed in, the post step
   *    run and the marker cleared.
   *
   * A crash or error before step 5 commits leaves the old history (recovery deletes the new journal);
   * after it, recovery finishes steps 6 (`resolveReset`). Whether another history may be adopted at all
   * is the caller's decision (the follower asks the user).
   */
  async reset(
    stream: FileHeader,
    bytes: Uint8Array,
    h: SnapshotHeader,
  ): Promise<{ snapshot: SnapshotInfo; reset: ReplicaReset }> {
    if ((h.flags & FLAG_FULL_IMAGE) === 0)
      throw new Error(`snapshot ${h.txid} starts a history but is not a full image`);
    checkImage(bytes, h);
    if (this.markerSet) await this.recover();
    const { fs } = this.rt;
    const tmp = resetPath(this.journalPath);
    // Written in place (not through a temp file of its own: a crash would leave one no recovery knows);
    // the marker below is what says it is whole.
    const header = encodeFileHeader({
      version: FORMAT_VERSION,
      journalId: stream.journalId,
      createdAt: Date.now(),
      baseTxid: stream.baseTxid,
      baseChecksum: stream.baseChecksum,
    });
    const out = fs.open(tmp, { create: true });
    try {
      out.truncate(0);
      out.write(header, 0);
    } finally {
      out.close();
    }
    const fresh = JournalWriter.open(fs, tmp);
    let snapshot: SnapshotInfo;
    try {
      snapshot = fresh.appendEncoded(bytes, h, true);
    } finally {
      fresh.close();
    }
    fs.syncDir(tmp);
    const old = this.journal?.last ? this.journal : undefined;
    const suffix = old ? keptSuffix(fs, this.dbPath, old.journalId, old.position.txid) : '';
    const kept = suffix ? this.dbPath + suffix : undefined;
    const step = this.file.plan(bytes, h);
    this.setMarker(step, undefined, suffix);
    try {
      if (kept && old && !sameBytes(old.journalId, stream.journalId)) copyFile(fs, this.dbPath, kept);
      await this.applyRetrying(() => this.file.apply(bytes, h, 0n));
    } catch (e) {
      if (!(e instanceof ChecksumMismatchError)) throw e; // the marker stays: recover() settles it
      this.undoReset(kept);
      await this.recover(); // a page size change before the mismatch is undone too
      throw new ImageMismatchError(`${e.message}: nothing was changed`, { cause: e });
    }
    const reset = this.swapIn(kept);
    await this.finishStep(step);
    this.clearMarker();
    return { snapshot, reset };
  }

  /** A reset that recovery finished since the last call (to report it), or undefined. */
  takeFinishedReset(): ReplicaReset | undefined {
    const r = this.finishedReset;
    this.finishedReset = undefined;
    return r;
  }

  /**
   * Settles a reset that did not finish (a crash, or an error after its marker was set): when the
   * database holds the new journal's image (its checksum says so), or the old journal was already moved
   * aside, the swap is finished; otherwise the database is still the old one, and the new journal (and
   * a copy of the database made for it) is deleted.
   */
  private resolveReset(): void {
    const { fs } = this.rt;
    const tmp = resetPath(this.journalPath);
    if (!fs.exists(tmp)) return;
    const m = this.readMarker();
    const image = m?.kept !== undefined ? newImage(fs, tmp) : undefined;
    const kept = m?.kept ? this.dbPath + m.kept : undefined;
    if (m?.kept !== undefined && image && (!fs.exists(this.journalPath) || this.holds(image, m.counter))) {
      this.finishedReset = this.swapIn(kept);
      return;
    }
    this.undoReset(kept);
  }

  /** True when the database, with page 1's `counter` bytes, is at snapshot `s`. */
  private holds(s: SnapshotHeader, counter: Uint8Array): boolean {
    const shape = this.file.shape();
    if (shape.pageSize !== s.pageSize || this.rt.fs.fileSize(this.dbPath) < s.dbPages * s.pageSize)
      return false;
    return this.file.checksum({ pageSize: s.pageSize, pages: s.dbPages }, counter) === s.postChecksum;
  }

  /**
   * Forgets a reset whose image was not applied: the new journal, and a copy of the database made for
   * it, go. (Were the old journal already moved aside — only if the new journal became unreadable since
   * — it comes back, and recovery rebuilds the database from it.)
   */
  private undoReset(kept: string | undefined): void {
    const { fs } = this.rt;
    const k = kept ? journalPaths(kept) : undefined;
    if (k && fs.exists(k.journal) && !fs.exists(this.journalPath)) {
      fs.rename(k.journal, this.journalPath);
      fs.syncDir(this.journalPath);
    }
    if (kept && k && !fs.exists(k.journal)) {
      fs.delete(`${kept}.partial`);
      fs.delete(kept, { syncDir: true });
    }
    fs.delete(resetPath(this.journalPath), { syncDir: true });
    if (this.markerReset || this.readMarker()?.kept !== undefined) this.clearMarker();
  }

  /**
   * Moves the old journal aside to `kept` (a replica's directory: journal and replica tag) and renames
   * the new one in. A crash between the two renames leaves no journal: open() sees `journal.reset` and
   * recovery finishes here.
   */
  private swapIn(kept: string | undefined): ReplicaReset {
    const { fs } = this.rt;
    const p = journalPaths(this.dbPath);
    const tmp = resetPath(p.journal);
    const after = historyOf(fs, tmp)!;
    const before = fs.exists(p.journal)
      ? historyOf(fs, p.journal)
      : kept
        ? historyOf(fs, journalPaths(kept).journal)
        : undefined;
    this.journal?.close();
    this.journal = undefined;
    if (kept && fs.exists(p.journal)) {
      const k = journalPaths(kept);
      fs.mkdir(k.dir);
      if (!fs.exists(k.replica)) writeFileAtomic(fs, k.replica, (f) => f.write(REPLICA_TAG, 0));
      fs.rename(p.journal, k.journal);
      fs.syncDir(k.journal);
    }
    fs.rename(tmp, p.journal);
    fs.syncDir(p.journal);
    this.journal = JournalWriter.open(fs, p.journal);
    return {
      from: before?.last ? positionOf(before) : undefined,
      to: positionOf(after),
      otherHistory: before?.last !== undefined && !sameBytes(before.journalId, after.journalId),
      keptAt: before?.last ? kept : undefined,
    };
  }

  /**
   * Makes the database agree with the journal after a crash or a failed apply: let SQLite roll back a
   * hot journal, settle a reset that did not finish, then resolve the inflight marker or a size that
   * disagrees.
   */
  async recover(): Promise<void> {
    this.file.settle();
    this.resolveReset();
    const p = journalPaths(this.dbPath);
    if (!this.journal && this.rt.fs.fileSize(p.journal) > 0)
      this.journal = openJournal(this.rt.fs, p.journal, this.readMarker());
    const last = this.journal?.last;
    const m = this.readMarker();
    const shape = this.file.shape();
    if (!last) {
      // A history with no snapshot yet: only an empty database goes with it.
      if (shape.pages > 0 || this.rt.fs.fileSize(this.dbPath) > 0) this.rebuild();
      this.clearMarker();
      return;
    }
    const want = last.dbPages * last.pageSize;
    const size = this.rt.fs.fileSize(this.dbPath);
    const sameShape = size === want && shape.pageSize === last.pageSize;
    // The marker is set before a snapshot is appended and cleared once it is applied: no marker, and the
    // database has the last snapshot's shape, means it was applied (no need to checksum the whole file).
    if (!m && sameShape) return;
    if (m && m.first > last.txid) {
      // A crash before the snapshots were (wholly) in the journal: their apply never started. (After a
      // batch, openJournal may have cut damage past its start: the checksum makes sure it was that.)
      this.clearMarker();
      if (sameShape && (m.offset === undefined || this.file.checksum(shape) === last.postChecksum)) return;
    }
    // The marker must be the last snapshot's: a reset that crashed before its rename leaves a marker of
    // another history, maybe with the same txid, whose size must not be applied to this database.
    const ours = m && m.txid === last.txid && m.pageSize === last.pageSize && m.dbPages === last.dbPages;
    if (ours && shape.pageSize === last.pageSize && size >= want) {
      const target = { pageSize: last.pageSize, pages: last.dbPages };
      if (this.file.checksum(target, m.counter) === last.postChecksum) {
        await this.finishStep(m!);
        this.clearMarker();
        return;
      }
    }
    if (!m && size === want && this.file.checksum(shape) === last.postChecksum) return;
    // A batch whose snapshots (or some of them) reached the journal: the database before its first one
    // takes them again, together.
    if (m && m.first < last.txid && m.txid >= last.txid && shape.pages > 0) {
      let batch: EncodedSnapshot[] | undefined;
      try {
        batch = this.readJournalFrom(m.first)?.map(unpack);
      } catch {
        // a body that does not inflate: rebuild below
      }
      if (batch && this.file.checksum(shape) === batch[0]!.header.preChecksum) {
        const step = this.file.planBatch(batch);
        const pre = batch[0]!.header.preChecksum;
        this.setMarker(step, { first: m.first, offset: (batch[0]!.header as SnapshotInfo).offset, pre });
        try {
          await this.applyAndFinish(() => this.file.applyBatch(batch, pre), step);
          this.clearMarker();
          return;
        } catch (e) {
          if (e instanceof ApplyBusyError) throw e;
          // fall through: rebuild
        }
      }
    }
    const full = (last.flags & FLAG_FULL_IMAGE) !== 0;
    if (full || (shape.pages > 0 && this.file.checksum(shape) === last.preChecksum)) {
      // Before the last snapshot (or any state, for a full image): apply it again.
      const bytes = readAt(this.journal!.handle, last.offset, last.length);
      const step = this.file.plan(bytes, last);
      this.setMarker(step);
      try {
        await this.applyAndFinish(() => this.file.apply(bytes, last, last.preChecksum), step);
        this.clearMarker();
        return;
      } catch (e) {
        if (e instanceof ApplyBusyError) throw e;
        // fall through: rebuild
      }
    }
    this.rebuild();
    this.clearMarker();
  }

  /** The journal's snapshots from `txid` on, none a full image (else undefined), read into memory. */
  private readJournalFrom(txid: bigint): EncodedSnapshot[] | undefined {
    const handle = this.journal!.handle;
    const out: EncodedSnapshot[] = [];
    for (const s of new JournalReader(fileSource(handle)).snapshots()) {
      if (s.txid < txid) continue;
      if ((s.flags & FLAG_FULL_IMAGE) !== 0) return undefined;
      out.push({ bytes: readAt(handle, s.offset, s.length), header: s });
    }
    return out.length > 0 && out[0]!.header.txid === txid ? out : undefined;
  }

  /** Replays the journal into a new file that replaces the database (the last resort). */
  private rebuild(): void {
    const { fs } = this.rt;
    this.file.close();
    try {
      const journal = this.journal;
      if (journal?.last) writeFileAtomic(fs, this.dbPath, (out) => replay(fileSource(journal.handle), out));
      else writeFileAtomic(fs, this.dbPath, () => {});
    } finally {
      this.file = new ReplicaFile(this.sqlite3, fs, this.dbPath, MYCELITE_VFS);
    }
    this.onReplaced?.();
  }

  private async applyAndFinish(apply: () => void, step: PostStep): Promise<void> {
    await this.applyRetrying(apply);
    await this.finishStep(step);
  }

  /** Runs `apply`, again while readers keep the database busy (up to BUSY_RETRY_MS). */
  private async applyRetrying(apply: () => void): Promise<void> {
    const until = Date.now() + BUSY_RETRY_MS;
    for (;;) {
      try {
        apply();
        this.onApplied?.();
        return;
      } catch (e) {
        if (!(e instanceof ApplyBusyError) || Date.now() > until || this.interrupted) throw e;
        await sleep(20);
      }
    }
  }

  private async finishStep(step: PostStep): Promise<void> {
    const until = Date.now() + BUSY_RETRY_MS;
    while (!this.file.finish(step)) {
      if (Date.now() > until || this.interrupted) {
        throw new ApplyBusyError(
          `snapshot ${step.txid}: readers kept the replica locked for ${BUSY_RETRY_MS} ms`,
        );
      }
      await sleep(20);
    }
  }

  /** Checks the whole database against the journal's position (for tests and `verify`). */
  checkDatabase(): { ok: boolean; checksum: string; expected: string } {
    const pos = this.journal?.position ?? { txid: 0n, checksum: 0n };
    const sum = this.file.checksum();
    return { ok: sum === pos.checksum, checksum: hex64(sum), expected: hex64(pos.checksum) };
  }

  /** True while an apply did not finish (a failed apply): call `recover()` before going on. */
  get dirty(): boolean {
    return this.markerSet;
  }

  /**
   * Sets the marker for the apply of `step`'s snapshot, or of the batch from `batch.first` to it, or,
   * with `kept` (the suffix of the database's path its old history goes to, '' for none), of a reset.
   */
  private setMarker(
    step: PostStep,
    batch?: { first: bigint; offset: number; pre: bigint },
    kept?: string,
  ): void {
    const b = encodeMarker(step, batch, kept);
    this.markerSet = true;
    this.markerReset = kept !== undefined;
    this.markerTxid = step.txid;
    this.markerFirst = batch?.first ?? step.txid;
    this.markerPre = batch?.pre ?? 0n;
    this.marker.write(b, 0);
    this.marker.sync();
  }

  private clearMarker(): void {
    this.marker.write(new Uint8Array([0]), 0);
    this.markerSet = false;
    this.markerReset = false;
  }

  private readMarker(): Marker | undefined {
    return readMarker(this.marker);
  }

  close(): void {
    this.file.close();
    this.journal?.close();
    this.marker.close();
    this.release();
  }
}

/**
 * Drops the page cache of `reader`, a connection reading a replica (between its transactions: an apply
 * waits for readers), so that it reads what the last apply wrote (ReplicaStore.onApplied).
 */
export function dropPageCache(reader: Database): void {
  reader.exec('PRAGMA shrink_memory');
}
