/**
 * The write lease when several writers ask for it at once on a database the hub has not seen yet (as
 * `npm start`'s two devices do at their start): one of them gets it, every other one is refused with
 * 423 until it is released. Real hub over loopback HTTP, real files.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { HubClient } from '../src/client/hub-client.js';
import { HubError } from '../src/protocol/index.js';
import { startTestHub, type TestHub } from './helpers/hub.js';
import { cleanupTempDirs } from './helpers/util.js';

let t: TestHub;
before(async () => {
  t = await startTestHub();
});
after(async () => {
  await t.close();
  cleanupTempDirs();
});

/** Asks for the lease of `db` as `writers` holders at once: how many got it, and their epochs. */
async function askAtOnce(db: string, writers: number): Promise<number[]> {
  const client = new HubClient({ url: t.url, db, token: await t.token(db, 'writer') });
  const asks = await Promise.allSettled(
    Array.from({ length: writers }, (_, i) => client.takeLease(`writer-${i}`, 30_000)),
  );
  const epochs: number[] = [];
  for (const a of asks) {
    if (a.status === 'fulfilled') epochs.push(a.value.epoch);
    else {
      assert.ok(a.reason instanceof HubError, String(a.reason));
      assert.equal(a.reason.code, 'lease_held', `${db}: ${a.reason.message}`);
    }
  }
  return epochs;
}

describe('hub: the write lease asked for at once', { timeout: 60_000 }, () => {
  it('after a restart, goes to one writer of a database whose lease was released', async () => {
    const dbs = Array.from({ length: 40 }, (_, i) => `restart-${i}`);
    for (const db of dbs) {
      const client = new HubClient({ url: t.url, db, token: await t.token(db, 'writer') });
      await client.releaseLease((await client.takeLease('first', 30_000)).epoch);
    }
    await t.close();
    t = await startTestHub(t.dir);
    for (const db of dbs) {
      const epochs = await askAtOnce(db, 8);
      assert.deepEqual(epochs, [2], `${db}: granted to ${epochs.length} writers at once, epochs ${epochs}`);
    }
  });

  it('goes to one writer of a new database; the others get 423 lease_held', async () => {
    for (let round = 0; round < 40; round++) {
      const db = `new-${round}`;
      const epochs = await askAtOnce(db, 8);
      assert.deepEqual(epochs, [1], `${db}: granted to ${epochs.length} writers at once, epochs ${epochs}`);
    }
  });
});
