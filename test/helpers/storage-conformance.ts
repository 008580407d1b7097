/**
 * The conformance suite of HubStorage (src/hub/storage.ts): every backend (filesystem now, NATS JetStream
 * later) runs it. Snapshots are real ones, written by the real writer.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { EncodedSnapshot, HubStorage, StoredLease } from '../../src/hub/index.js';
import { EMPTY_POSITION, type WirePosition } from '../../src/protocol/index.js';
import { concatBytes, type History, makeHistory, sampleStatements } from './hub.js';

/** One backing store: open it (again, on the same data), break it like a crash would, clean it up. */
export interface StorageFixture {
  open(): Promise<HubStorage>;
  /** Appends `bytes` to the stored journal of `db` behind the storage's back (a torn append). */
  tearTail(db: string, bytes: Uint8Array): Promise<void>;
  cleanup(): Promise<void>;
}

const after0 = (s: EncodedSnapshot): WirePosition => ({
  txid: s.header.txid,
  checksum: s.header.postChecksum,
});

async function readAll(st: HubStorage, db: string, from: bigint, upTo: bigint): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const chunk of st.read(db, from, upTo)) parts.push(chunk);
  return concatBytes(parts);
}

export function storageConformance(name: string, make: () => Promise<StorageFixture>): void {
  describe(`HubStorage conformance: ${name}`, () => {
    let h: History;
    let other: History;
    let dir: string;
    const fixtures: StorageFixture[] = [];
    const fresh = async (): Promise<StorageFixture> => {
      const f = await make();
      fixtures.push(f);
      return f;
    };

    before(async () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-conf-'));
      h = await makeHistory(path.join(dir, 'a.db'), sampleStatements(8, 3000));
      other = await makeHistory(path.join(dir, 'b.db'), sampleStatements(3));
      assert.equal(h.snapshots.length, 8);
    });
    after(async () => {
      for (const f of fixtures) await f.cleanup();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    it('is empty at first', async () => {
      const st = await (await fresh()).open();
      assert.deepEqual(await st.list(), []);
      assert.equal(await st.state('app'), undefined);
      assert.equal(await st.getLease('app'), undefined);
      assert.equal(await st.snapshotAt('app', 1n), undefined);
      await st.close();
    });

    it('creates a database at its first append, and appends conditionally on the head', async () => {
      const st = await (await fresh()).open();
      const s = h.snapshots;
      const r1 = await st.append('app', EMPTY_POSITION, h.journalId, s.slice(0, 3));
      assert.ok(r1.ok);
      assert.deepEqual(r1.state.head, after0(s[2]!));
      assert.deepEqual(r1.state.base, EMPTY_POSITION);
      assert.deepEqual([...r1.state.journalId], [...h.journalId]);
      assert.equal(r1.state.headTimestamp, s[2]!.header.timestamp);
      assert.deepEqual(await st.list(), ['app']);
      // a stale head is refused and changes nothing
      const stale = await st.append('app', after0(s[0]!), h.journalId, s.slice(1, 2));
      assert.equal(stale.ok, false);
      assert.equal(!stale.ok && stale.reason, 'head_mismatch');
      assert.deepEqual((await st.state('app'))!.head, after0(s[2]!));
      // another history is refused
      const alien = await st.append('app', after0(s[2]!), other.journalId, s.slice(3, 4));
      assert.equal(!alien.ok && alien.reason, 'other_history');
      // the head continues
      const r2 = await st.append('app', after0(s[2]!), h.journalId, s.slice(3));
      assert.ok(r2.ok);
      assert.deepEqual(r2.state.head, after0(s[7]!));
      // another database is independent
      const r3 = await st.append('b', EMPTY_POSITION, other.journalId, other.snapshots);
      assert.ok(r3.ok);
      assert.deepEqual(await st.list(), ['app', 'b']);
      await st.close();
    });

    it('reads exactly the bytes after any txid, up to any txid, and each snapshot header', async () => {
      const st = await (await fresh()).open();
      await st.append('app', EMPTY_POSITION, h.journalId, h.snapshots);
      const n = h.snapshots.length;
      for (let a = 0; a <= n; a++) {
        for (let u = a; u <= n; u++) {
          const got = await readAll(st, 'app', BigInt(a), BigInt(u));
          const want = concatBytes(h.snapshots.slice(a, u).map((s) => s.bytes));
          assert.deepEqual(got, want, `read after ${a} up to ${u}`);
        }
      }
      for (const s of h.snapshots) assert.deepEqual(await st.snapshotAt('app', s.header.txid), s.header);
      assert.equal(await st.snapshotAt('app', BigInt(n + 1)), undefined);
      assert.equal(await st.snapshotAt('app', 0n), undefined);
      await st.close();
    });

    it('keeps everything across close and reopen', async () => {
      const f = await fresh();
      let st = await f.open();
      await st.append('app', EMPTY_POSITION, h.journalId, h.snapshots.slice(0, 5));
      const before = await st.state('app');
      await st.close();
      st = await f.open();
      assert.deepEqual(await st.state('app'), before);
      assert.deepEqual(
        await readAll(st, 'app', 0n, 5n),
        concatBytes(h.snapshots.slice(0, 5).map((s) => s.bytes)),
      );
      const r = await st.append('app', after0(h.snapshots[4]!), h.journalId, h.snapshots.slice(5));
      assert.ok(r.ok);
      await st.close();
      st = await f.open();
      assert.deepEqual(await readAll(st, 'app', 0n, 8n), concatBytes(h.snapshots.map((s) => s.bytes)));
      await st.close();
    });

    it('cuts a torn tail (a crash inside an append) when it reopens', async () => {
      const f = await fresh();
      let st = await f.open();
      await st.append('app', EMPTY_POSITION, h.journalId, h.snapshots.slice(0, 4));
      await st.close();
      const next = h.snapshots[4]!.bytes;
      await f.tearTail('app', next.subarray(0, Math.floor(next.length / 2)));
      st = await f.open();
      assert.deepEqual((await st.state('app'))!.head, after0(h.snapshots[3]!));
      assert.deepEqual(
        await readAll(st, 'app', 0n, 4n),
        concatBytes(h.snapshots.slice(0, 4).map((s) => s.bytes)),
      );
      const r = await st.append('app', after0(h.snapshots[3]!), h.journalId, h.snapshots.slice(4));
      assert.ok(r.ok);
      assert.deepEqual(
        await readAll(st, 'app', 3n, 8n),
        concatBytes(h.snapshots.slice(3).map((s) => s.bytes)),
      );
      await st.close();
    });

    it('lets exactly one of two racing appends from the same head win', async () => {
      const st = await (await fresh()).open();
      await st.append('app', EMPTY_POSITION, h.journalId, h.snapshots.slice(0, 2));
      const head = after0(h.snapshots[1]!);
      const results = await Promise.all([
        st.append('app', head, h.journalId, h.snapshots.slice(2, 3)),
        st.append('app', head, h.journalId, h.snapshots.slice(2, 4)),
      ]);
      assert.equal(results.filter((r) => r.ok).length, 1);
      const state = (await st.state('app'))!;
      const expected = results[0]!.ok ? 3 : 4;
      assert.equal(state.head.txid, BigInt(expected));
      await st.close();
    });

    it('compares and sets leases, with epochs that never go back, across reopen', async () => {
      const f = await fresh();
      let st = await f.open();
      const l1: StoredLease = { holder: 'w1', epoch: 1, expiresAt: Date.now() + 30_000 };
      assert.equal(await st.casLease('app', undefined, l1), true);
      assert.equal(await st.casLease('app', undefined, { ...l1, holder: 'w2' }), false);
      assert.deepEqual(await st.getLease('app'), l1);
      const l2: StoredLease = { holder: 'w2', epoch: 2, expiresAt: Date.now() + 30_000 };
      assert.equal(await st.casLease('app', { ...l1, expiresAt: l1.expiresAt + 1 }, l2), false);
      assert.equal(await st.casLease('app', l1, l2), true);
      await assert.rejects(st.casLease('app', l2, { ...l2, epoch: 1 }));
      assert.equal(await st.state('app'), undefined, 'a lease does not create the database');
      await st.close();
      st = await f.open();
      assert.deepEqual(await st.getLease('app'), l2);
      await assert.rejects(st.casLease('app', l2, { ...l2, epoch: 1 }));
      const racing = await Promise.all([
        st.casLease('app', l2, { holder: 'a', epoch: 3, expiresAt: 1 }),
        st.casLease('app', l2, { holder: 'b', epoch: 3, expiresAt: 1 }),
      ]);
      assert.equal(racing.filter(Boolean).length, 1);
      await st.close();
    });

    it('tells subscribers about every append, in order, until they unsubscribe', async () => {
      const st = await (await fresh()).open();
      const seen: bigint[] = [];
      const heads: bigint[] = [];
      const stop = st.subscribe('app', (snaps, state) => {
        for (const s of snaps) seen.push(s.header.txid);
        heads.push(state.head.txid);
      });
      let elsewhere = 0;
      const stopOther = st.subscribe('b', () => elsewhere++);
      await st.append('app', EMPTY_POSITION, h.journalId, h.snapshots.slice(0, 2));
      await st.append('app', after0(h.snapshots[1]!), h.journalId, h.snapshots.slice(2, 5));
      assert.deepEqual(seen, [1n, 2n, 3n, 4n, 5n]);
      assert.deepEqual(heads, [2n, 5n]);
      assert.equal(elsewhere, 0);
      stop();
      stopOther();
      await st.append('app', after0(h.snapshots[4]!), h.journalId, h.snapshots.slice(5));
      assert.equal(seen.length, 5);
      await st.close();
    });

    it('refuses database names that are not allowed', async () => {
      const st = await (await fresh()).open();
      for (const bad of ['../x', 'a/b', '..', '', 'a\0b', 'x'.repeat(129), '.hidden']) {
        await assert.rejects(
          st.append(bad, EMPTY_POSITION, h.journalId, h.snapshots.slice(0, 1)),
          `name ${JSON.stringify(bad)}`,
        );
        await assert.rejects(st.casLease(bad, undefined, { holder: 'w', epoch: 1, expiresAt: 1 }));
      }
      assert.deepEqual(await st.list(), []);
      await st.close();
    });
  });
}
