/**
 * The write lease (docs/PROTOCOL.md, "Single writer"): one holder at a time per database, with an expiry
 * and an epoch (fencing token) that only goes up. Every change is a compare-and-set on the storage, so two
 * writers racing for the lease cannot both win. A released lease keeps its epoch with holder '' and
 * expiresAt 0.
 */
import { DEFAULT_LEASE_TTL_MS, HubError, type JsonLease } from '../protocol/index.js';
import type { LeaseQueue } from './lease-queue.js';
import type { HubStorage, StoredLease } from './storage.js';

/** A lease as JSON (its holder is not a secret, but only the caller learns its own). */
export function jsonLease(l: StoredLease): JsonLease {
  return { epoch: l.epoch, expiresAt: new Date(l.expiresAt).toISOString() };
}

/** The lease as `GET /v1/db/{name}` shows it: null when free (never taken, expired or released). */
export function activeLease(l: StoredLease | undefined, now = Date.now()): JsonLease | null {
  return l && l.holder !== '' && l.expiresAt > now ? jsonLease(l) : null;
}

const TRIES = 5;

/**
 * Takes or renews the lease for `holder` (see PROTOCOL.md); throws HubError 423 lease_held. With `fair`, a
 * free lease goes to the writer that waited for it first (src/hub/lease-queue.ts), and `holder`, refused,
 * takes a place if it said it will ask again (`wait`).
 */
export async function takeLease(
  storage: HubStorage,
  db: string,
  holder: string,
  ttlMs = DEFAULT_LEASE_TTL_MS,
  clock: () => number = Date.now,
  fair?: { queue: LeaseQueue; wait: boolean },
): Promise<StoredLease> {
  for (let i = 0; i < TRIES; i++) {
    const now = clock();
    const current = await storage.getLease(db);
    const live = current && current.holder !== '' && current.expiresAt > now;
    if (live && current.holder !== holder) {
      if (fair?.wait) fair.queue.refused(db, holder, now);
      throw new HubError({
        error: 'lease_held',
        message: `another writer holds the write lease until ${new Date(current.expiresAt).toISOString()}; stop the other writer or wait for the lease to expire`,
        lease: jsonLease(current),
      });
    }
    const first = live ? undefined : fair?.queue.next(db, now);
    if (first !== undefined && first !== holder) {
      if (fair?.wait) fair.queue.refused(db, holder, now);
      throw new HubError({
        error: 'lease_held',
        message:
          'the write lease is free but goes to another writer that waited for it; try again in a moment',
        ...(current ? { lease: jsonLease(current) } : {}),
      });
    }
    const next: StoredLease = {
      holder,
      epoch: live ? current.epoch : (current?.epoch ?? 0) + 1,
      expiresAt: now + ttlMs,
      ttlMs,
    };
    if (await storage.casLease(db, current, next)) {
      fair?.queue.granted(db, holder);
      return next;
    }
  }
  throw new HubError({ error: 'unavailable', message: 'the lease is changing too fast; retry' });
}

/** Releases the lease of `epoch`: 204-worthy when released or already free; throws 409 stale_epoch. */
export async function releaseLease(storage: HubStorage, db: string, epoch: number): Promise<void> {
  for (let i = 0; i < TRIES; i++) {
    const current = await storage.getLease(db);
    if (!current) return; // never taken: nothing to release
    if (current.epoch !== epoch) throw staleEpoch(current, epoch);
    if (current.holder === '') return;
    if (await storage.casLease(db, current, { holder: '', epoch, expiresAt: 0 })) return;
  }
  throw new HubError({ error: 'unavailable', message: 'the lease is changing too fast; retry' });
}

/**
 * Checks that `epoch` is the current lease's and renews it (a push renews the lease). A lease that
 * expired but was not taken by anyone since is still current; a released one is not.
 */
export async function checkAndRenew(
  storage: HubStorage,
  db: string,
  epoch: number,
  clock: () => number = Date.now,
): Promise<void> {
  for (let i = 0; i < TRIES; i++) {
    const current = await storage.getLease(db);
    if (!current || current.epoch !== epoch || current.holder === '') throw staleEpoch(current, epoch);
    const now = clock();
    const ttlMs = current.ttlMs ?? DEFAULT_LEASE_TTL_MS;
    // Renew only when a noticeable part of the TTL has passed, to spare a write per push.
    if (current.expiresAt - now > (ttlMs * 2) / 3) return;
    if (await storage.casLease(db, current, { ...current, expiresAt: now + ttlMs })) return;
  }
  throw new HubError({ error: 'unavailable', message: 'the lease is changing too fast; retry' });
}

/** Checks, without renewing, that `epoch` is still the current lease's. */
export async function checkEpoch(storage: HubStorage, db: string, epoch: number): Promise<void> {
  const current = await storage.getLease(db);
  if (!current || current.epoch !== epoch || current.holder === '') throw staleEpoch(current, epoch);
}

function staleEpoch(current: StoredLease | undefined, epoch: number): HubError {
  const now = current
    ? current.holder === ''
      ? `lease ${current.epoch} was released`
      : `the current lease is epoch ${current.epoch}`
    : 'no writer has taken the lease';
  return new HubError({
    error: 'stale_epoch',
    message: `epoch ${epoch} is not the current write lease (${now}); take the lease again before pushing`,
    ...(current ? { lease: jsonLease(current) } : {}),
  });
}
