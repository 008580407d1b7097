/**
 * One device of a shared database (docs/ARCHITECTURE.md, "Shared databases"): local commits go on as
 * with any writer, and each becomes a pending record with its logical change; taking the hub's history
 * in happens here, synchronously, between the application's transactions:
 *
 * - **catch up** (nothing pending): the hub's snapshots are appended to the journal as they are and
 *   written to the file;
 * - **rebase** (changes pending, the hub moved on): the file is put at the hub's new head (one local
 *   snapshot does it, so a crash redoes it), every pending change is applied again on top, each in its own
 *   transaction and with the conflict rules, and the journal's tail after the base is rewritten to the
 *   hub's snapshots followed by the re-applied ones, renumbered to follow the hub's head.
 *
 * The application never sees the state in between: all of it runs in one synchronous call, between its
 * transactions. The file is written under SQLite's EXCLUSIVE lock (other processes' readers see each
 * step whole; during a rebase one of them may see the hub's state before the pending changes are back
 * on it). SQLite's page cache and schema are dropped after each raw write. The network side is
 * src/shared/device-sync.ts. Runtime-neutral.
 */

import { type Capture, LockBusyError } from '../capture/capture.js';
import { filePages } from '../capture/outside.js';
import type { Database } from '../engine/database.js';
import { type FileSystem, readAt } from '../files/file-system.js';
import { ShadowFile } from '../files/shadow-file.js';
import {
  type ByteSource,
  concatBytes,
  encodeFileHeader,
  FORMAT_VERSION,
  JournalReader,
  memorySource,
  type Position,
  type SnapshotHeader,
  type SnapshotInfo,
  samePosition,
  walkPatches,
} from '../format/index.js';
import { openHistory } from '../history/source.js';
import { fileSource } from '../journal/file-source.js';
import type { JournalWriter } from '../journal/journal-writer.js';
import { PageFile } from '../journal/page-file.js';
import type { JournalPaths } from '../journal/paths.js';
import { redo } from '../restore/replay.js';
import { historyPages } from '../timetravel/history-pages.js';
import type { LocalChange, PendingQueue, PendingRecord } from './pending.js';
import { clearRejections, keepRejections, keptRejections, type Rejection } from './rejections.js';
import { renumber, writeIntent, writeReapplyPin } from './suffix.js';

/** A snapshot received from the hub: its bytes as stored and its header. */
export interface IncomingSnapshot {
  bytes: Uint8Array;
  header: SnapshotHeader;
}

/** Records each local transaction's logical change (src/shared/changes.ts). */
export interface ChangeSource {
  take(): LocalChange;
  discard(): void;
  pause(): void;
  resume(): void;
  readonly empty: boolean;
  close(): void;
}

/** Re-applies a local change with the conflict rules (src/shared/apply.ts). */
export type ApplyChange<C, O> = (
  db: Database,
  change: LocalChange,
  handler?: (c: C) => O | undefined,
) => {
  applied: boolean;
  conflicts: { conflict: C; choice: O }[];
  rejected?: string;
};

/** What happened to pending changes in a rebase. */
export interface RebaseReport<C = unknown, O = unknown> {
  /** Hub snapshots taken in. */
  incoming: number;
  /** Pending changes applied again (possibly with conflicts). */
  applied: number;
  /** Conflicts met, per pending change (its sequence number). */
  conflicts: { seq: bigint; conflict: C; choice: O }[];
  /** Pending changes rejected as a whole, with why. */
  rejected: { seq: bigint; reason: string }[];
}

/** The paths of a device's files. */
export type DevicePaths = JournalPaths;

export interface DeviceParts<C, O> {
  fs: FileSystem;
  paths: DevicePaths;
  dbPath: string;
  db: Database;
  capture: Capture;
  journal: JournalWriter;
  queue: PendingQueue;
  changes: ChangeSource;
  apply: ApplyChange<C, O>;
  /** The application's conflict handler (undefined: the default rules). */
  handler?: (c: C) => O | undefined;
}

/** The database is in a transaction (or rebasing): try again between transactions. */
export class DeviceBusyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DeviceBusyError';
  }
}

export class Device<C = unknown, O = unknown> {
  /** Local snapshots committed since the last pending record. */
  private unrecorded: SnapshotInfo[] = [];
  /** While taking the hub's snapshots in: commits are not the application's. */
  private taking = false;
  private taken: SnapshotInfo[] = [];
  /** Called after a local change was recorded (the sync side wakes up). */
  onRecorded: (() => void) | undefined;
  private broken: Error | undefined;

  constructor(private readonly p: DeviceParts<C, O>) {}

  get queue(): PendingQueue {
    return this.p.queue;
  }

  /** A snapshot was committed (the capture's onSnapshot). */
  noteSnapshot(s: SnapshotInfo): void {
    if (this.taking) this.taken.push(s);
    else this.unrecorded.push(s);
  }

  /**
   * After each statement (the engine's hook): once a transaction has committed and none is open, its
   * logical change becomes a pending record, fsynced before the statement returns to the application.
   */
  afterStatement(): void {
    // Statements of our own (the recorder reading the schema) come back here: let them through.
    if (this.taking || this.recording || this.p.db.inTransaction) return;
    this.recording = true;
    try {
      this.record();
    } finally {
      this.recording = false;
    }
  }

  private recording = false;

  private record(): void {
    if (this.unrecorded.length === 0) {
      if (!this.p.changes.empty) this.p.changes.discard(); // rolled back
      return;
    }
    if (this.broken) throw this.broken;
    const first = this.unrecorded[0]!;
    const last = this.unrecorded[this.unrecorded.length - 1]!;
    this.unrecorded = [];
    try {
      this.p.queue.append({
        firstTxid: first.txid,
        lastTxid: last.txid,
        postChecksum: last.postChecksum,
        change: this.p.changes.take(),
      });
    } catch (e) {
      // The commit is in the journal but its change is not recorded: it would never sync. The next open
      // takes it back out (recovery pairs snapshots with records); until then nothing more is written.
      this.broken = new Error(
        `recording the change of snapshot ${last.txid} failed (${(e as Error).message}): close the database and open it again`,
        { cause: e },
      );
      throw this.broken;
    }
    this.onRecorded?.();
  }

  /** suffix() read from `known`, a snapshot it found earlier; undefined when it is not there any more. */
  private suffixFrom(
    src: ByteSource,
    known: Position & { offset: number },
    base: Position,
  ): { start: number; snapshots: SnapshotInfo[] } | undefined {
    const reader = new JournalReader(src, { from: known.offset });
    let start = -1;
    const after: SnapshotInfo[] = [];
    let first = true;
    for (const s of reader.snapshots()) {
      if (first) {
        first = false;
        if (s.offset !== known.offset || s.txid !== known.txid || s.postChecksum !== known.checksum) {
          return undefined;
        }
      }
      if (start >= 0) after.push(s);
      else if (s.txid === base.txid) {
        if (s.postChecksum !== base.checksum) return undefined;
        start = s.offset + s.length;
        this.baseAt = { ...base, offset: s.offset };
      }
    }
    return start < 0 ? undefined : { start, snapshots: after };
  }

  /** Where the base's snapshot starts in the journal, when found (a cache for suffix()). */
  private baseAt: (Position & { offset: number }) | undefined;

  /** Byte offset where the journal's snapshots after the base start, and those snapshots. */
  suffix(): { start: number; snapshots: SnapshotInfo[] } {
    const base = this.p.queue.base;
    const f = this.p.journal.handle;
    const src = fileSource(f);
    const end = this.p.journal.end;
    const bounded = { size: () => Math.min(end, src.size()), read: src.read };
    // From where the base's snapshot was last found (the base only moves forward, to a later snapshot
    // of the same journal): what precedes it is the hub's history, not read again. A journal rewritten
    // since no longer has that snapshot there: then the whole journal is read.
    const known = this.baseAt;
    if (known && known.txid <= base.txid) {
      const found = this.suffixFrom(bounded, known, base);
      if (found) return found;
    }
    const reader = new JournalReader(bounded);
    let start = -1;
    if (reader.header.baseTxid === base.txid && reader.header.baseChecksum === base.checksum)
      start = reader.end;
    const after: SnapshotInfo[] = [];
    for (const s of reader.snapshots()) {
      if (start >= 0) after.push(s);
      else if (s.txid === base.txid) {
        if (s.postChecksum !== base.checksum) break;
        start = s.offset + s.length;
        this.baseAt = { ...base, offset: s.offset };
      }
    }
    if (start < 0) {
      throw new Error(
        `the journal does not hold the device's base (txid ${base.txid}): its device state does not belong to it`,
      );
    }
    return { start, snapshots: after };
  }

  /**
   * Takes the hub's snapshots after the base in: appended as they are when nothing is pending, else a
   * rebase. `other` is set when they are another history (a device that never synced, or a hub that
   * started over): the first one is then a full image and the whole journal is replaced.
   */
  takeIn(incoming: IncomingSnapshot[], other?: { journalId: Uint8Array }): RebaseReport<C, O> {
    const { db } = this.p;
    if (db.inTransaction) throw new DeviceBusyError('a transaction is open');
    this.afterStatement();
    const report: RebaseReport<C, O> = { incoming: incoming.length, applied: 0, conflicts: [], rejected: [] };
    const { capture } = this.p;
    this.taking = true;
    try {
      let { snapshots } = this.suffix();
      if (!other) {
        // The hub's first snapshots after the base may be this device's own, stored by a push whose
        // answer was lost: they are no longer pending, and must not be applied a second time.
        const mine = this.ownPushed(incoming, snapshots);
        if (mine > 0) {
          incoming = incoming.slice(mine);
          ({ snapshots } = this.suffix());
        }
        if (incoming.length === 0) return report;
      }
      if (snapshots.length === 0 && !other) {
        capture.exclusively(() => this.append(incoming));
        db.resetCache();
        const last = incoming[incoming.length - 1]!.header;
        this.p.queue.rewrite({ txid: last.txid, checksum: last.postChecksum }, []);
        return report;
      }
      capture.exclusively(() => this.resetTo(incoming, snapshots, other !== undefined));
      db.resetCache();
      try {
        this.reapply(report);
        // The rewrite drops the rejected changes: their reports are kept until delivered.
        keepRejections(this.p.fs, this.p.paths.rejected, report.rejected);
        this.rewriteTail(incoming, other);
      } finally {
        if (this.pinned) {
          try {
            this.unpin();
          } catch {
            // The pin stays: the file is behind its journal, the next open undoes the re-apply.
          }
        }
      }
      return report;
    } catch (e) {
      if (e instanceof LockBusyError) throw new DeviceBusyError(e.message);
      throw e;
    } finally {
      this.taking = false;
      this.taken = [];
    }
  }

  /**
   * How many of `incoming` (the hub's snapshots after the base) are the device's own local snapshots
   * `local`, whole pending records of them; those records are then marked pushed (the base moves past
   * them).
   */
  private ownPushed(incoming: IncomingSnapshot[], local: SnapshotInfo[]): number {
    let n = 0;
    let whole = 0;
    const ends = new Set(this.p.queue.records.map((r) => r.lastTxid));
    while (n < incoming.length && n < local.length) {
      const h = incoming[n]!.header;
      if (h.txid !== local[n]!.txid || h.postChecksum !== local[n]!.postChecksum) break;
      n++;
      if (ends.has(h.txid)) whole = n;
    }
    if (whole > 0) {
      const last = local[whole - 1]!;
      this.pushed({ txid: last.txid, checksum: last.postChecksum });
    }
    return whole;
  }

  /**
   * The rejections to report: those kept by rebases (and not reported yet, e.g. after a crash) whose
   * change is no longer pending; one whose change is still pending was kept by a rebase that a crash or
   * an error undid (the change is judged again). {@link rejectionsReported} forgets them all.
   */
  rejections(): Rejection[] {
    const pending = new Set(this.p.queue.records.map((r) => r.seq));
    return keptRejections(this.p.fs, this.p.paths.rejected, pending);
  }

  /** The kept rejections were reported: forget them. */
  rejectionsReported(): void {
    clearRejections(this.p.fs, this.p.paths.rejected);
  }

  /** The last local txid. */
  get localTxid(): bigint {
    return this.p.journal.position.txid;
  }

  /** The journal id of the local history. */
  get journalId(): Uint8Array {
    return this.p.journal.journalId;
  }

  /**
   * Where the hub's `head` stands for this device: 'in' when it is the base or one of the local snapshots
   * after it (pushed earlier), 'ahead' when the hub has snapshots after the base the device lacks,
   * 'unknown' when the hub is behind the base or elsewhere (its copy was replaced).
   */
  localPoint(head: Position): 'in' | 'ahead' | 'unknown' {
    const base = this.p.queue.base;
    if (head.txid === base.txid) return head.checksum === base.checksum ? 'in' : 'unknown';
    if (head.txid < base.txid) return 'unknown';
    const mine = this.suffix().snapshots.find((s) => s.txid === head.txid);
    return mine && mine.postChecksum === head.checksum ? 'in' : 'ahead';
  }

  /**
   * The next push: the local snapshots after `from` (the base, a local snapshot, or undefined for the
   * whole journal when the hub has no such database yet), at most `max` bytes but at least one; undefined
   * when there is nothing after it.
   */
  pushBatch(
    from: Position | undefined,
    max: number,
    upTo?: bigint,
  ): { bytes: Uint8Array; base: Position; last: Position } | undefined {
    const { journal } = this.p;
    let after: SnapshotInfo[];
    let base: Position;
    if (from === undefined) {
      const src = fileSource(journal.handle);
      const end = journal.end;
      const reader = new JournalReader({ size: () => Math.min(end, src.size()), read: src.read });
      base = { txid: reader.header.baseTxid, checksum: reader.header.baseChecksum };
      after = [...reader.snapshots()];
    } else {
      const { snapshots } = this.suffix();
      const at = this.p.queue.base;
      const isBase = samePosition(from, at);
      // A point is a txid and its checksum: another device's snapshot may have the txid of one of ours.
      const i = isBase
        ? 0
        : snapshots.findIndex((s) => s.txid === from.txid && s.postChecksum === from.checksum) + 1;
      if (i === 0 && !isBase) {
        throw new Error(`txid ${from.txid} is not a point of the local history after the base`);
      }
      after = snapshots.slice(i);
      base = from;
    }
    if (upTo !== undefined) after = after.filter((s) => s.txid <= upTo);
    if (after.length === 0) return undefined;
    const first = after[0]!;
    let n = 1;
    while (n < after.length && after[n]!.offset + after[n]!.length - first.offset <= max) n++;
    const last = after[n - 1]!;
    return {
      bytes: readAt(journal.handle, first.offset, last.offset + last.length - first.offset),
      base,
      last: { txid: last.txid, checksum: last.postChecksum },
    };
  }

  /**
   * True when this device can join another history: everything its database holds came from changes it
   * recorded (its base is the empty database), so they can all be applied on top of the hub's.
   */
  canAdopt(): boolean {
    return this.p.queue.base.checksum === 0n;
  }

  /** The hub holds the local snapshots up to `head` (a point after the base): they are no longer pending. */
  pushed(head: Position): void {
    const q = this.p.queue;
    if (samePosition(head, q.base)) return;
    if (this.localPoint(head) !== 'in') {
      // A base the journal does not hold would make the device state unusable: refuse it here.
      throw new Error(`txid ${head.txid} is not a point of the local history after the base`);
    }
    q.rewrite(
      head,
      q.records.filter((r) => r.lastTxid > head.txid),
    );
  }

  /** Appends the hub's snapshots to the journal as they are, then writes them to the file. */
  private append(incoming: IncomingSnapshot[]): void {
    const { journal, capture, fs, paths } = this.p;
    const from = journal.position;
    for (const s of incoming) journal.appendEncoded(s.bytes, s.header, false);
    journal.handle.sync();
    const file = capture.file!;
    const history = openHistory(fs, paths, () => new Error(`${paths.journal} is missing`));
    try {
      redo(history.source, file, from);
    } finally {
      history.close();
    }
    file.sync();
    capture.afterRawWrite();
  }

  /**
   * Puts the file at the hub's new head as one local snapshot: the pages the local snapshots changed
   * go back to the base's, then the hub's snapshots are applied (all aside), and the difference is
   * appended (fsynced: a crash redoes it) and written. Its checksum must be the hub's.
   */
  private resetTo(incoming: IncomingSnapshot[], local: SnapshotInfo[], other: boolean): void {
    const { fs, paths, capture, journal, queue } = this.p;
    const file = capture.file!;
    const target = incoming[incoming.length - 1]!.header;
    const shadow = new ShadowFile(file, fs, `${paths.spill}-rebase`);
    const touched = new Set<number>();
    try {
      const src = fileSource(journal.handle);
      for (const s of local) walkPatches(src, s.offset, s, (pgno) => touched.add(pgno));
      const base = queue.base;
      if (other || base.checksum === 0n) {
        shadow.truncate(0);
      } else {
        const { pages, snapshot } = historyPages(fs, paths, base.txid);
        try {
          if (snapshot.postChecksum !== base.checksum)
            throw new Error(`the journal's txid ${base.txid} is not the base`);
          shadow.truncate(Math.min(shadow.size(), pages.dbPages * pages.pageSize));
          const page = new Uint8Array(pages.pageSize);
          for (const pgno of touched) {
            if (pgno > pages.dbPages) continue;
            pages.readPage(pgno, page);
            shadow.write(page, (pgno - 1) * pages.pageSize);
          }
          if (shadow.size() < pages.dbPages * pages.pageSize) {
            // Pages past the local end that the base had: written whole below by no one, so copy them.
            for (let pgno = Math.floor(shadow.size() / pages.pageSize) + 1; pgno <= pages.dbPages; pgno++) {
              pages.readPage(pgno, page);
              shadow.write(page, (pgno - 1) * pages.pageSize);
              touched.add(pgno);
            }
          }
        } finally {
          pages.close?.();
        }
      }
      const out = new PageFile(shadow);
      for (const s of incoming) {
        out.resize(s.header.pageSize, s.header.dbPages);
        walkPatches(memorySource(s.bytes), 0, s.header, (pgno, offset, run) => {
          touched.add(pgno);
          out.patch(pgno, offset, run);
        });
      }
      out.flush();
      const pages = other ? undefined : [...touched].sort((a, b) => a - b);
      this.taking = true;
      capture.revert(filePages(shadow), { pages, expect: target.postChecksum });
      this.taken = [];
    } finally {
      shadow.discard();
    }
  }

  /**
   * Applies every pending change again, each in its own transaction; the rejected ones are dropped. A
   * crash before the tail is rewritten takes them all back out (they pair with no record).
   *
   * With journal durability they commit without fsyncs (synchronous=OFF; the rewrite's checkpoint makes
   * them durable at once), under the re-apply pin (src/shared/suffix.ts), fsynced first: a write-back may
   * reach the disk before a power cut while its snapshot did not (or only torn), and the file would be a
   * state no durable journal explains (an outside change). Recovery finding the pin cuts the journal back
   * to the reset's snapshot and rebuilds the file from it. With durability 'sqlite' each commit keeps the
   * connection's synchronous (an fsync each).
   */
  private reapply(report: RebaseReport<C, O>): void {
    const { db, capture, fs, paths, journal } = this.p;
    if (!capture.holdsWrites) {
      this.reapplyAll(report);
      return;
    }
    const at = journal.position;
    writeReapplyPin(fs, paths.rebase, { end: journal.end, txid: at.txid, checksum: at.checksum });
    this.pinned = true;
    const sync = db.pragma('synchronous', { simple: true });
    db.pragma('synchronous = OFF');
    try {
      this.reapplyAll(report);
    } finally {
      db.pragma(`synchronous = ${Number(sync)}`);
    }
  }

  /** The re-apply pin is on disk (until the rewrite's intent replaces it, or {@link unpin}). */
  private pinned = false;

  /**
   * A rebase that failed after its re-apply began: once the journal and the file are durable (a
   * checkpoint), the pin goes (left behind, it would cut later commits off at the next open). When the
   * checkpoint cannot run (the file is behind its journal), the pin stays: every access fails until the
   * database is opened again, and that open undoes the re-apply.
   */
  private unpin(): void {
    const { capture, fs, paths } = this.p;
    if (!capture.checkpoint({ force: true })) return;
    fs.delete(paths.rebase, { syncDir: true });
    this.pinned = false;
  }

  private reapplyAll(report: RebaseReport<C, O>): void {
    const { db, changes, apply, handler } = this.p;
    changes.pause();
    this.taking = true;
    const kept: { rec: PendingRecord; snaps: SnapshotInfo[] }[] = [];
    for (const rec of this.p.queue.records) {
      this.taken = [];
      const outcome = apply(db, rec.change, handler);
      for (const c of outcome.conflicts) report.conflicts.push({ seq: rec.seq, ...c });
      if (!outcome.applied) {
        report.rejected.push({ seq: rec.seq, reason: outcome.rejected ?? 'rejected' });
        continue;
      }
      report.applied++;
      if (this.taken.length > 0) kept.push({ rec, snaps: this.taken });
    }
    changes.resume();
    this.kept = kept;
  }

  private kept: { rec: PendingRecord; snaps: SnapshotInfo[] }[] = [];

  /**
   * Rewrites the journal after the base (or all of it, for another history) to the hub's snapshots and
   * the re-applied ones renumbered after them, and the device state to match: an intent first, so a crash
   * finishes it (the file is durable at the final state before the intent is written).
   */
  private rewriteTail(incoming: IncomingSnapshot[], other?: { journalId: Uint8Array }): void {
    const { fs, paths, capture, journal, queue } = this.p;
    // The file (and the journal, written without fsyncs) must be durable at the final state first.
    if (!capture.checkpoint({ force: true }) && this.pinned) {
      throw new Error('the rebase could not make the database durable before rewriting its journal');
    }
    const first = incoming[0]!.header;
    const target = incoming[incoming.length - 1]!.header;
    const parts: Uint8Array[] = [];
    let cut: number;
    if (other) {
      cut = 0;
      parts.push(
        encodeFileHeader({
          version: FORMAT_VERSION,
          journalId: other.journalId,
          createdAt: Date.now(),
          baseTxid: first.txid - 1n,
          baseChecksum: first.preChecksum,
        }),
      );
    } else {
      cut = this.suffix().start;
    }
    for (const s of incoming) parts.push(s.bytes);
    let txid = target.txid;
    let pre = target.postChecksum;
    let time = target.timestamp;
    const records: PendingRecord[] = [];
    for (const { rec, snaps } of this.kept) {
      const firstTxid = txid + 1n;
      for (const s of snaps) {
        txid++;
        time = Math.max(time, s.timestamp);
        const bytes = readAt(journal.handle, s.offset, s.length);
        parts.push(renumber(bytes, { ...s, timestamp: time }, txid, pre));
        pre = s.postChecksum;
      }
      records.push({ ...rec, firstTxid, lastTxid: txid, postChecksum: pre });
    }
    const tail = concatBytes(parts);
    const state = queue.encode({ txid: target.txid, checksum: target.postChecksum }, records);
    // Replaces the re-apply pin (the journal and the file are durable at the final state).
    writeIntent(fs, paths.rebase, { cut, tail, state });
    this.pinned = false;
    journal.replaceSuffix(fs, cut, tail);
    queue.rewrite({ txid: target.txid, checksum: target.postChecksum }, records);
    fs.delete(paths.rebase, { syncDir: true });
    capture.afterRawWrite();
    // The synced marker names the head before the rewrite (its txid in the old numbering): point it at the
    // rewritten head, the same state. Left behind, it would claim a later txid than commits made after
    // this one reach, and a crash that kept their write-backs from the file would not redo them. Fsynced:
    // a power cut must not bring back an older marker either (the one open() fsynced may name a txid after
    // the base, which the rewrite gave to another state).
    capture.checkpoint({ force: true, durable: true });
    this.kept = [];
  }
}
