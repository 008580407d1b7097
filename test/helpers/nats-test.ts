/**
 * What the NATS test files share: the skip when nats-server is missing, their time limits (several times
 * what a test takes on a loaded 2-CPU machine, so that a hang fails naming what hung instead of running
 * into CI's limit), and the after-hook that leaves nothing running.
 */
import { killSpawnedHubs } from './hub.js';
import { haveNatsServer, stopNatsClusters } from './nats-cluster.js';
import { cleanupTempDirs, runCleanups } from './util.js';

export const natsSkip = haveNatsServer()
  ? false
  : 'nats-server is not installed (apt-get install nats-server)';
/** One test (about 25 s each when the machine is loaded). */
export const TEST_MS = 240_000;
/** One before/after hook. */
export const HOOK_MS = 120_000;
/** One close in an after-hook (a writer releases its lease within 2 s). */
export const CLOSE_MS = 20_000;

/**
 * The after-hook of a NATS test file: its cleanups (each given CLOSE_MS), then every hub and nats-server
 * this process started — also those a failed or timed-out test had not handed over yet — and the
 * temporary directories.
 */
export async function afterNatsTests(cleanups: (() => unknown)[]): Promise<void> {
  try {
    await runCleanups(cleanups, CLOSE_MS);
  } finally {
    await killSpawnedHubs();
    await stopNatsClusters();
    cleanupTempDirs();
  }
}
