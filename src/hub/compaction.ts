/**
 * Compaction at the hub (docs/ARCHITECTURE.md, "Compaction at the hub"): when a database's live journal
 * grows past a threshold, at most once per interval, its older snapshots move into the compacted
 * `history` file under a retention policy (src/history/). This file holds the settings and when to run;
 * src/hub/fs-storage.ts and src/hub/nats-storage.ts run it (heavy phase in src/hub/compact-worker.ts).
 */
import { DEFAULT_RETENTION, parseRetention } from '../history/policy.js';
import type { CompactOutcome } from './compact-worker.js';

export interface HubCompaction {
  /** Retention policy text (default DEFAULT_RETENTION, src/history/policy.ts). */
  retain?: string;
  /** Compact once the journal is larger than this and than the database (bytes; default 64 MiB). */
  minBytes?: number;
  /** At most one compaction of a database per this many ms (default 10 minutes). */
  everyMs?: number;
  /** A checkpoint (full image) whenever the bytes since the last one pass this × the database size. */
  checkpointRatio?: number;
  /** Told after each compaction, or its failure (e.g. to log it). */
  onCompaction?: (db: string, outcome: CompactOutcome | Error, ms: number) => void;
}

export const DEFAULT_COMPACT_BYTES = 64 << 20;
export const DEFAULT_COMPACT_EVERY_MS = 10 * 60_000;

/** The settings with defaults filled in; throws on a bad retention policy. */
export function compactionSettings(
  c: HubCompaction,
): Required<Omit<HubCompaction, 'onCompaction' | 'checkpointRatio'>> & HubCompaction {
  const retain = c.retain ?? DEFAULT_RETENTION;
  parseRetention(retain);
  return {
    ...c,
    retain,
    minBytes: c.minBytes ?? DEFAULT_COMPACT_BYTES,
    everyMs: c.everyMs ?? DEFAULT_COMPACT_EVERY_MS,
  };
}

/** True when a journal of `journalBytes` over a database of `dbBytes` is due, `sinceLast` ms after the last run. */
export function compactionDue(
  settings: { minBytes: number; everyMs: number },
  journalBytes: number,
  dbBytes: number,
  sinceLast: number,
): boolean {
  return journalBytes > Math.max(settings.minBytes, dbBytes) && sinceLast >= settings.everyMs;
}

/**
 * The compactions of a storage (both hub storages use it): at most one running per database, when each
 * last started, whether one is due, and who is told how each ended (the settings' `onCompaction` and
 * every watcher, e.g. the server's log).
 */
export class CompactionRuns {
  private readonly runs = new Map<string, { last: number; running?: Promise<CompactOutcome | undefined> }>();
  private readonly watchers = new Set<NonNullable<HubCompaction['onCompaction']>>();

  /** `settings`: the storage's (undefined: automatic compaction is off; `compact()` still runs). */
  constructor(readonly settings: ReturnType<typeof compactionSettings> | undefined) {}

  /** True while a compaction of `db` runs. */
  running(db: string): boolean {
    return this.runs.get(db)?.running !== undefined;
  }

  /** Milliseconds since the last compaction of `db` started (Infinity when none has). */
  sinceLast(db: string): number {
    const st = this.runs.get(db);
    return st ? Date.now() - st.last : Number.POSITIVE_INFINITY;
  }

  /**
   * Whether automatic compaction should start for `db` now: it is on, none runs, more than the last
   * snapshot is after the base (`span` snapshots), and the bytes after the base are due.
   */
  due(db: string, span: bigint, journalBytes: number, dbBytes: number): boolean {
    const c = this.settings;
    if (!c || span < 2n || this.running(db)) return false;
    return compactionDue(c, journalBytes, dbBytes, this.sinceLast(db));
  }

  /** Also tells `listener` how each compaction ended. */
  watch(listener: NonNullable<HubCompaction['onCompaction']>): void {
    this.watchers.add(listener);
  }

  /**
   * Starts `run` for `db`, unless a compaction of it is running: then resolves with that one. Its outcome
   * (when it did something) or its error is told to `onCompaction` and the watchers, with how long it took.
   */
  start(db: string, run: () => Promise<CompactOutcome | undefined>): Promise<CompactOutcome | undefined> {
    let st = this.runs.get(db);
    if (st?.running) return st.running;
    if (!st) {
      st = { last: 0 };
      this.runs.set(db, st);
    }
    const state = st;
    state.last = Date.now();
    const p = this.reported(db, run).finally(() => {
      state.running = undefined;
    });
    state.running = p;
    return p;
  }

  private async reported(
    db: string,
    run: () => Promise<CompactOutcome | undefined>,
  ): Promise<CompactOutcome | undefined> {
    const started = Date.now();
    const tell = (outcome: CompactOutcome | Error): void => {
      const ms = Date.now() - started;
      this.settings?.onCompaction?.(db, outcome, ms);
      for (const w of this.watchers) w(db, outcome, ms);
    };
    try {
      const outcome = await run();
      if (outcome) tell(outcome);
      return outcome;
    } catch (err) {
      tell(err as Error);
      throw err;
    }
  }

  /** Waits for every running compaction to end (their errors are not this caller's). */
  async settle(): Promise<void> {
    await Promise.all([...this.runs.values()].map((c) => c.running?.catch(() => undefined)));
  }
}
