/**
 * A writer's recovery at open, as named steps (docs/ARCHITECTURE.md, "Recovery"). Each step adds its name
 * to the error it throws. The rule they keep: the database file is the user's data. It is brought up to
 * the journal's head only by redoing snapshots the journal holds over a file that lags them, and only
 * after the redone result was checked (held aside, in a ShadowFile) to be exactly the head's state. A
 * file that is anything else is kept as it is: a damaged journal is copied aside, and the file's content
 * becomes a snapshot of its own (flagged `outside`), with a warning. The single exception is a file a
 * crashed transaction of ours left half-written (the `inflight` marker): that is rebuilt from an intact
 * journal, as SQLite's own rollback would.
 */

import { appendOutsideChange, NO_PAGES, type Pages } from '../capture/outside.js';
import { Database } from '../engine/database.js';
import type { Sqlite3 } from '../engine/sqlite.js';
import { type FileHandle, type FileSystem, readAt } from '../files/file-system.js';
import {
  decodeFileHeader,
  FILE_HEADER_SIZE,
  type Position,
  type SnapshotInfo,
  samePosition,
  xxh64,
} from '../format/index.js';
import { historyEnd } from '../history/source.js';
import { hasDamage, type JournalScan, type KnownPoint, scanJournal } from '../journal/journal-scan.js';
import { JournalWriter } from '../journal/journal-writer.js';
import type { JournalPaths } from '../journal/paths.js';
import { hotJournalNonce, readDbPages, readPageSize } from '../journal/sqlite-header.js';
import {
  fingerprintOf,
  readSyncedMarker,
  type SyncedMarker,
  sameFingerprint,
} from '../journal/synced-marker.js';
import { historyPages } from '../timetravel/history-pages.js';
import { RecoveryError, step } from './errors.js';
import { fileIs, rebuild, redoAside } from './redo.js';

/** Something open() did to keep the user's data that the user must hear about. */
export interface OpenWarning {
  /**
   * - `journal_missing`: the journal was gone; a new history starts from the database as it is.
   * - `journal_damaged`: the journal lost or damaged committed snapshots; it was copied aside and the
   *   database, kept as it is, recorded as a new snapshot.
   * - `outside_change`: the database was written by another program; the change is now a snapshot.
   * - `history_damaged`: the background check found a damaged snapshot in the history (the database is
   *   fine; the points from it on cannot be restored from this copy).
   * - `left_wal`: the database was in WAL mode (native SQLite left it so); native SQLite folded the WAL
   *   into the file and switched it to rollback mode before Mycelite opened it (Node only).
   */
  code: 'journal_missing' | 'journal_damaged' | 'outside_change' | 'history_damaged' | 'left_wal';
  /** One line saying what happened and what was kept where. */
  message: string;
  /** Where the damaged journal was copied to. */
  aside?: string;
  /** The snapshot that records the database as it was found. */
  txid?: bigint;
}

/** What recovery works on. */
export interface RecoveryContext {
  fs: FileSystem;
  sqlite3: Sqlite3;
  vfsName: string;
  dbPath: string;
  /** The path as the user gave it (for messages). */
  name: string;
  paths: JournalPaths;
  holdsWrites: boolean;
  warn: (w: OpenWarning) => void;
}

/** The outcome: the journal open for appending, and what the marker carries over. */
export interface Recovered {
  journal: JournalWriter;
  /** Snapshot bodies known good up to this txid (from the marker, when the journal is the same). */
  checkedTxid: bigint;
}

/** Runs the recovery steps in order; the database file and journal agree when it returns. */
export function recoverWriter(ctx: RecoveryContext): Recovered {
  const marker = step('read the synced marker', () => readSyncedMarker(ctx.fs, ctx.paths.synced));
  // Only what follows the marker's snapshot is read, when the journal still holds it where it was.
  const known =
    marker && marker !== 'bad' && marker.offset ? { ...marker, offset: marker.offset } : undefined;
  let scan = step('read the journal', () => scanJournal(ctx.fs, ctx.paths.journal, known));
  scan = step('join the journal to its compacted history', () => joinHistory(ctx, scan));
  const inflight = step('read the inflight marker', () => readInflight(ctx));
  const rolledBack = step("roll back SQLite's interrupted transaction", () =>
    rollBackHotJournal(ctx, scan, known),
  );
  scan = rolledBack ?? scan;
  if (!scan.header) {
    step('check the journal is not of another version', () => refuseOtherVersion(ctx, scan));
    return step('start a new journal', () => startJournal(ctx, scan, marker));
  }
  // A transaction was cut short: the file may differ from the head where the marker cannot tell (SQLite's
  // rollback leaves pages it took from the freelist as the transaction wrote them).
  const interrupted = inflight || rolledBack !== undefined;
  const state = step('bring the database up to the journal', () =>
    catchUp(ctx, scan, marker, interrupted, inflight),
  );
  if (state === 'rebuild') step('rebuild the half-written database', () => rebuild(ctx));
  // Whatever of the journal is dropped below (damage, a tail that a crash did not explain, snapshots the
  // marker shows were lost) is copied aside first.
  const lost = marker !== undefined && marker !== 'bad' && marker.txid > scan.head.txid;
  const aside =
    scan.damage || (state === 'differs' && (hasDamage(scan) || lost))
      ? step('copy the damaged journal aside', () => copyAside(ctx))
      : undefined;
  const journal = step('cut the journal after its last snapshot', () => JournalWriter.fromScan(ctx.fs, scan));
  try {
    if (state === 'differs') {
      step('keep the database as found', () => keepDatabase(ctx, scan, marker, journal, aside));
    } else if (aside) {
      ctx.warn({
        code: 'journal_damaged',
        message: `${ctx.name}: its journal is damaged after txid ${scan.head.txid} (${scan.damage?.message}); the database is at txid ${scan.head.txid} and goes on from there; the journal as found was copied to ${aside}`,
        aside,
      });
    }
    step('clear the inflight marker', () => clearInflight(ctx, inflight));
    const checkedTxid =
      marker && marker !== 'bad' && marker.checkedTxid <= journal.position.txid && !aside
        ? marker.checkedTxid
        : 0n;
    return { journal, checkedTxid };
  } catch (e) {
    journal.close();
    throw e;
  }
}

/**
 * The live journal must continue the compacted history. When it does not reach the history's end (it is
 * missing, unreadable, or was cut back before it), a new journal starts at the history's end with the
 * history's id, after the old one is copied aside: the history stays whole.
 */
function joinHistory(ctx: RecoveryContext, scan: JournalScan): JournalScan {
  const { fs, paths } = ctx;
  if (!fs.exists(paths.history)) return scan;
  let end: Position | undefined;
  let journalId: Uint8Array;
  try {
    end = historyEnd(fs, paths.history, { cached: true });
    const f = fs.open(paths.history, { readonly: true });
    try {
      journalId = decodeFileHeader(readAt(f, 0, FILE_HEADER_SIZE)).journalId;
    } finally {
      f.close();
    }
  } catch {
    return scan; // an unreadable history: the journal alone decides (verify reports the history)
  }
  if (!end || (scan.header && scan.head.txid >= end.txid)) return scan;
  const aside = scan.size > 0 ? copyAside(ctx) : undefined;
  JournalWriter.create(fs, paths.journal, { journalId, baseTxid: end.txid, baseChecksum: end.checksum });
  if (aside) {
    ctx.warn({
      code: 'journal_damaged',
      message: `${ctx.name}: its journal did not reach the end of its compacted history (txid ${end.txid}); it was copied to ${aside} and a new journal continues the history`,
      aside,
    });
  }
  return scanJournal(fs, paths.journal);
}

function readInflight(ctx: RecoveryContext): boolean {
  if (!ctx.fs.exists(ctx.paths.inflight)) return false;
  const f = ctx.fs.open(ctx.paths.inflight, { readonly: true });
  try {
    const flag = new Uint8Array(1);
    f.read(flag, 0);
    return flag[0] === 1;
  } finally {
    f.close();
  }
}

function clearInflight(ctx: RecoveryContext, set: boolean): void {
  if (!set) return;
  const f = ctx.fs.open(ctx.paths.inflight);
  try {
    f.write(new Uint8Array([0]), 0);
    f.sync();
  } finally {
    f.close();
  }
}

/**
 * A hot rollback journal (`DB-journal`) means a SQLite transaction crashed (ours under durability
 * 'sqlite', or another program's). If our last snapshot carries that journal's nonce, it was appended
 * for the transaction SQLite rolls back: cut it. Then let SQLite roll back through a connection that is
 * not captured (no capture is registered yet, so the VFS shows SQLite the real `DB-journal`).
 */
function rollBackHotJournal(
  ctx: RecoveryContext,
  scan: JournalScan,
  known: KnownPoint | undefined,
): JournalScan | undefined {
  const { fs, dbPath } = ctx;
  const nonce = hotJournalNonce(fs, dbPath);
  if (nonce === undefined) return undefined;
  let out = scan;
  if (scan.last && nonce !== 0 && scan.last.commitTag === nonce) {
    const j = fs.open(ctx.paths.journal);
    try {
      j.truncate(scan.last.offset);
      j.sync();
    } finally {
      j.close();
    }
    out = scanJournal(fs, ctx.paths.journal, known);
  }
  const r = Database.open(ctx.sqlite3, dbPath, { vfs: ctx.vfsName });
  try {
    r.pragma('schema_version');
  } finally {
    r.close();
  }
  return out;
}

/**
 * A journal whose header is whole (its checksum matches) but of another format version was written by
 * another Mycelite: not damage. Refuse, leaving everything as it is.
 */
function refuseOtherVersion(ctx: RecoveryContext, scan: JournalScan): void {
  if (scan.headerProblem?.offset !== 8 || scan.size < FILE_HEADER_SIZE) return;
  const f = ctx.fs.open(ctx.paths.journal, { readonly: true });
  try {
    const h = readAt(f, 0, FILE_HEADER_SIZE);
    const stored = new DataView(h.buffer, h.byteOffset, FILE_HEADER_SIZE).getBigUint64(56, true);
    if (stored === xxh64(h.subarray(0, 56))) {
      throw new RecoveryError(`cannot open ${ctx.name}: its ${scan.headerProblem.message}`);
    }
  } finally {
    f.close();
  }
}

/**
 * There is no journal to continue (missing, empty or unreadable): a new history starts from the
 * database as it is, a full image of it (none for an empty database). Loud when the journal had been
 * there: a damaged one is copied aside first.
 */
function startJournal(
  ctx: RecoveryContext,
  scan: JournalScan,
  marker: SyncedMarker | 'bad' | undefined,
): Recovered {
  const { fs, paths, dbPath } = ctx;
  const aside = scan.size > 0 && !scan.tailZeros ? copyAside(ctx) : undefined;
  JournalWriter.create(fs, paths.journal);
  const journal = JournalWriter.open(fs, paths.journal);
  try {
    const hadHistory =
      aside !== undefined || (marker !== undefined && (marker === 'bad' || marker.txid > 0n));
    if (fs.fileSize(dbPath) > 0) {
      const db = fs.open(dbPath, { readonly: true });
      try {
        const snap = hadHistory ? appendOutsideChange(journal, db, undefined) : undefined;
        if (hadHistory) {
          const code = aside ? 'journal_damaged' : 'journal_missing';
          const why = aside
            ? `its journal was unreadable (${scan.headerProblem?.message ?? 'no valid header'}); it was copied to ${aside}`
            : 'its journal was missing';
          ctx.warn({
            code,
            message: `${ctx.name}: ${why}. The database was kept as it is and a new history starts from it (snapshot ${snap?.txid ?? 1n}); the hub (if any) holds the old history: push there needs a new database name`,
            aside,
            txid: snap?.txid,
          });
        }
      } finally {
        db.close();
      }
    }
    // A marker of the old history means nothing to the new one.
    fs.delete(paths.synced);
    return { journal, checkedTxid: 0n };
  } catch (e) {
    journal.close();
    throw e;
  }
}

/**
 * Checks the database file against the journal's head and brings it there when it lags (a crash since
 * the marker): 'equal' when it now is the head's state (or is new, for open() to bootstrap), 'rebuild'
 * when our own crashed transaction left it half-written, 'differs' when it is something else (kept).
 */
function catchUp(
  ctx: RecoveryContext,
  scan: JournalScan,
  marker: SyncedMarker | 'bad' | undefined,
  interrupted: boolean,
  inflight: boolean,
): 'equal' | 'rebuild' | 'differs' {
  const { fs, dbPath } = ctx;
  const head = scan.head;
  const good = marker !== undefined && marker !== 'bad' ? marker : undefined;
  if (!fs.exists(dbPath)) {
    if (head.checksum === 0n) return 'equal';
    throw missingDatabase(ctx, head);
  }
  const db = fs.open(dbPath);
  try {
    // Clean: the marker is the head and the file is as the marker saw it (constant time).
    const print = good?.fingerprint;
    if (
      !interrupted &&
      good &&
      samePosition(good, head) &&
      print &&
      sameFingerprint(fingerprintOf(db), print)
    ) {
      return 'equal';
    }
    // A file SQLite shrank at its commit point and a crash kept from truncating (durability 'sqlite').
    if (!good?.holdsWrites) finishShrink(db, scan.last);
    const size = db.size();
    if (size === 0 && (head.txid === 0n || head.checksum === 0n)) return 'equal';
    // A database opened through Mycelite for the first time: open() bootstraps it.
    if (head.txid === 0n && marker === undefined && !hasDamage(scan)) return 'equal';
    let isHead: boolean | undefined;
    const fileIsHead = (): boolean => {
      isHead ??= size > 0 && fileIs(db, head);
      return isHead;
    };
    // Durability 'sqlite' keeps the file at the head: compare it first (a redo from an old marker is long).
    const fileFirst = !good?.holdsWrites;
    if (fileFirst && fileIsHead()) return 'equal';
    // A file that lags (journal durability, or any crash): redo the snapshots after the marker, aside.
    if (marker !== undefined && redoAside(ctx, db, good ?? { txid: 0n, checksum: 0n }, head, scan.from)) {
      return 'equal';
    }
    if (!fileFirst && fileIsHead()) return 'equal';
    if (size === 0) throw missingDatabase(ctx, head);
    // Our own transaction crashed half-written (nothing on disk can roll it back): the journal wins.
    if (inflight && !hasDamage(scan) && !(good && good.txid > head.txid)) return 'rebuild';
    return 'differs';
  } finally {
    db.close();
  }
}

function missingDatabase(ctx: RecoveryContext, head: Position): RecoveryError {
  return new RecoveryError(
    `${ctx.name} is missing or empty but its journal holds ${head.txid} snapshots: restore it with ` +
      `\`mycelite restore ${ctx.name} --output ${ctx.name}\`, or move ${ctx.paths.dir} away to start a new history`,
  );
}

/**
 * SQLite truncates a shrunk database only after its commit point: a crash in between leaves the file
 * longer than its header says. Finish the truncation (what SQLite itself would do).
 */
function finishShrink(db: FileHandle, last: SnapshotInfo | undefined): void {
  if (!last) return;
  const want = last.dbPages * last.pageSize;
  const size = db.size();
  if (
    size > want &&
    size >= 100 &&
    readPageSize(db) === last.pageSize &&
    readDbPages(db, last.pageSize) === last.dbPages
  ) {
    db.truncate(want);
    db.sync();
  }
}

/**
 * The file is not the journal's head: keep it, and record its content as one snapshot after the
 * journal's valid part (what was dropped of the journal is in `aside`).
 */
function keepDatabase(
  ctx: RecoveryContext,
  scan: JournalScan,
  marker: SyncedMarker | 'bad' | undefined,
  journal: JournalWriter,
  aside: string | undefined,
): void {
  const db = ctx.fs.open(ctx.dbPath, { readonly: true });
  const old = oldState(ctx, scan.head);
  let snap: SnapshotInfo | undefined;
  try {
    snap = appendOutsideChange(journal, db, old);
  } finally {
    old?.close?.();
    db.close();
  }
  const at = snap ? `snapshot ${snap.txid}` : `txid ${scan.head.txid}`;
  if (aside) {
    const markedAt = marker !== undefined && marker !== 'bad' ? marker.txid : undefined;
    const what = scan.damage
      ? `is damaged (${scan.damage.message})`
      : markedAt !== undefined && markedAt > scan.head.txid
        ? `lost committed snapshots (it ends at txid ${scan.head.txid}; the database was at txid ${markedAt})`
        : `has a damaged last snapshot at byte ${scan.end}`;
    ctx.warn({
      code: 'journal_damaged',
      message: `${ctx.name}: its journal ${what}. The database was kept as it is and recorded as ${at} (an outside change); the journal as found was copied to ${aside}`,
      aside,
      txid: snap?.txid,
    });
  } else {
    ctx.warn({
      code: 'outside_change',
      message: `${ctx.name} was changed by another program (not through Mycelite) after txid ${scan.head.txid}: the change was recorded as ${at} (an outside change)`,
      txid: snap?.txid,
    });
  }
}

/** The journal's state at `head`, page by page; undefined when its pages cannot be read (a full image then). */
export function oldState(ctx: Pick<RecoveryContext, 'fs' | 'paths'>, head: Position): Pages | undefined {
  if (head.txid === 0n || head.checksum === 0n) return NO_PAGES;
  try {
    const state = historyPages(ctx.fs, ctx.paths, head.txid);
    if (state.snapshot.postChecksum === head.checksum) return state.pages;
    state.pages.close?.();
    return undefined;
  } catch {
    return undefined;
  }
}

/** Copies the journal file as it is to `journal.damaged-TIME` beside it (fsynced); returns the path. */
function copyAside(ctx: RecoveryContext): string {
  const { fs, paths } = ctx;
  const stamp = new Date()
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  let path = `${paths.journal}.damaged-${stamp}`;
  for (let n = 2; fs.exists(path); n++) path = `${paths.journal}.damaged-${stamp}-${n}`;
  const from = fs.open(paths.journal, { readonly: true });
  const to = fs.open(path, { create: true });
  try {
    const size = from.size();
    for (let at = 0; at < size; ) {
      const n = Math.min(4 << 20, size - at);
      to.write(readAt(from, at, n), at);
      at += n;
    }
    to.sync();
  } finally {
    from.close();
    to.close();
  }
  fs.syncDir(path);
  return path;
}

/**
 * Records a change another program made to the database while the writer had it open (between two of
 * its transactions): one outside snapshot from the journal's head to the file's content, fsynced.
 */
export function recordOutsideChange(
  fs: FileSystem,
  paths: JournalPaths,
  journal: JournalWriter,
  dbPath: string,
): SnapshotInfo | undefined {
  const old = oldState({ fs, paths }, journal.position);
  const db = fs.open(dbPath, { readonly: true });
  try {
    return appendOutsideChange(journal, db, old);
  } finally {
    old?.close?.();
    db.close();
  }
}
