// The writer's journal fsync on a second thread (src/node/sync-thread.ts): it flushes, reports the
// error of a failed fsync to the waiting caller, and a commit through it is in the journal.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { open } from '../src/node/index.js';
import { beginSync, syncThreadAvailable } from '../src/node/sync-thread.js';
import { assertReplay, cleanupTempDirs, tempDir } from './helpers/util.js';

after(() => cleanupTempDirs());

test('an fsync on the sync thread completes, and its error reaches the caller', () => {
  assert.ok(syncThreadAvailable(), 'worker threads are available in Node');
  const file = path.join(tempDir(), 'f');
  const fd = fs.openSync(file, 'w+');
  fs.writeSync(fd, Buffer.from('hello'));
  let fellBack = false;
  beginSync(fd, file, () => {
    fellBack = true;
  })();
  assert.equal(fellBack, false);
  fs.closeSync(fd);
  const wait = beginSync(fd, file, () => {});
  assert.throws(wait, /fsync .*\/f: EBADF/);
  // The thread is usable again after a failure.
  const fd2 = fs.openSync(file, 'r+');
  beginSync(fd2, file, () => {})();
  fs.closeSync(fd2);
});

test('commits whose journal fsync runs on the sync thread replay to the database', async () => {
  const file = path.join(tempDir(), 'db.db');
  const db = await open(file);
  db.exec('CREATE TABLE t(a)');
  const ins = db.prepare('INSERT INTO t VALUES (randomblob(500))');
  for (let i = 0; i < 50; i++) ins.run();
  db.close();
  await assertReplay(file, 'after 50 autocommit inserts');
});
