/**
 * The write lease between shared devices when one of them never stops committing: a device that waited
 * for the lease gets it before the one that just released it, so its change reaches the hub within a
 * couple of the other's rounds instead of waiting until the other pauses. Real hub over loopback HTTP,
 * real files, two devices in this process.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { type MyceliteDatabase, open } from '../src/node/index.js';
import { startTestHub, type TestHub } from './helpers/hub.js';
import { cleanupTempDirs, tempDir } from './helpers/util.js';

const cleanups: (() => unknown)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanupTempDirs();
});

async function device(h: TestHub, name: string): Promise<MyceliteDatabase> {
  const db = await open(path.join(tempDir(), `${name}.db`), {
    shared: true,
    hub: { url: h.url, db: 'busy', token: await h.token('busy', 'writer') },
  });
  cleanups.push(() => db.close());
  return db;
}

const idle = (db: MyceliteDatabase): Promise<void> =>
  (db.sync as unknown as { whenIdle(): Promise<void> }).whenIdle();

describe('shared databases: the lease when one device never pauses', { timeout: 60_000 }, () => {
  test("a device's change reaches the hub within two of the other's pushes", async () => {
    const h = await startTestHub();
    cleanups.push(() => h.close());
    const laptop = await device(h, 'laptop');
    laptop.exec('create table log(id integer primary key, who text)');
    await laptop.sync!.flush(20_000);
    const phone = await device(h, 'phone');
    await idle(phone);

    // The laptop commits every 10 ms: it has a change pending whenever one of its rounds ends.
    let laptopPushes = 0;
    let pushedTwice!: () => void;
    const going = new Promise<void>((r) => (pushedTwice = r));
    laptop.sync!.on('pushed', () => {
      if (++laptopPushes === 2) pushedTwice();
    });
    let stop = false;
    const insert = laptop.prepare("insert into log(who) values ('laptop')");
    const writing = (async () => {
      while (!stop) {
        insert.run();
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    await going;

    phone.prepare("insert into log(who) values ('phone')").run();
    const before = laptopPushes;
    try {
      await phone.sync!.flush(20_000);
    } finally {
      stop = true;
      await writing;
    }
    const meanwhile = laptopPushes - before;
    assert.ok(
      meanwhile <= 2,
      `the laptop pushed ${meanwhile} times before the phone's change reached the hub`,
    );
    // And the laptop, refused while the phone held the lease, pushes the rest once it is released.
    await laptop.sync!.flush(20_000);
  });
});
