/**
 * NATS storage's connection to the cluster (src/hub/nats-storage.ts): the connection, JetStream clients
 * with short and long per-attempt timeouts (src/hub/nats-js.ts, attemptMs), one for health probes, and
 * the lease stream, created when missing.
 */
import { type JetStreamClient, type JetStreamManager, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { attemptMs, ensureStream, FAST_ATTEMPT_MS, FAST_TRIES, retry, SLOW_ATTEMPT_MS } from './nats-js.js';
import { NatsLeases } from './nats-leases.js';
import type { NatsNames } from './nats-wire.js';

/** The connection to the cluster, once made. */
export interface NatsLink {
  nc: NatsConnection;
  js: JetStreamClient;
  /** Requests time out after FAST_ATTEMPT_MS... */
  jsm: JetStreamManager;
  /** ...or, from attempt FAST_TRIES of a request on, after SLOW_ATTEMPT_MS (nats-js.ts). */
  jsmSlow: JetStreamManager;
  /** For health probes: a short timeout. */
  probe: JetStreamManager;
  leases: NatsLeases;
  replicas: number;
  partBytes: number;
}

/** Timeout of a health probe (ms). */
const PROBE_MS = 1500;

/**
 * Connects to `servers` and reaches JetStream within `jsMs`; creates the lease stream when missing.
 * `closed` stops it (the storage was closed meanwhile). `step` hears what it is waiting for at each step,
 * so a hub that waits can say why (a cluster reached without a quorum waits in the second step).
 */
export async function openLink(
  servers: string[],
  names: NatsNames,
  options: { replicas?: number; partBytes?: number },
  timeoutMs: number,
  jsMs: number,
  closed: () => boolean,
  step: (what: string) => void = () => undefined,
): Promise<NatsLink> {
  step(`connecting to NATS at ${servers.join(',')}`);
  const nc = await connect({
    servers,
    name: 'mycelite-hub',
    maxReconnectAttempts: -1,
    timeout: 5000,
  }).catch((e: unknown) => {
    throw new Error(
      `cannot connect to NATS at ${servers.join(',')}: ${(e as Error).message}; start nats-server with -js, or fix --storage`,
    );
  });
  try {
    const replicas = options.replicas ?? (nc.info?.cluster ? 3 : 1);
    const at = `connected to NATS at ${nc.getServer()}`;
    step(`${at}; waiting for JetStream to answer (a cluster answers once a majority of its nodes are up)`);
    await retry(jsMs, 'reach JetStream', (n) => {
      if (closed()) throw new Error('the hub storage is closed');
      return jetstreamManager(nc, { timeout: attemptMs(n) });
    });
    const jsmSlow = await jetstreamManager(nc, { timeout: SLOW_ATTEMPT_MS, checkAPI: false });
    const jsm = await jetstreamManager(nc, { timeout: FAST_ATTEMPT_MS, checkAPI: false });
    const js = jetstream(nc, { timeout: SLOW_ATTEMPT_MS });
    const jsmAt = (n: number): JetStreamManager => (n < FAST_TRIES ? jsm : jsmSlow);
    step(
      `${at} and JetStream answers; waiting to create the lease stream ${names.leaseStream} with ${replicas} replica(s) (a cluster places them once a majority of its nodes are up)`,
    );
    await ensureStream(jsmAt, jsMs, {
      name: names.leaseStream,
      subjects: [`${names.leaseSubject('x').slice(0, -1)}>`],
      num_replicas: replicas,
      max_msgs_per_subject: 1,
    });
    const max = nc.info?.max_payload ?? 1 << 20;
    const partBytes = Math.min(options.partBytes ?? max, max - 8192);
    if (partBytes < 1024) throw new Error(`the NATS max_payload ${max} is too small for snapshots`);
    if (closed()) throw new Error('the hub storage is closed');
    const probe = await jetstreamManager(nc, { timeout: PROBE_MS, checkAPI: false });
    const leases = new NatsLeases(js, jsmAt, names, timeoutMs);
    return { nc, js, jsm, jsmSlow, probe, leases, replicas, partBytes };
  } catch (e) {
    await nc.close().catch(() => undefined);
    throw e;
  }
}
