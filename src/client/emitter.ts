/** A minimal typed event emitter (runtime-neutral: no node:events). */

/** Maps event names to their listener argument. */
export type EventMap = Record<string, unknown>;

export class Emitter<E extends EventMap> {
  private readonly listeners = new Map<keyof E, Set<(arg: never) => void>>();

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof E>(event: K, fn: (arg: E[K]) => void): () => void {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(fn as (arg: never) => void);
    return () => this.off(event, fn);
  }

  off<K extends keyof E>(event: K, fn: (arg: E[K]) => void): void {
    this.listeners.get(event)?.delete(fn as (arg: never) => void);
  }

  /** Calls every listener of `event`; a listener that throws does not stop the others. */
  emit<K extends keyof E>(event: K, arg: E[K]): void {
    for (const fn of this.listeners.get(event) ?? []) {
      try {
        (fn as (a: E[K]) => void)(arg);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
}
