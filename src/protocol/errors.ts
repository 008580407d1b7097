/** Errors of the hub protocol: what the hub answers, and what clients throw (docs/PROTOCOL.md, "Errors"). */
import type { DbMode } from './mode.js';
import type { JsonPosition } from './position.js';

export type ErrorCode =
  | 'bad_name'
  | 'bad_request'
  | 'bad_body'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'head_mismatch'
  | 'other_history'
  | 'other_mode'
  | 'stale_epoch'
  | 'reset'
  | 'too_large'
  | 'does_not_apply'
  | 'lease_held'
  | 'unavailable'
  | 'internal'
  | 'storage_unavailable';

export const ERROR_STATUS: Record<ErrorCode, number> = {
  bad_name: 400,
  bad_request: 400,
  bad_body: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  head_mismatch: 409,
  other_history: 409,
  other_mode: 409,
  stale_epoch: 409,
  reset: 409,
  too_large: 413,
  does_not_apply: 422,
  lease_held: 423,
  unavailable: 503,
  internal: 500,
  storage_unavailable: 503,
};

/** A lease as JSON. */
export interface JsonLease {
  epoch: number;
  expiresAt: string;
}

/** The JSON body of every error answer. */
export interface ErrorBody {
  error: ErrorCode;
  message: string;
  head?: JsonPosition;
  lease?: JsonLease;
  journal?: string;
  limit?: number;
  offset?: number;
  /** `other_mode`: the mode the database was created with. */
  mode?: DbMode;
  /** `does_not_apply`: the snapshot whose pages do not give the checksum it claims (decimal). */
  txid?: string;
}

/** An error answer from a hub (thrown by clients; built by the hub). */
export class HubError extends Error {
  readonly status: number;
  readonly body: ErrorBody;
  constructor(body: ErrorBody, status = ERROR_STATUS[body.error]) {
    super(body.message);
    this.name = 'HubError';
    this.status = status;
    this.body = body;
  }
  get code(): ErrorCode {
    return this.body.error;
  }
}

/** Parses an error answer's body (JSON) into a HubError; falls back to the status line for anything else. */
export function hubErrorFrom(status: number, text: string, context: string): HubError {
  try {
    const body = JSON.parse(text) as ErrorBody;
    if (typeof body.error === 'string' && typeof body.message === 'string') {
      return new HubError({ ...body, message: `${context}: ${body.message}` }, status);
    }
  } catch {
    // not JSON: below
  }
  const code: ErrorCode =
    status === 401
      ? 'unauthorized'
      : status === 403
        ? 'forbidden'
        : status === 413
          ? 'too_large'
          : 'unavailable';
  return new HubError({ error: code, message: `${context}: HTTP ${status} ${text.slice(0, 200)}` }, status);
}
