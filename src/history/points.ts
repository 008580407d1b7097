/**
 * Restorable points: every snapshot of a (possibly compacted) history ends at one. Finds the snapshot a
 * restore target names, and explains a target that retention dropped by naming the nearest points that
 * remain (docs/ARCHITECTURE.md, "History"). Runtime-neutral.
 */
import { FLAG_FULL_IMAGE, FLAG_MERGED, type SnapshotHeader } from '../format/index.js';

/** Which snapshot to stop at: a txid, or the last one at or before a time (ms since the epoch). */
/**
 * A point of a database's history, the one shape every API takes (restoreDatabase's `target`, openAt,
 * revert): a txid, or a moment (ms since the epoch or a Date: the last snapshot at or before it).
 */
export type PointTarget = { txid: bigint } | { at: number | Date };

export type Target = PointTarget | 'latest';

/** `target` as a txid or ms, checked: a TypeError saying the shape for anything else. */
export function checkTarget(target: unknown): { txid: bigint } | { at: number } | 'latest' {
  if (target === 'latest') return target;
  if (typeof target === 'bigint') return { txid: target };
  if (target instanceof Date) return { at: target.getTime() };
  if (typeof target === 'object' && target !== null) {
    const t = target as { txid?: unknown; at?: unknown };
    if (typeof t.txid === 'bigint') return { txid: t.txid };
    if (typeof t.txid === 'number' && Number.isSafeInteger(t.txid) && t.txid >= 0)
      return { txid: BigInt(t.txid) };
    if (t.at instanceof Date) return { at: t.at.getTime() };
    if (typeof t.at === 'number') return { at: t.at };
  }
  throw new TypeError(
    `a point in time is { txid: 3n } or { at: new Date(…) } (ms since the epoch also do), not ${String(target)}`,
  );
}

/** A target no snapshot matches; the message names the nearest restorable points. */
export class TargetNotFoundError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TargetNotFoundError';
  }
}

type Point = Pick<SnapshotHeader, 'txid' | 'timestamp' | 'flags'>;

/** "txid N (ISO time)". */
export function describePoint(s: Point): string {
  return `txid ${s.txid} (${new Date(s.timestamp).toISOString()})`;
}

/**
 * Index in `all` (oldest first) of the snapshot `target` names: -1 for 'latest' of an empty history.
 * Throws TargetNotFoundError when the history does not hold the target as a restorable point.
 */
export function findPoint(all: Point[], wanted: Target): number {
  const target = checkTarget(wanted);
  if (target === 'latest') return all.length - 1;
  if (all.length === 0) throw new TargetNotFoundError('the journal holds no snapshots yet');
  const first = all[0]!;
  const last = all[all.length - 1]!;
  const range = `the restorable range is ${describePoint(first)} .. ${describePoint(last)} (mycelite log lists every point)`;
  if ('txid' in target) {
    const n = target.txid;
    if (n > last.txid) throw new TargetNotFoundError(`no snapshot with txid ${n}: ${range}`);
    let lo = 0;
    let hi = all.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (all[mid]!.txid >= n) hi = mid;
      else lo = mid + 1;
    }
    const s = all[lo]!;
    if (s.txid === n) return lo;
    if (lo === 0) {
      throw new TargetNotFoundError(
        `txid ${n} is before the oldest restorable point, ${describePoint(first)}: retention dropped it (or the journal starts later); ${range}`,
      );
    }
    const prev = all[lo - 1]!;
    throw new TargetNotFoundError(
      `txid ${n} is no longer restorable: retention merged txids ${prev.txid + 1n}..${s.txid} into one point; the nearest restorable points are ${describePoint(prev)} and ${describePoint(s)}`,
    );
  }
  const at = target.at;
  const when = new Date(at).toISOString();
  if (Number.isNaN(at)) throw new TargetNotFoundError(`not a valid time: ${range}`);
  let lo = -1;
  let hi = all.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (all[mid]!.timestamp <= at) lo = mid;
    else hi = mid - 1;
  }
  if (lo < 0) {
    throw new TargetNotFoundError(`no snapshot at or before ${when}: ${range}`);
  }
  const next = all[lo + 1];
  if (next && (next.flags & FLAG_MERGED) !== 0) {
    throw new TargetNotFoundError(
      `the state at ${when} is no longer restorable: retention merged the transactions after ${describePoint(all[lo]!)} up to ${describePoint(next)} into one point; restore one of those two instead`,
    );
  }
  return lo;
}

/** Index of the last full image at or before `index` (0 when there is none: replay from the start). */
export function checkpointBefore(all: Pick<SnapshotHeader, 'flags'>[], index: number): number {
  let i = index;
  while (i > 0 && (all[i]!.flags & FLAG_FULL_IMAGE) === 0) i--;
  return Math.max(0, i);
}
