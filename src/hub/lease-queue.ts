/**
 * A fair hand-off of the write lease (docs/PROTOCOL.md, "take or renew the write lease"): a writer that
 * was refused the lease and said it will ask again (`"wait": true`, a shared device) gets it next, before
 * one that just released it and asks again at once. Otherwise a device that never stops committing takes
 * the lease again a few ms after each release and another device, asking now and then, seldom finds it
 * free. Kept in the hub's memory: a place lapses when its writer has not asked for `PLACE_MS` (it gave
 * up, or asks through another hub), so a writer that left holds nobody up for longer than that.
 */

/** How long a refused writer keeps its place without asking again (ms): above a device's retry delay. */
export const PLACE_MS = 1500;

export class LeaseQueue {
  /** Per database: the writer that asked first while the lease was held, and when it last asked. */
  private readonly first = new Map<string, { holder: string; at: number }>();

  /** `holder` was refused the lease of `db` at `now` and will ask again: it takes the first place if free. */
  refused(db: string, holder: string, now: number): void {
    const w = this.first.get(db);
    if (!w || w.holder === holder || now - w.at > PLACE_MS) this.first.set(db, { holder, at: now });
  }

  /** The writer the free lease of `db` goes to at `now`, if one waits for it. */
  next(db: string, now: number): string | undefined {
    const w = this.first.get(db);
    if (w && now - w.at <= PLACE_MS) return w.holder;
    this.first.delete(db);
    return undefined;
  }

  /** `holder` got the lease of `db`: its place is used. */
  granted(db: string, holder: string): void {
    if (this.first.get(db)?.holder === holder) this.first.delete(db);
  }
}
