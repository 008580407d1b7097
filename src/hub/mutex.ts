/** A small async mutex: runs critical sections one after another, in call order. */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  private sections = 0;

  /** Runs `fn` once every earlier section has finished; resolves or rejects with its result. */
  run<T>(fn: () => Promise<T> | T): Promise<T> {
    this.sections++;
    const result = this.tail.then(fn).finally(() => {
      this.sections--;
    });
    this.tail = result.catch(() => undefined);
    return result;
  }

  /** A section runs or waits. */
  get busy(): boolean {
    return this.sections > 0;
  }

  /** Resolves once every section started so far has finished. */
  idle(): Promise<void> {
    return this.run(() => undefined);
  }
}
