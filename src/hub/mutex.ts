/** A small async mutex: runs critical sections one after another, in call order. */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();

  /** Runs `fn` once every earlier section has finished; resolves or rejects with its result. */
  run<T>(fn: () => Promise<T> | T): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.catch(() => undefined);
    return result;
  }

  /** Resolves once every section started so far has finished. */
  idle(): Promise<void> {
    return this.run(() => undefined);
  }
}
