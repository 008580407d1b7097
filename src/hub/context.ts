/**
 * What the hub's request handlers share (src/hub/app.ts routes, push.ts, read.ts, health.ts): the hub's
 * state, and the helpers that authorize a request and shape its errors (`{error, message}`).
 */
import type { Context } from 'hono';
import type pino from 'pino';
import { checkDbName, type ErrorBody, HubError } from '../protocol/index.js';
import { authorize, type Role } from './auth.js';
import type { ImageCache } from './image-cache.js';
import type { LeaseQueue } from './lease-queue.js';
import type { HubMetrics } from './metrics.js';
import type { HubStorage } from './storage.js';
import type { WebOptions } from './web.js';

/** Everything the routes share. */
export interface HubContext {
  storage: HubStorage;
  key: Uint8Array;
  maxBody: number;
  beatMs: number;
  log: pino.Logger;
  metrics: HubMetrics;
  images: ImageCache;
  /** Requests served at once past which new ones get 503. */
  maxActive: number;
  active: number;
  closing: boolean;
  /** Pushes in flight (close waits for them). */
  pushes: Set<Promise<unknown>>;
  /** Open read streams (close ends them). */
  streams: Set<{ end(): void }>;
  /** Bytes a follower may have queued in memory before it is served from disk instead. */
  followQueueLimit?: number;
  /** The demo web app (mycelite serve --demo). */
  web?: WebOptions;
  /** The hub's clock (ms since the epoch): write leases expire by it. */
  now: () => number;
  /** Who gets a free write lease next (shared devices that waited for it). */
  leaseQueue: LeaseQueue;
  /** Whether the storage answered at its last health check (src/hub/health.ts); always, without checks. */
  health: { ready: boolean; message?: string };
}

/** The response for a hub error: its status, its `{error, message}` body (503s say when to retry). */
export function errorResponse(e: HubError): Response {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (e.status === 503) headers['retry-after'] = '1';
  return new Response(JSON.stringify(e.body satisfies ErrorBody), { status: e.status, headers });
}

/** Authorizes the request for `role` on its `:name`, then checks the name: the name of a request. */
export async function authorizeName(ctx: HubContext, c: Context, role: Role): Promise<string> {
  const name = c.req.param('name') ?? '';
  await authorize(ctx.key, c.req.header('authorization'), name, role).catch((e: unknown) => {
    // A refused token for a malformed name is still refused as unauthorized (nothing learned).
    if (e instanceof HubError && e.code === 'forbidden' && checkDbName(name)) {
      throw new HubError({ error: 'bad_name', message: checkDbName(name)! });
    }
    throw e;
  });
  const bad = checkDbName(name);
  if (bad) throw new HubError({ error: 'bad_name', message: bad });
  return name;
}

/** The error of a request the hub cannot serve because its storage does not answer. */
export function storageUnavailable(why: string | undefined): HubError {
  return new HubError({
    error: 'storage_unavailable',
    message: `the hub runs but its storage does not answer${why ? ` (${why})` : ''}; retry, or use another hub`,
  });
}

/** A `400 bad_request` error saying what is wrong with the request. */
export function badRequest(message: string): HubError {
  return new HubError({ error: 'bad_request', message });
}

/** A `404 not_found` error for a database the hub does not have. */
export function notFound(name: string): HubError {
  return new HubError({
    error: 'not_found',
    message: `the hub has no database ${JSON.stringify(name)} (nothing was pushed to it yet)`,
  });
}
