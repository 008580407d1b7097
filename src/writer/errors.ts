/**
 * The errors of opening a writer, and `step`, which names each step of open() and of recovery in the
 * error it throws: one message reads as a causal chain, as LiteFS's (`open app.db: set the synced marker:
 * fsync …: EIO`), with the original error as its `cause`.
 */

/** Errors a user can act on when opening. */
export class OpenError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'OpenError';
  }
}

/** Raised for a state open() must not repair on its own (the message says what to do). */
export class RecoveryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RecoveryError';
  }
}

let stepDone: ((name: string) => void) | undefined;

/**
 * Diagnostics: `done` hears the name of each step of open() and recovery as it ends (undefined: none).
 * The browser worker notes when, for `timings()`.
 */
export function observeSteps(done: ((name: string) => void) | undefined): void {
  stepDone = done;
}

/**
 * Runs one named step: an error it throws comes out as `NAME: message`, with the error as its cause.
 * An OpenError or RecoveryError already says all the user needs and comes out as it is. A step that
 * returns a promise has its rejection named the same way.
 */
export function step<T>(name: string, run: () => T): T {
  try {
    const out = run();
    stepDone?.(name);
    if (out instanceof Promise) {
      return out.catch((e: unknown) => {
        throw named(name, e);
      }) as T;
    }
    return out;
  } catch (e) {
    throw named(name, e);
  }
}

function named(name: string, e: unknown): Error {
  if (e instanceof OpenError || e instanceof RecoveryError) return e;
  return new Error(`${name}: ${(e as Error).message}`, { cause: e });
}
