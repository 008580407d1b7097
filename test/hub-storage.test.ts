/** The HubStorage conformance suite against the filesystem storage. */

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { it } from 'node:test';
import { loadHash } from '../src/format/index.js';
import { FsStorage } from '../src/hub/index.js';
import { checkEpoch } from '../src/hub/lease.js';
import { EMPTY_POSITION, type EncodedSnapshot, type HubError } from '../src/protocol/index.js';
import { concatBytes, makeHistory, sampleStatements } from './helpers/hub.js';
import { storageConformance } from './helpers/storage-conformance.js';

for (const [name, options] of [
  ['filesystem', {}],
  // Every database closed as soon as it is idle, and all but the last used one: each request reopens.
  ['filesystem, one database open at a time', { maxOpen: 1, idleMs: 20 }],
] as const)
  storageConformance(name, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-fs-storage-'));
    return {
      open: () => FsStorage.open(dir, options),
      tearTail: async (db, bytes) => fs.appendFileSync(path.join(dir, 'dbs', db, 'journal'), bytes),
      storeBehind: async (db, _journalId, _base, snapshots) =>
        fs.appendFileSync(path.join(dir, 'dbs', db, 'journal'), concatBytes(snapshots.map((s) => s.bytes))),
      headDir: (db) => path.join(dir, 'dbs', db),
      cleanup: async () => fs.rmSync(dir, { recursive: true, force: true }),
    };
  });

it('FsStorage: keeps at most maxOpen databases open, closes idle ones, and each reopens as it was', async () => {
  await loadHash();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-fs-open-'));
  /** This process's open files under `dir`. */
  const openFiles = (): number =>
    fs.readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith(dir);
      } catch {
        return false; // closed meanwhile
      }
    }).length;
  try {
    const h = await makeHistory(path.join(dir, 'a.db'), sampleStatements(4));
    const snaps = h.snapshots as EncodedSnapshot[];
    const s = await FsStorage.open(path.join(dir, 'data'), { maxOpen: 4, idleMs: 200 });
    try {
      const dbs = Array.from({ length: 30 }, (_, i) => `db${i}`);
      for (const db of dbs)
        assert.ok((await s.append(db, EMPTY_POSITION, h.journalId, snaps.slice(0, 2))).ok);
      // The data directory's lock, and five files per open database (a limit of 1,024 ran out at ~200).
      assert.ok(openFiles() <= 1 + 4 * 5, `${openFiles()} files open for 30 databases`);
      for (const db of dbs) {
        const state = (await s.state(db))!;
        assert.equal(state.head.txid, 2n);
        assert.ok((await s.append(db, state.head, h.journalId, snaps.slice(2, 4))).ok, db);
        const bytes: Uint8Array[] = [];
        for await (const chunk of s.read(db, 0n, 4n)) bytes.push(chunk);
        assert.deepEqual(concatBytes(bytes), concatBytes(snaps.slice(0, 4).map((x) => x.bytes)));
      }
      const deadline = Date.now() + 10_000;
      while (openFiles() > 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.equal(openFiles(), 1, 'idle databases are closed: only the data directory’s lock is open');
      assert.equal((await s.state('db7'))!.head.txid, 4n, 'and reopen as they were');
    } finally {
      await s.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
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

it('FsStorage: a database from before modes (a journal without a mode file) is single-writer', async () => {
  await loadHash();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-fs-old-mode-'));
  try {
    const h = await makeHistory(path.join(dir, 'a.db'), sampleStatements(3));
    const data = path.join(dir, 'data');
    let s = await FsStorage.open(data);
    assert.ok((await s.append('x', EMPTY_POSITION, h.journalId, h.snapshots.slice(0, 1))).ok);
    await s.close();
    fs.rmSync(path.join(data, 'dbs', 'x', 'mode')); // as a hub from before modes left it
    s = await FsStorage.open(data);
    try {
      const state = (await s.state('x'))!;
      assert.equal(state.mode, 'single');
      const shared = await s.append('x', state.head, h.journalId, h.snapshots.slice(1), undefined, 'shared');
      assert.equal(!shared.ok && shared.reason, 'other_mode');
      assert.ok((await s.append('x', state.head, h.journalId, h.snapshots.slice(1))).ok);
      assert.equal(fs.existsSync(path.join(data, 'dbs', 'x', 'mode')), false, 'nothing is written for it');
    } finally {
      await s.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

it('FsStorage: the mode is stored before the journal: no database without its mode, a leftover mode is replaced', async () => {
  await loadHash();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-fs-mode-order-'));
  try {
    const h = await makeHistory(path.join(dir, 'a.db'), sampleStatements(2));
    const data = path.join(dir, 'data');
    const s = await FsStorage.open(data);
    try {
      // The mode cannot be written (a directory stands in its place): the database is not created.
      fs.mkdirSync(path.join(data, 'dbs', 'x', 'mode', 'blocker'), { recursive: true });
      await assert.rejects(s.append('x', EMPTY_POSITION, h.journalId, h.snapshots, undefined, 'shared'));
      assert.equal(
        fs.existsSync(path.join(data, 'dbs', 'x', 'journal')),
        false,
        'no journal without its mode',
      );
      assert.equal(await s.state('x'), undefined);
      assert.deepEqual(await s.list(), []);
      // A creation that died after its mode and before its journal left `shared`: no database; the next
      // creation stores its own mode.
      fs.rmSync(path.join(data, 'dbs', 'x', 'mode'), { recursive: true });
      fs.writeFileSync(path.join(data, 'dbs', 'x', 'mode'), 'shared\n');
      assert.equal(await s.state('x'), undefined);
      const r = await s.append('x', EMPTY_POSITION, h.journalId, h.snapshots);
      assert.ok(r.ok);
      assert.equal(r.state.mode, 'single');
      assert.equal(fs.readFileSync(path.join(data, 'dbs', 'x', 'mode'), 'utf8'), 'single\n');
    } finally {
      await s.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

it('FsStorage: a damaged mode file is an error saying what to do, never a guess', async () => {
  await loadHash();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-fs-mode-bad-'));
  try {
    const h = await makeHistory(path.join(dir, 'a.db'), sampleStatements(2));
    const data = path.join(dir, 'data');
    let s = await FsStorage.open(data);
    assert.ok((await s.append('x', EMPTY_POSITION, h.journalId, h.snapshots, undefined, 'shared')).ok);
    await s.close();
    const file = path.join(data, 'dbs', 'x', 'mode');
    fs.writeFileSync(file, 'shraed\n');
    s = await FsStorage.open(data);
    try {
      await assert.rejects(
        s.state('x'),
        /mode file of database x .* not "single" or "shared": write the mode/,
      );
      fs.writeFileSync(file, 'shared\n'); // repaired by hand
      assert.equal((await s.state('x'))!.mode, 'shared');
    } finally {
      await s.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

it('FsStorage: a shared database stays shared after a compaction rewrote its journal', async () => {
  await loadHash();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-fs-mode-compact-'));
  try {
    const h = await makeHistory(path.join(dir, 'a.db'), sampleStatements(8));
    const data = path.join(dir, 'data');
    let s = await FsStorage.open(data, { compaction: false });
    const r = await s.append('x', EMPTY_POSITION, h.journalId, h.snapshots.slice(0, 6), undefined, 'shared');
    assert.ok(r.ok);
    assert.equal((await s.compact('x'))?.end?.txid, 5n, 'compacted');
    const state = (await s.state('x'))!;
    assert.deepEqual([state.base.txid, state.mode], [5n, 'shared']);
    await s.close();
    s = await FsStorage.open(data, { compaction: false });
    try {
      assert.equal((await s.state('x'))!.mode, 'shared');
      const single = await s.append(
        'x',
        r.state.head,
        h.journalId,
        h.snapshots.slice(6),
        undefined,
        'single',
      );
      assert.equal(!single.ok && single.reason, 'other_mode');
    } finally {
      await s.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
