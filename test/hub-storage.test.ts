/** The HubStorage conformance suite against the filesystem storage. */

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { it } from 'node:test';
import { loadHash } from '../src/format/index.js';
import { FsStorage } from '../src/hub/index.js';
import { checkEpoch } from '../src/hub/lease.js';
import type { EncodedSnapshot } from '../src/hub/storage.js';
import { EMPTY_POSITION, type HubError } from '../src/protocol/index.js';
import { concatBytes, makeHistory, sampleStatements } from './helpers/hub.js';
import { storageConformance } from './helpers/storage-conformance.js';

storageConformance('filesystem', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-fs-storage-'));
  return {
    open: () => FsStorage.open(dir),
    tearTail: async (db, bytes) => fs.appendFileSync(path.join(dir, 'dbs', db, 'journal'), bytes),
    storeBehind: async (db, _journalId, _base, snapshots) =>
      fs.appendFileSync(path.join(dir, 'dbs', db, 'journal'), concatBytes(snapshots.map((s) => s.bytes))),
    headDir: (db) => path.join(dir, 'dbs', db),
    cleanup: async () => fs.rmSync(dir, { recursive: true, force: true }),
  };
});

it('FsStorage: one process at a time per data directory', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-fs-lock-'));
  try {
    const first = await FsStorage.open(dir);
    await assert.rejects(FsStorage.open(dir), /another hub process uses the data directory/);
    await first.close();
    const again = await FsStorage.open(dir);
    await again.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

it('FsStorage: a failed append stays invisible to a read that reopens the journal meanwhile', async () => {
  await loadHash();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-fs-failed-append-'));
  try {
    const h = await makeHistory(path.join(dir, 'a.db'), sampleStatements(3));
    const s = await FsStorage.open(path.join(dir, 'data'));
    try {
      const [s1, s2] = h.snapshots as [EncodedSnapshot, EncodedSnapshot];
      await s.append('x', EMPTY_POSITION, h.journalId, [s1]);
      const head = (await s.state('x'))!.head;
      // s2 is written whole, then s1 (which does not continue s2) fails the append: nothing may stay.
      let reading = true;
      const reads: Promise<unknown>[] = [];
      const poll = (): void => {
        if (!reading) return;
        reads.push(s.snapshotAt('x', 1n).catch(() => undefined));
        setImmediate(poll);
      };
      poll();
      try {
        await assert.rejects(s.append('x', head, h.journalId, [s2, s1]));
      } finally {
        reading = false;
      }
      await Promise.all(reads);
      assert.deepEqual(
        (await s.state('x'))!.head,
        head,
        'the hub head is still the one before the failed append',
      );
      assert.equal(await s.snapshotAt('x', 2n), undefined);
    } finally {
      await s.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

it('FsStorage: an append checks its lease in the same order as lease changes (a takeover queued first fences it)', async () => {
  await loadHash();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-fs-fence-'));
  try {
    const h = await makeHistory(path.join(dir, 'a.db'), sampleStatements(3));
    const s = await FsStorage.open(path.join(dir, 'data'));
    try {
      const [s1, s2] = h.snapshots as [EncodedSnapshot, EncodedSnapshot];
      const l1 = { holder: 'w1', epoch: 1, expiresAt: Date.now() - 1 };
      assert.equal(await s.casLease('x', undefined, l1), true);
      await s.append('x', EMPTY_POSITION, h.journalId, [s1]);
      const head = (await s.state('x'))!.head;
      // w2 takes the expired lease while w1's push (epoch 1) is about to append.
      const takeover = s.casLease('x', l1, { holder: 'w2', epoch: 2, expiresAt: Date.now() + 30_000 });
      const push = s.append('x', head, h.journalId, [s2], () => checkEpoch(s, 'x', 1));
      assert.equal(await takeover, true);
      await assert.rejects(push, (e: HubError) => e.code === 'stale_epoch');
      assert.deepEqual((await s.state('x'))!.head, head, 'the fenced push stored nothing');
    } finally {
      await s.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
