/**
 * What a writer makes of a hub's answers: which errors are worth a retry, and messages for the others
 * that say what happened and what to do. Runtime-neutral.
 */

import { hex64, type Position, sameBytes, toHex } from '../format/index.js';
import { type DbMode, describeMode, HubError, otherModeAdvice } from '../protocol/index.js';
import { HubUnreachableError } from './hub-client.js';
import { describeHubUrls, type HubUrls } from './hub-urls.js';

/** An error that stops pushing for good (two histories, another writer, a refused token...). */
export class SyncError extends Error {
  /** The hub's answer behind this error, if any (not a `cause`: the message already says it all). */
  readonly hubError: HubError | undefined;
  constructor(
    message: string,
    /** The hub's error code when the hub said so, or a local reason. */
    readonly code: string,
    options?: { cause?: unknown },
  ) {
    super(message);
    this.name = 'SyncError';
    this.hubError = options?.cause instanceof HubError ? options.cause : undefined;
    if (options?.cause !== undefined && !(options.cause instanceof HubError)) this.cause = options.cause;
  }
}

/** True for errors a retry may cure: the hub is unreachable, restarting, overloaded or timed out. */
export function isTransient(e: unknown): boolean {
  if (e instanceof SyncError) return false;
  if (e instanceof HubError) return e.status >= 500 || e.code === 'unavailable';
  if (e instanceof HubUnreachableError) return true;
  // A timed-out request, or a connection cut while reading an answer (fetch: TypeError "terminated").
  const name = (e as Error | undefined)?.name;
  return name === 'AbortError' || name === 'TimeoutError' || name === 'TypeError' || name === 'SyntaxError';
}

/** The claims of a JWT, read without checking it (only to explain a refusal). */
export function tokenClaims(token: string): { db?: unknown; role?: unknown; exp?: unknown } | undefined {
  try {
    const part = token.split('.')[1];
    if (!part) return undefined;
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const json = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const claims = JSON.parse(json) as unknown;
    return typeof claims === 'object' && claims !== null ? claims : undefined;
  } catch {
    return undefined;
  }
}

/** A SyncError for a hub error that a retry cannot cure. */
export function fatalFromHub(e: HubError, where: { url: HubUrls; db: string; token: string }): SyncError {
  const at = `database ${where.db} on ${describeHubUrls(where.url)}`;
  switch (e.code) {
    case 'unauthorized':
      return new SyncError(
        `the hub refused the token for ${at} (expired, malformed, or signed with another hub key): mint a new one with \`mycelite token --db ${where.db} --role writer\``,
        e.code,
        { cause: e },
      );
    case 'forbidden': {
      const claims = tokenClaims(where.token);
      if (claims?.role === 'reader') {
        return new SyncError(
          `this token is a reader token; pushing needs a writer token (mycelite token --db ${where.db} --role writer)`,
          e.code,
          { cause: e },
        );
      }
      if (typeof claims?.db === 'string' && claims.db !== where.db) {
        return new SyncError(
          `this token is for database ${claims.db}, not ${where.db}: mint one with \`mycelite token --db ${where.db} --role writer\``,
          e.code,
          { cause: e },
        );
      }
      return new SyncError(`the hub refused the token for ${at}: ${e.message}`, e.code, { cause: e });
    }
    case 'lease_held':
      return leaseHeld(e, at);
    case 'other_history':
      return new SyncError(
        `${at} holds another history (journal ${e.body.journal ?? '?'}) than this database's journal: two histories never mix. Push to a new database name, or remove the database from the hub`,
        e.code,
        { cause: e },
      );
    case 'other_mode':
      return otherMode(at, e.body.mode === 'single' ? 'single' : 'shared', e);
    case 'does_not_apply':
      return new SyncError(
        `the hub refused snapshot ${e.body.txid ?? '?'} of ${at}: it does not apply (its pages do not give the database checksum it claims), so this database was changed outside Mycelite or its journal is damaged; nothing was stored and pushing stopped. Run \`mycelite verify\` on this database`,
        e.code,
        { cause: e },
      );
    case 'bad_body':
      return new SyncError(
        `the hub refused snapshots of this journal as invalid (${e.message}): check it with \`mycelite verify\``,
        e.code,
        { cause: e },
      );
    default:
      return new SyncError(`${at}: ${e.message}`, e.code, { cause: e });
  }
}

function leaseHeld(e: HubError, at: string): SyncError {
  const lease = e.body.lease;
  const until = lease ? ` (lease epoch ${lease.epoch}, expires at ${lease.expiresAt})` : '';
  return new SyncError(
    `another writer holds the write lease of ${at}${until}; Mycelite allows one writer per database: close the other writer, or wait until its lease expires and try again`,
    'lease_held',
    { cause: e },
  );
}

/**
 * The database on the hub was created with the mode `stored`, not this writer's: a single writer never
 * pushes to a shared database, nor a shared one to a single-writer database. `e`: the hub's refusal of a
 * push, when it came to that.
 */
export function otherMode(at: string, stored: DbMode, e?: HubError): SyncError {
  const advice = otherModeAdvice(stored);
  return new SyncError(`${at} is ${describeMode(stored)}: ${advice}; nothing was pushed`, 'other_mode', {
    cause: e,
  });
}

/** The hub's head is not a state of the local journal. */
export function notInHistory(
  head: Position,
  hubJournal: Uint8Array,
  local: { journalId: Uint8Array; last: Position },
  at: string,
): SyncError {
  const same = sameBytes(hubJournal, local.journalId);
  const why = !same
    ? `holds another history (journal ${toHex(hubJournal)}, head ${head.txid}) than this database (journal ${toHex(local.journalId)})`
    : head.txid > local.last.txid
      ? `is ahead of this database (hub txid ${head.txid}, local txid ${local.last.txid}): another writer pushed to this history, or the local journal lost snapshots`
      : `has at txid ${head.txid} a state (checksum ${hex64(head.checksum)}) that differs from this database's`;
  return new SyncError(
    `${at} ${why}: two histories never mix. Push to a new database name, or restore this database from the hub`,
    'other_history',
  );
}
