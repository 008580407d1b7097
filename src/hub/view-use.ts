/**
 * Which databases a hub's storage holds open (a view on NATS, src/hub/nats-storage.ts; file handles on
 * files, src/hub/fs-storage.ts): how many operations hold each now and when it was last used. One nobody
 * holds for `idleMs` is offered to `release` (which may refuse: a live follower, a view still starting,
 * an operation under way), and so are the least recently used when more than a storage's limit are open
 * (`trim`), so a hub's idle cost follows the databases in use, not every database it ever served. No
 * Node-only imports.
 */
export class ViewUse {
  private readonly entries = new Map<string, { holds: number; used: number }>();
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(
    private readonly idleMs: number,
    private readonly release: (db: string) => boolean,
  ) {
    if (Number.isFinite(idleMs)) {
      this.timer = setInterval(() => this.sweep(), Math.max(25, Math.min(idleMs / 4, 60_000)));
      (this.timer as { unref?: () => void }).unref?.();
    }
  }

  private entry(db: string): { holds: number; used: number } {
    let e = this.entries.get(db);
    if (!e) {
      e = { holds: 0, used: Date.now() };
      this.entries.set(db, e);
    }
    return e;
  }

  /** Runs `fn` with `db`'s view held: it is not released before `fn` settles. */
  async hold<T>(db: string, fn: () => Promise<T>): Promise<T> {
    const e = this.entry(db);
    e.holds++;
    e.used = Date.now();
    try {
      return await fn();
    } finally {
      e.holds--;
      e.used = Date.now();
    }
  }

  /** `source` with `db`'s view held from the first item asked for until the iteration ends. */
  holdWhile<T>(db: string, source: () => AsyncIterable<T>): AsyncIterable<T> {
    const use = this;
    return {
      async *[Symbol.asyncIterator]() {
        const e = use.entry(db);
        e.holds++;
        e.used = Date.now();
        try {
          yield* source();
        } finally {
          e.holds--;
          e.used = Date.now();
        }
      },
    };
  }

  /** Marks `db` used now (a view made or asked for without an operation around it). */
  touch(db: string): void {
    this.entry(db).used = Date.now();
  }

  /** Offers every view unused for `idleMs` to `release`; those it takes are forgotten. */
  sweep(now = Date.now()): void {
    for (const [db, e] of this.entries) {
      if (e.holds > 0 || now - e.used < this.idleMs) continue;
      if (this.release(db)) this.entries.delete(db);
    }
  }

  /**
   * Offers the least recently used databases not held now (nor `keep`) to `release` until at most `max`
   * are known.
   */
  trim(max: number, keep?: string): void {
    if (this.entries.size <= max) return;
    const idle = [...this.entries]
      .filter(([db, e]) => e.holds === 0 && db !== keep)
      .sort((a, b) => a[1].used - b[1].used);
    for (const [db] of idle) {
      if (this.entries.size <= max) return;
      if (this.release(db)) this.entries.delete(db);
    }
  }

  stop(): void {
    clearInterval(this.timer);
    this.entries.clear();
  }
}
