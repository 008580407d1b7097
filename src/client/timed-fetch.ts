/**
 * `fetch` with deadlines, for a hub that may never answer: a connection the network dropped without a
 * word, a proxy whose backend is gone, or a connection closed at once that fetch never reports (Node 20's
 * fetch can wait forever on one). The answer (status and headers) must come within `answerMs`; after it,
 * each read of the body must get bytes within `silenceMs` (a live read stream carries a beat every 10 s).
 * Past either, the request is aborted with a `TimeoutError`, which callers count as a network failure
 * (retried). The caller's own signal still aborts it. Runtime-neutral.
 */

/** Deadlines of {@link timedFetch} (ms). */
export interface FetchDeadlines {
  answerMs: number;
  silenceMs: number;
}

/** `inner` (default: the global fetch) with the deadlines `d`. */
export function timedFetch(d: FetchDeadlines, inner?: typeof fetch): typeof fetch {
  const run = inner ?? globalThis.fetch.bind(globalThis);
  return async (input, init = {}) => {
    const ctl = new AbortController();
    const outer = init.signal ?? undefined;
    const onAbort = (): void => ctl.abort(outer?.reason);
    if (outer?.aborted) onAbort();
    else outer?.addEventListener('abort', onAbort, { once: true });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const arm = (ms: number, what: string): void => {
      clearTimeout(timer);
      timer = setTimeout(
        () => ctl.abort(new DOMException(`the hub ${what} in ${ms} ms`, 'TimeoutError')),
        ms,
      );
      (timer as { unref?: () => void }).unref?.();
    };
    const stop = (): void => {
      clearTimeout(timer);
      outer?.removeEventListener('abort', onAbort);
    };
    arm(d.answerMs, 'did not answer');
    let res: Response;
    try {
      res = await run(input, { ...init, signal: ctl.signal });
    } catch (e) {
      stop();
      throw e;
    }
    clearTimeout(timer);
    if (!res.body || [101, 204, 205, 304].includes(res.status)) {
      stop();
      return res;
    }
    const reader = res.body.getReader();
    // Only while a read waits: a reader that stops reading for a while is not the hub going silent.
    const body = new ReadableStream<Uint8Array>({
      async pull(c) {
        arm(d.silenceMs, 'sent nothing');
        try {
          const r = await reader.read();
          clearTimeout(timer);
          if (r.done) {
            stop();
            c.close();
          } else c.enqueue(r.value);
        } catch (e) {
          stop();
          c.error(e);
        }
      },
      cancel(reason) {
        stop();
        return reader.cancel(reason);
      },
    });
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}
