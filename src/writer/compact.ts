/**
 * Compaction inside the writer (docs/ARCHITECTURE.md, "History"): `db.compact()` and the automatic
 * compaction that runs after a commit once the live journal has grown past a threshold. Runs between
 * transactions, in the writer's thread: builds the new history file (reading only snapshots the writer
 * no longer changes), puts it in place, then rewrites the live journal to start after it. With a hub,
 * only snapshots the hub already holds leave the live journal. Runtime-neutral.
 */

import type { FileSystem } from '../files/file-system.js';
import { buildHistory, type CompactResult } from '../history/compact.js';
import { DEFAULT_RETENTION, parseRetention, type RetentionPolicy } from '../history/policy.js';
import { historyEnd } from '../history/source.js';
import type { JournalWriter } from '../journal/journal-writer.js';
import type { JournalPaths } from '../journal/paths.js';

/** History options of `open` (`history: false` turns automatic compaction off). */
export interface HistoryOptions {
  /** Retention policy, e.g. '24h:all,30d:1h,forever:1d' (the default; see parseRetention). */
  retain?: string;
  /**
   * Compact automatically after a commit once the live journal is larger than this many bytes and than
   * the database (default 64 MiB; 0 turns automatic compaction off; `db.compact()` still works).
   */
  compactAt?: number;
  /** A checkpoint (full image) in the history whenever the bytes since the last pass this × the database size (default 0.5). */
  checkpointRatio?: number;
}

/** Options of `db.compact()`. */
export interface CompactCallOptions {
  /** Retention policy for this run (default: the one given to open). */
  retain?: string;
  /** Plan only: report what would change, write nothing. */
  dryRun?: boolean;
  /** The time retention ages count from (ms since the epoch; default now). */
  now?: number;
}

const DEFAULT_COMPACT_AT = 64 << 20;

export interface WriterCompactorParts {
  fs: FileSystem;
  dbPath: string;
  paths: JournalPaths;
  journal: JournalWriter;
  /** The txid the hub is known to hold (undefined: no hub; null: a hub whose head is not known yet). */
  hubTxid: () => bigint | undefined | null;
  /** The live journal was rewritten (its snapshots after the history moved): re-read it. */
  rebased: () => void;
  /** True while a transaction is open on the writer's connection. */
  busy: () => boolean;
  /**
   * Journal durability: makes the database file durable at the head and moves the synced marker there,
   * so that no snapshot redo may need leaves the live journal.
   */
  checkpoint?: () => void;
}

/** Compacts a writer's history on request and, when configured, after commits. */
export class WriterCompactor {
  private readonly policy: RetentionPolicy;
  private readonly compactAt: number;
  private readonly ratio: number | undefined;
  private scheduled = false;
  private failures = 0;
  /** The last automatic compaction's error, if it failed (it is retried after later commits). */
  lastError: Error | undefined;

  constructor(
    private readonly parts: WriterCompactorParts,
    options: HistoryOptions | false | undefined,
  ) {
    const o = options === false ? { compactAt: 0 } : (options ?? {});
    this.policy = parseRetention(o.retain ?? DEFAULT_RETENTION);
    this.compactAt = o.compactAt ?? DEFAULT_COMPACT_AT;
    this.ratio = o.checkpointRatio;
  }

  /** After each commit: schedules a compaction when the live journal has grown past the threshold. */
  noteCommit(): void {
    if (this.compactAt <= 0 || this.scheduled) return;
    const { journal, fs, dbPath } = this.parts;
    if (journal.end < this.compactAt || journal.end < fs.fileSize(dbPath)) return;
    // Back off after failures (e.g. a full disk): try again only after the journal grew further.
    if (this.failures > 0 && journal.end < this.compactAt * (1 + this.failures)) return;
    this.scheduled = true;
    const t = setTimeout(() => this.auto(), 0);
    (t as { unref?: () => void }).unref?.();
  }

  private auto(): void {
    this.scheduled = false;
    if (this.parts.busy() || this.parts.journal.pending) {
      this.noteCommit();
      return;
    }
    try {
      this.compact({});
      this.failures = 0;
      this.lastError = undefined;
    } catch (e) {
      this.failures++;
      this.lastError = e as Error;
    }
  }

  /** Compacts now (between transactions). */
  compact(options: CompactCallOptions): CompactResult {
    const { fs, paths, journal } = this.parts;
    if (this.parts.busy() || journal.pending) {
      throw new Error('compact: a transaction is open on this connection; commit or roll back first');
    }
    const lock = fs.tryLockExclusive?.(paths.compactLock);
    if (fs.tryLockExclusive && !lock) {
      throw new Error(`compact: another compaction of ${this.parts.dbPath} is running (mycelite compact)`);
    }
    try {
      return this.compactLocked(options);
    } finally {
      lock?.release();
    }
  }

  private compactLocked(options: CompactCallOptions): CompactResult {
    const { fs, paths, journal } = this.parts;
    const hub = this.parts.hubTxid();
    // Keep the journal's last snapshot in it (crash recovery may cut it), and, with a hub, every
    // snapshot the hub does not hold yet (they are pushed from the live journal).
    let upTo = journal.position.txid - 1n;
    if (!options.dryRun) this.parts.checkpoint?.();
    if (hub === null) upTo = 0n;
    else if (hub !== undefined && hub < upTo) upTo = hub;
    const result = buildHistory(
      fs,
      paths,
      {
        policy: options.retain ? parseRetention(options.retain) : this.policy,
        now: options.now,
        upTo,
        checkpointRatio: this.ratio,
        dryRun: options.dryRun,
      },
      () => new Error(`${paths.journal} is missing`),
    );
    if (options.dryRun) return result;
    if (result.end) {
      fs.rename(`${paths.history}.tmp`, paths.history);
      fs.syncDir(paths.history);
      // Where the new history ends, for the next open() (which then reads one header of it).
      historyEnd(fs, paths.history, { cached: true });
    }
    // The history may reach past the journal's start (this compaction's, or one `mycelite compact` ran
    // while this writer had the journal): start the journal after it.
    const end = result.end ?? historyEnd(fs, paths.history);
    const base = end && end.txid < upTo ? end.txid : upTo;
    if (end && base > journal.baseTxid) {
      journal.rebase(fs, paths.journal, base);
      this.parts.rebased();
    }
    return { ...result, bytesAfter: fs.fileSize(paths.history) + fs.fileSize(paths.journal) };
  }
}
