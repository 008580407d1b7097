/**
 * The hub's HTTP routes (docs/PROTOCOL.md, "Endpoints") as a hono app. Every `/v1` request is
 * authorized first (before its name is used or its body is read); every error is `{error, message}`.
 */

import { type Context, Hono } from 'hono';
import { toHex } from '../format/index.js';
import {
  API_PREFIX,
  DEFAULT_LEASE_TTL_MS,
  HubError,
  MAX_LEASE_TTL_MS,
  MIN_LEASE_TTL_MS,
  toJsonPosition,
} from '../protocol/index.js';
import { verifyToken } from './auth.js';
import {
  authorizeName,
  badRequest,
  errorResponse,
  type HubContext,
  notFound,
  storageUnavailable,
} from './context.js';
import { StoredCopyDamagedError } from './heads.js';
import { handleHistory } from './history-file.js';
import { activeLease, jsonLease, releaseLease, takeLease } from './lease.js';
import { handlePush } from './push.js';
import { handleRead } from './read.js';
import { StorageUnavailableError } from './storage.js';
import { mountWeb } from './web.js';

export function createApp(ctx: HubContext): Hono {
  const app = new Hono();

  app.use('*', async (c, next) => {
    const monitoring = MONITORING.has(c.req.path);
    if (ctx.closing && !monitoring) {
      return errorResponse(
        new HubError({ error: 'unavailable', message: 'the hub is shutting down; retry' }),
      );
    }
    const busy = ctx.active + ctx.streams.size;
    if (busy >= ctx.maxActive && !monitoring) {
      return errorResponse(
        new HubError({
          error: 'unavailable',
          message: `the hub serves ${busy} requests, its limit; retry later`,
        }),
      );
    }
    await refuseDotSegments(ctx, c);
    if (!ctx.health.ready && c.req.path.startsWith(`${API_PREFIX}/`)) {
      // Answered at once (not after the storage's own timeouts): clients go on to another hub.
      return errorResponse(storageUnavailable(ctx.health.message));
    }
    ctx.active++;
    const started = performance.now();
    try {
      await next();
    } finally {
      ctx.active--;
      // Never the query string's secrets or any header: method, path, status, time.
      const status = c.res.status;
      const line = {
        method: c.req.method,
        path: c.req.path,
        status,
        ms: Math.round(performance.now() - started),
      };
      if (status >= 500) ctx.log.error(line, 'request failed');
      else if (status >= 400) ctx.log.info(line, 'request refused');
      else ctx.log.debug(line, 'request');
    }
  });

  // Liveness: the process serves HTTP. Readiness (and /healthz, what load balancers ask): it can also
  // serve databases, i.e. it is not shutting down and its storage answers.
  app.get('/livez', (c) => c.json({ ok: true }));
  const ready = (c: Context): Response => {
    if (ctx.closing) return c.json({ ok: false, closing: true }, 503);
    if (!ctx.health.ready)
      return c.json({ ok: false, storage: 'unavailable', message: ctx.health.message ?? '' }, 503);
    return c.json({ ok: true, storage: 'ready' });
  };
  app.get('/readyz', ready);
  app.get('/healthz', ready);

  app.get('/metrics', async (c) =>
    c.body(await ctx.metrics.text(), 200, { 'content-type': ctx.metrics.contentType }),
  );

  const db = `${API_PREFIX}/db/:name`;

  app.get(db, async (c) => {
    const name = await authorizeName(ctx, c, 'reader');
    const state = await ctx.storage.state(name);
    if (!state) throw notFound(name);
    const lease = activeLease(await ctx.storage.getLease(name), ctx.now());
    return c.json({
      name,
      journal: toHex(state.journalId),
      head: toJsonPosition(state.head),
      mode: state.mode,
      lease,
    });
  });

  app.post(`${db}/lease`, async (c) => {
    const name = await authorizeName(ctx, c, 'writer');
    const body = await smallJson(c);
    const holder = body.holder;
    const ttlMs = body.ttlMs ?? DEFAULT_LEASE_TTL_MS;
    const wait = body.wait ?? false;
    if (typeof holder !== 'string' || holder.length < 1 || holder.length > 64) {
      throw badRequest('the lease body needs "holder": a string of 1-64 characters');
    }
    if (typeof wait !== 'boolean') throw badRequest('"wait" must be true or false');
    if (
      !Number.isInteger(ttlMs) ||
      (ttlMs as number) < MIN_LEASE_TTL_MS ||
      (ttlMs as number) > MAX_LEASE_TTL_MS
    ) {
      throw badRequest(`"ttlMs" must be an integer from ${MIN_LEASE_TTL_MS} to ${MAX_LEASE_TTL_MS}`);
    }
    const lease = await takeLease(ctx.storage, name, holder, ttlMs as number, ctx.now, {
      queue: ctx.leaseQueue,
      wait,
    });
    ctx.log.info({ db: name, epoch: lease.epoch }, 'lease taken');
    return c.json({ ...jsonLease(lease), holder: lease.holder });
  });

  app.delete(`${db}/lease`, async (c) => {
    const name = await authorizeName(ctx, c, 'writer');
    const epoch = Number(c.req.query('epoch'));
    if (!Number.isSafeInteger(epoch) || epoch < 1)
      throw badRequest('DELETE lease needs ?epoch=E (a positive integer)');
    await releaseLease(ctx.storage, name, epoch);
    ctx.log.info({ db: name, epoch }, 'lease released');
    return c.body(null, 204);
  });

  app.post(`${db}/snapshots`, async (c) => {
    const run = handlePush(ctx, c);
    ctx.pushes.add(run);
    try {
      return await run;
    } finally {
      ctx.pushes.delete(run);
    }
  });

  app.get(`${db}/snapshots`, (c) => handleRead(ctx, c));

  app.get(`${db}/history`, (c) => handleHistory(ctx, c));

  if (ctx.web) mountWeb(app, ctx.web, ctx.key);

  app.notFound(() =>
    errorResponse(
      new HubError({ error: 'not_found', message: 'no such endpoint (see docs/PROTOCOL.md)' }, 404),
    ),
  );

  app.onError((e, c) => {
    if (e instanceof HubError) return errorResponse(e);
    if (e instanceof StorageUnavailableError) {
      ctx.log.warn({ err: e.message, method: c.req.method, path: c.req.path }, 'storage unavailable');
      return errorResponse(storageUnavailable(e.message));
    }
    if (e instanceof StoredCopyDamagedError) {
      // Never wrong bytes: the database is not served until its copy is repaired (logged loudly).
      ctx.log.error({ err: e, method: c.req.method, path: c.req.path }, 'damaged stored copy');
      return errorResponse(new HubError({ error: 'unavailable', message: e.message }));
    }
    ctx.log.error({ err: e, method: c.req.method, path: c.req.path }, 'request failed');
    return errorResponse(
      new HubError({ error: 'internal', message: `the hub failed: ${(e as Error).message}` }),
    );
  });

  return app;
}

/** Paths that answer while the hub shuts down, is over its connection limit, or its storage is down. */
const MONITORING = new Set(['/healthz', '/livez', '/readyz', '/metrics']);

/**
 * URL parsing turns `/v1/db/../x` (or `%2e%2e`) into another path before routing; the raw request line
 * still shows it. Such a request is refused as `400 bad_name` (after its token is checked), never routed.
 */
async function refuseDotSegments(ctx: HubContext, c: Context): Promise<void> {
  const rawUrl = (c.env as { incoming?: { url?: string } } | undefined)?.incoming?.url ?? '';
  if (!rawUrl.startsWith(`${API_PREFIX}/`)) return;
  const segments = rawUrl.split('?')[0]!.split('/');
  const dots = segments.some((s) => {
    const d = s.replace(/%2e/gi, '.');
    return d === '.' || d === '..';
  });
  if (!dots) return;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(c.req.header('authorization') ?? '');
  if (!m)
    throw new HubError({ error: 'unauthorized', message: 'no token: send Authorization: Bearer TOKEN' });
  await verifyToken(ctx.key, m[1]!);
  throw new HubError({ error: 'bad_name', message: 'a database name may not be "." or ".."' });
}

/** Reads a small JSON body (≤ 4 KiB). */
async function smallJson(c: Context): Promise<Record<string, unknown>> {
  const length = Number(c.req.header('content-length') ?? 'NaN');
  if (!(length <= 4096)) throw badRequest('send a JSON body of at most 4 KiB with a Content-Length');
  try {
    const j = await c.req.json();
    if (typeof j === 'object' && j !== null && !Array.isArray(j)) return j as Record<string, unknown>;
  } catch {
    // below
  }
  throw badRequest('the body is not a JSON object');
}
