/**
 * HTTP client of a hub (docs/PROTOCOL.md), over `fetch`: runs in Node and in browsers. Every hub error
 * answer becomes a HubError with the hub's code; a hub that cannot be reached becomes HubUnreachableError.
 */

import type { Position } from '../format/index.js';
import { toHex } from '../format/index.js';
import {
  API_PREFIX,
  CONTENT_TYPE_SNAPSHOTS,
  type DbMode,
  formatPosition,
  fromJsonPosition,
  HEADER_BASE,
  HEADER_EPOCH,
  HEADER_JOURNAL,
  HEADER_MODE,
  HubError,
  hubErrorFrom,
  type JsonLease,
  parseJournalId,
  parseMode,
} from '../protocol/index.js';
import { type HubUrls, parseHubUrls } from './hub-urls.js';

/** Which database on which hub, and the token that opens it. */
export interface HubTarget {
  /**
   * Base URL of the hub, e.g. `http://127.0.0.1:8080`; or several hubs that serve the same databases
   * (hubs on one NATS cluster), as an array or one string with commas: the client uses one and moves to
   * the next when it cannot be reached, times out, or answers 5xx (its storage unavailable).
   */
  url: HubUrls;
  /** Database name on the hub. */
  db: string;
  /** A token for `db` (see `mycelite token`). */
  token: string;
  /** fetch to use (default: the global one). */
  fetch?: typeof fetch;
}

/** What the hub holds of a database. */
export interface DbState {
  journalId: Uint8Array;
  head: Position;
  /** How the database is written, stored when it was created (a hub from before modes: `single`). */
  mode: DbMode;
  lease: Lease | null;
}

export interface Lease {
  epoch: number;
  expiresAt: Date;
}

export interface PushResult {
  head: Position;
  appended: number;
  skipped: number;
}

export interface ReadOptions {
  /** The reader's position and journal id; omit both for `from=image`. */
  after?: Position;
  journalId?: Uint8Array;
  /** Keep the response open and receive new snapshots live. */
  follow?: boolean;
  signal?: AbortSignal;
}

/** The hub could not be reached (network error, connection refused or cut). */
export class HubUnreachableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HubUnreachableError';
  }
}

/** How a transient failure shows in a status: the hub answers but its storage does not, or not at all. */
export function troubleState(e: unknown): 'offline' | 'storage-unavailable' {
  return e instanceof HubError && e.code === 'storage_unavailable' ? 'storage-unavailable' : 'offline';
}

export class HubClient {
  private readonly urls: string[];
  private current = 0;
  private readonly fetch: typeof fetch;

  /** Throws when `target.url` is not one or more http(s) URLs. */
  constructor(readonly target: HubTarget) {
    this.urls = parseHubUrls(target.url);
    this.fetch = target.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** How many hubs the target names. */
  get hubs(): number {
    return this.urls.length;
  }

  /** The hub in use now (the next request goes to it). */
  get url(): string {
    return this.urls[this.current]!;
  }

  /** Moves on from hub `i` to the next one (unless another request did already). */
  private failed(i: number): void {
    if (this.current === i) this.current = (i + 1) % this.urls.length;
  }

  /** The database's journal id, head, mode and lease; undefined when the hub has no such database. */
  async state(signal?: AbortSignal): Promise<DbState | undefined> {
    const res = await this.call('', { signal }, 'read state', [404]);
    if (res.status === 404) {
      await res.body?.cancel();
      return undefined;
    }
    const j = (await res.json()) as {
      journal: string;
      head: unknown;
      mode?: string;
      lease: JsonLease | null;
    };
    const journalId = parseJournalId(j.journal);
    const head = fromJsonPosition(j.head);
    const mode = parseMode(j.mode);
    if (!journalId || !head || !mode)
      throw new Error(`hub ${this.url} sent a malformed state for ${this.target.db}`);
    return { journalId, head, mode, lease: j.lease ? toLease(j.lease) : null };
  }

  /**
   * Takes or renews the write lease for `holder`. `wait`: refused, this writer will ask again (a shared
   * device): the hub keeps its place, and the free lease goes to it before one that just released it.
   */
  async takeLease(holder: string, ttlMs?: number, signal?: AbortSignal, wait?: boolean): Promise<Lease> {
    const res = await this.call(
      '/lease',
      {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ holder, ttlMs, wait }),
        signal,
      },
      'take the write lease',
    );
    return toLease((await res.json()) as JsonLease);
  }

  /** Releases the lease of `epoch`. */
  async releaseLease(epoch: number, signal?: AbortSignal): Promise<void> {
    const res = await this.call(
      `/lease?epoch=${epoch}`,
      { method: 'DELETE', signal },
      'release the write lease',
    );
    await res.body?.cancel();
  }

  /**
   * Pushes encoded snapshots that follow `base`, as a writer of `mode` (default `single`): a database
   * created by this push gets that mode; one of the other mode refuses it (`409 other_mode`).
   */
  async push(
    body: Uint8Array,
    meta: { journalId: Uint8Array; base: Position; epoch: number; mode?: DbMode },
    signal?: AbortSignal,
  ): Promise<PushResult> {
    const res = await this.call(
      '/snapshots',
      {
        method: 'POST',
        headers: {
          'content-type': CONTENT_TYPE_SNAPSHOTS,
          [HEADER_JOURNAL]: toHex(meta.journalId),
          [HEADER_BASE]: formatPosition(meta.base),
          [HEADER_EPOCH]: String(meta.epoch),
          [HEADER_MODE]: meta.mode ?? 'single',
        },
        body: body as Uint8Array<ArrayBuffer>,
        signal,
      },
      'push',
    );
    const j = (await res.json()) as { head: unknown; appended: number; skipped: number };
    const head = fromJsonPosition(j.head);
    if (!head) throw new Error(`hub ${this.url} answered a push with a malformed head`);
    return { head, appended: j.appended, skipped: j.skipped };
  }

  /** Opens a read stream (docs/PROTOCOL.md, "read, catch up, follow live"). */
  /**
   * The database's compacted history file as the hub keeps it (docs/PROTOCOL.md, "history"): the
   * retained points before its snapshots' base; undefined when the hub keeps none.
   */
  async history(signal?: AbortSignal): Promise<ReadableStream<Uint8Array> | undefined> {
    const res = await this.call('/history', { signal }, 'read history', [404]);
    if (res.status === 404) {
      await res.body?.cancel();
      return undefined;
    }
    if (!res.body) throw new HubUnreachableError(`hub ${this.url} sent no body`);
    return res.body;
  }

  async read(options: ReadOptions): Promise<ReadableStream<Uint8Array>> {
    const q = new URLSearchParams();
    if (options.after) {
      q.set('after', formatPosition(options.after));
      if (options.journalId) q.set('journal', toHex(options.journalId));
    } else {
      q.set('from', 'image');
    }
    if (options.follow) q.set('follow', '1');
    const res = await this.call(`/snapshots?${q}`, { signal: options.signal }, 'read snapshots');
    if (!res.body) throw new HubUnreachableError(`hub ${this.url} sent no body`);
    return res.body;
  }

  /**
   * One request, to the hub in use; when it cannot be reached or answers 5xx, to the next hub (each at
   * most once per call). A request aborted by its signal's timeout moves the next call on too.
   */
  private async call(path: string, init: RequestInit, what: string, ok: number[] = []): Promise<Response> {
    const headers = new Headers(init.headers);
    headers.set('authorization', `Bearer ${this.target.token}`);
    const where = (url: string): string => `${what} at ${url} (${this.target.db})`;
    for (let tried = 1; ; tried++) {
      const i = this.current;
      const url = this.urls[i]!;
      const last = tried >= this.urls.length;
      let res: Response;
      try {
        res = await this.fetch(`${url}${API_PREFIX}/db/${encodeURIComponent(this.target.db)}${path}`, {
          ...init,
          headers,
        });
      } catch (e) {
        const signal = init.signal;
        if (signal?.aborted) {
          if ((signal.reason as Error | undefined)?.name === 'TimeoutError') this.failed(i);
          throw e;
        }
        if ((e as Error).name === 'AbortError') throw e;
        this.failed(i);
        if (!last) continue;
        const cause = (e as { cause?: { code?: string; message?: string } }).cause;
        const why = cause?.code ?? cause?.message ?? (e as Error).message;
        throw new HubUnreachableError(`cannot ${where(url)}: ${why}`, { cause: e });
      }
      if (res.ok || ok.includes(res.status)) return res;
      const err = hubErrorFrom(res.status, await res.text(), where(url));
      if (res.status < 500) throw err;
      this.failed(i);
      if (last || init.signal?.aborted) throw err;
    }
  }
}

function toLease(j: JsonLease): Lease {
  return { epoch: j.epoch, expiresAt: new Date(j.expiresAt) };
}

export { HubError };
