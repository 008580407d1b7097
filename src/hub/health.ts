/**
 * The hub's view of its storage's health: asked every second (HubStorage.health, when the storage has
 * it), kept in the routes' context for /readyz and the refusal of database requests, told to the logs
 * on every change, and given to /metrics. When the storage stops answering, open follow streams are
 * ended: their replicas reconnect and hear `503 storage_unavailable` instead of staying "live" on beats.
 */
import type pino from 'pino';
import type { HubContext } from './context.js';
import type { HubMetrics } from './metrics.js';
import type { HubStorage } from './storage.js';

/** Between two health checks (ms). */
export const HEALTH_EVERY_MS = 1000;
/**
 * How long a ready storage must keep failing its checks before the hub says it is not (ms): losing one
 * NATS node (a reconnect, a request lost with it, a leader election) is not an outage, and refusing
 * requests then would only make clients back off.
 */
export const DOWN_AFTER_MS = 3000;

/**
 * Watches `storage` into `ctx.health`; resolves after the first check. The returned function stops it.
 * A storage without `health()` is always ready and never asked.
 */
export async function watchHealth(
  ctx: HubContext,
  storage: HubStorage,
  metrics: HubMetrics,
  log: pino.Logger,
): Promise<() => void> {
  if (!storage.health) return () => undefined;
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let failingSince: number | undefined;
  let first = true;
  const check = async (): Promise<void> => {
    const h = await storage.health!().catch((e: unknown) => ({
      ready: false,
      message: (e as Error).message,
      figures: undefined,
    }));
    if (stopped) return;
    if (h.figures) metrics.setFigures(h.figures);
    const was = ctx.health;
    if (h.ready) failingSince = undefined;
    else failingSince ??= Date.now();
    const down = !h.ready && (first || !was.ready || Date.now() - failingSince! >= DOWN_AFTER_MS);
    first = false;
    if (!h.ready && !down) return; // not yet: a blip
    ctx.health = { ready: h.ready, message: h.message };
    metrics.storageReady.set(h.ready ? 1 : 0);
    if (h.ready && !was.ready) log.info('storage ready');
    else if (!h.ready && (was.ready || was.message !== h.message)) {
      log.warn({ why: h.message }, 'storage unavailable');
      if (was.ready) for (const s of ctx.streams) s.end();
    }
  };
  const loop = async (): Promise<void> => {
    await check();
    if (!stopped) {
      timer = setTimeout(() => void loop(), HEALTH_EVERY_MS);
      timer.unref();
    }
  };
  await loop();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
