/**
 * Retention policies (docs/ARCHITECTURE.md, "History"): which points in time a compaction keeps. A policy
 * is a list of tiers, youngest first: points younger than a tier's age keep one point per its interval
 * (or every point); points older than the last tier are dropped. Runtime-neutral.
 */

/** One tier: points younger than `age` ms keep one point per `every` ms (0: every point). */
export interface RetentionTier {
  age: number;
  every: number;
}

export type RetentionPolicy = RetentionTier[];

/** Every transaction for 24 hours, one point per hour for 30 days, then one per day, forever. */
export const DEFAULT_RETENTION = '24h:all,30d:1h,forever:1d';

const UNITS: Record<string, number> = {
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
  y: 365 * 86_400_000,
};

/** A duration such as 90s, 15m, 24h, 30d, 2w, 1y in ms; throws naming what is accepted. */
export function parseDuration(text: string): number {
  const m = /^(\d+)(s|m|h|d|w|y)$/.exec(text.trim());
  if (!m || Number(m[1]) === 0) {
    throw new Error(
      `"${text}" is not a duration: write a positive number and a unit (s, m, h, d, w, y), e.g. 24h`,
    );
  }
  return Number(m[1]) * UNITS[m[2]!]!;
}

/**
 * Parses `AGE:EVERY[,AGE:EVERY…]`, e.g. `24h:all,30d:1h,forever:1d`: keep every point younger than 24 h,
 * one per hour younger than 30 days, one per day after that. AGE is a duration or `forever` (last tier
 * only); EVERY is a duration or `all`. Ages must grow and intervals must not shrink.
 */
export function parseRetention(text: string): RetentionPolicy {
  const usage = `write tiers as AGE:EVERY separated by commas, e.g. ${DEFAULT_RETENTION}`;
  const tiers: RetentionPolicy = [];
  const parts = text.split(',').map((p) => p.trim());
  for (const [i, part] of parts.entries()) {
    const [ageText, everyText, extra] = part.split(':');
    if (ageText === undefined || everyText === undefined || extra !== undefined || ageText === '') {
      throw new Error(`retention tier "${part}" is not AGE:EVERY: ${usage}`);
    }
    const age = ageText === 'forever' ? Number.POSITIVE_INFINITY : parseDuration(ageText);
    if (age === Number.POSITIVE_INFINITY && i !== parts.length - 1) {
      throw new Error(`retention tier "${part}": only the last tier can be forever`);
    }
    const every = everyText === 'all' ? 0 : parseDuration(everyText);
    const prev = tiers[tiers.length - 1];
    if (prev && age <= prev.age)
      throw new Error(`retention tier "${part}": ages must grow from tier to tier`);
    if (prev && every < prev.every) {
      throw new Error(`retention tier "${part}": intervals must not shrink from tier to tier`);
    }
    tiers.push({ age, every });
  }
  return tiers;
}

/** Describes a policy in words, for --help output and logs. */
export function describeRetention(policy: RetentionPolicy): string {
  const span = (ms: number): string => {
    if (ms === Number.POSITIVE_INFINITY) return 'forever';
    for (const [u, n] of Object.entries(UNITS).reverse()) if (ms % n === 0) return `${ms / n}${u}`;
    return `${ms}ms`;
  };
  return policy
    .map(
      (t) =>
        `${t.every === 0 ? 'every point' : `one point per ${span(t.every)}`} ${t.age === Number.POSITIVE_INFINITY ? 'for ever' : `up to ${span(t.age)} old`}`,
    )
    .join(', then ')
    .concat(policy[policy.length - 1]?.age === Number.POSITIVE_INFINITY ? '' : '; older points are dropped');
}

/**
 * Which of `points` (oldest first) the policy keeps at time `now`: per tier, the last point of each
 * interval; the last point always. Returns one flag per point.
 */
export function retainedPoints(
  points: { timestamp: number }[],
  policy: RetentionPolicy,
  now: number,
): boolean[] {
  const keep = points.map(() => false);
  const seen = new Set<string>();
  for (let i = points.length - 1; i >= 0; i--) {
    const ts = points[i]!.timestamp;
    const age = Math.max(0, now - ts);
    const tier = policy.findIndex((t) => age < t.age);
    if (tier < 0) continue;
    const every = policy[tier]!.every;
    if (every === 0) {
      keep[i] = true;
      continue;
    }
    const key = `${tier}:${Math.floor(ts / every)}`;
    if (!seen.has(key)) {
      seen.add(key);
      keep[i] = true;
    }
  }
  if (points.length > 0) keep[points.length - 1] = true;
  return keep;
}
