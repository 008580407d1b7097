/**
 * The conformance suite of HubStorage (src/hub/storage.ts): every backend (filesystem now, NATS JetStream
 * later) runs it. Snapshots are real ones, written by the real writer.
 */

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Position, xxh64 } from '../../src/format/index.js';
import type { HubStorage, StoredLease } from '../../src/hub/index.js';
import { EMPTY_POSITION, type EncodedSnapshot } from '../../src/protocol/index.js';
import { concatBytes, damage, type History, makeHistory, sampleStatements, tamper } from './hub.js';
import { replayTo, sha256 } from './util.js';

/** One backing store: open it (again, on the same data), break it like a crash would, clean it up. */
export interface StorageFixture {
  open(): Promise<HubStorage>;
  /** Appends `bytes` to the stored journal of `db` behind the storage's back (a torn append). */
  tearTail(db: string, bytes: Uint8Array): Promise<void>;
  /**
   * Stores `snapshots` (whole, the first continuing `base`, each the one before) after the stored ones
   * of `db`, behind the storage's back, one append each: what a copy damaged where it is stored holds.
   */
  storeBehind(db: string, journalId: Uint8Array, base: Position, snapshots: EncodedSnapshot[]): Promise<void>;
  /** The directory of the head file of `db` (head.db, head.pos) of the storage this fixture opens. */
  headDir(db: string): string;
  cleanup(): Promise<void>;
}

const after0 = (s: EncodedSnapshot): Position => ({
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
    let h: History & { dbPath: string };
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

    it('keeps the mode a database was created with, across close and reopen', async () => {
      const f = await fresh();
      let st = await f.open();
      const s = h.snapshots;
      const shared = await st.append('sh', EMPTY_POSITION, h.journalId, s.slice(0, 3), undefined, 'shared');
      assert.ok(shared.ok);
      assert.equal(shared.state.mode, 'shared');
      const single = await st.append('one', EMPTY_POSITION, h.journalId, s.slice(0, 3), undefined, 'single');
      assert.ok(single.ok);
      assert.equal(single.state.mode, 'single');
      // An old client: no mode at all. Its database is single-writer.
      const old = await st.append('old', EMPTY_POSITION, other.journalId, other.snapshots);
      assert.ok(old.ok);
      assert.equal(old.state.mode, 'single');
      await st.close();
      st = await f.open();
      assert.equal((await st.state('sh'))!.mode, 'shared');
      assert.equal((await st.state('one'))!.mode, 'single');
      assert.equal((await st.state('old'))!.mode, 'single');
      const more = await st.append('sh', after0(s[2]!), h.journalId, s.slice(3, 5), undefined, 'shared');
      assert.ok(more.ok);
      assert.equal(more.state.mode, 'shared');
      assert.deepEqual(more.state.head, after0(s[4]!));
      await st.close();
      st = await f.open();
      assert.equal((await st.state('sh'))!.mode, 'shared', 'still shared after more appends');
      await st.close();
    });

    it('refuses an append of the other mode (other_mode), storing nothing, before and after a reopen', async () => {
      const f = await fresh();
      let st = await f.open();
      const s = h.snapshots;
      assert.ok((await st.append('sh', EMPTY_POSITION, h.journalId, s.slice(0, 3), undefined, 'shared')).ok);
      assert.ok((await st.append('old', EMPTY_POSITION, h.journalId, s.slice(0, 3))).ok);
      const at3 = after0(s[2]!);
      const held = concatBytes(s.slice(0, 3).map((x) => x.bytes));
      const refusals = async (): Promise<void> => {
        const attempts: [string, 'single' | 'shared' | undefined][] = [
          ['sh', 'single'],
          ['sh', undefined], // an old client writing to a shared database
          ['old', 'shared'],
        ];
        for (const [db, mode] of attempts) {
          const r = await st.append(db, at3, h.journalId, s.slice(3, 5), undefined, mode);
          assert.equal(!r.ok && r.reason, 'other_mode', `${db} refuses mode ${mode}`);
          assert.equal(!r.ok && r.state?.mode, db === 'sh' ? 'shared' : 'single');
          const state = (await st.state(db))!;
          assert.deepEqual(state.head, at3, `${db}: nothing was stored`);
          assert.equal(state.mode, db === 'sh' ? 'shared' : 'single', `${db}: its mode did not change`);
          assert.deepEqual(await readAll(st, db, 0n, 3n), held);
          assert.equal(await st.snapshotAt(db, 4n), undefined);
        }
      };
      await refusals();
      await st.close();
      st = await f.open();
      await refusals();
      // Its own mode still goes in.
      assert.ok((await st.append('sh', at3, h.journalId, s.slice(3), undefined, 'shared')).ok);
      assert.ok((await st.append('old', at3, h.journalId, s.slice(3), undefined, 'single')).ok);
      for (const db of ['sh', 'old'])
        assert.deepEqual(await readAll(st, db, 0n, 8n), concatBytes(s.map((x) => x.bytes)));
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

    it('refuses an append whose snapshots do not give the checksums they claim, storing nothing', async () => {
      const f = await fresh();
      let st = await f.open();
      const s = h.snapshots;
      // A new database whose first snapshot does not apply is not created.
      const first = await st.append('app', EMPTY_POSITION, h.journalId, [tamper(s[0]!), ...s.slice(1, 3)]);
      assert.equal(!first.ok && first.reason, 'does_not_apply');
      assert.equal(!first.ok && first.reason === 'does_not_apply' && first.txid, 1n);
      assert.deepEqual(await st.list(), []);
      assert.ok((await st.append('app', EMPTY_POSITION, h.journalId, s.slice(0, 3))).ok);
      const at3 = after0(s[2]!);
      // First, or in the middle of a body: the whole append is refused, naming the snapshot.
      const bodies: [EncodedSnapshot[], bigint][] = [
        [[tamper(s[3]!), s[4]!], 4n],
        [[s[3]!, tamper(s[4]!), s[5]!], 5n],
      ];
      for (const [body, txid] of bodies) {
        const r = await st.append('app', at3, h.journalId, body);
        assert.equal(!r.ok && r.reason, 'does_not_apply');
        assert.equal(!r.ok && r.reason === 'does_not_apply' && r.txid, txid);
        assert.deepEqual((await st.state('app'))!.head, at3, 'nothing was stored');
      }
      assert.deepEqual(await readAll(st, 'app', 0n, 3n), concatBytes(s.slice(0, 3).map((x) => x.bytes)));
      // Across a reopen, against the pages it keeps.
      await st.close();
      st = await f.open();
      const again = await st.append('app', at3, h.journalId, [tamper(s[3]!)]);
      assert.equal(!again.ok && again.reason, 'does_not_apply');
      assert.ok((await st.append('app', at3, h.journalId, s.slice(3))).ok);
      assert.deepEqual(await readAll(st, 'app', 0n, 8n), concatBytes(s.map((x) => x.bytes)));
      // The pages it checks against are the writer's database, byte for byte.
      const copy = path.join(dir, `head-copy-${fixtures.length}`);
      const head = await st.copyHead!('app', copy);
      assert.deepEqual(head, s[7]!.header);
      assert.equal(sha256(fs.readFileSync(copy)), sha256(fs.readFileSync(h.dbPath)));
      await st.close();
    });

    it('never reads back a stored snapshot damaged behind its back; an append from before it goes in', async () => {
      const f = await fresh();
      let st = await f.open();
      const s = h.snapshots;
      await st.append('app', EMPTY_POSITION, h.journalId, s.slice(0, 3));
      await st.close();
      // Snapshot 4 damaged where it is stored (one flipped byte), 5 and 6 whole after it.
      await f.storeBehind('app', h.journalId, after0(s[2]!), [damage(s[3]!), s[4]!, s[5]!]);
      st = await f.open();
      assert.deepEqual(
        (await st.state('app'))!.head,
        after0(s[2]!),
        'the head is before the damaged snapshot',
      );
      assert.deepEqual(await readAll(st, 'app', 0n, 3n), concatBytes(s.slice(0, 3).map((x) => x.bytes)));
      const r = await st.append('app', after0(s[2]!), h.journalId, s.slice(3));
      assert.ok(r.ok, 'the writer re-supplies the rest');
      assert.deepEqual(await readAll(st, 'app', 0n, 8n), concatBytes(s.map((x) => x.bytes)));
      await st.close();
    });

    it('brings its pages up to date after a crash between an append and their update', async () => {
      const f = await fresh();
      const s = h.snapshots;
      let st = await f.open();
      await st.append('app', EMPTY_POSITION, h.journalId, s.slice(0, 4));
      await st.close();
      const hd = f.headDir('app');
      const at4 = {
        db: fs.readFileSync(path.join(hd, 'head.db')),
        pos: fs.readFileSync(path.join(hd, 'head.pos')),
      };
      st = await f.open();
      await st.append('app', after0(s[3]!), h.journalId, s.slice(4, 6));
      await st.close();
      const at6 = fs.readFileSync(path.join(hd, 'head.db'));
      /** The head file as a hub killed after storing 5..6 left it: untouched, or half written. */
      const crashes: [string, () => void][] = [
        [
          'before its update',
          () => {
            fs.writeFileSync(path.join(hd, 'head.db'), at4.db);
            fs.writeFileSync(path.join(hd, 'head.pos'), at4.pos);
          },
        ],
        [
          'in the middle of its update',
          () => {
            const torn = Buffer.from(at6);
            at4.db.copy(torn, 0, 0, Math.floor(at4.db.length / 2));
            fs.writeFileSync(path.join(hd, 'head.db'), torn);
            // The record still at 4, its "exact" flag (bit 0 of offset 48) clear: the pages may be ahead.
            const pos = Buffer.from(at4.pos);
            pos.writeUInt32LE(0, 48);
            pos.writeBigUInt64LE(xxh64(pos.subarray(0, 56)), 56);
            fs.writeFileSync(path.join(hd, 'head.pos'), pos);
          },
        ],
      ];
      for (const [when, crash] of crashes) {
        crash();
        st = await f.open();
        const refused = await st.append('app', after0(s[5]!), h.journalId, [tamper(s[6]!)]);
        assert.equal(!refused.ok && refused.reason, 'does_not_apply', `crash ${when}: still checks`);
        const copy = path.join(dir, `head-copy-${fixtures.length}-${when.length}`);
        assert.deepEqual(await st.copyHead!('app', copy), s[5]!.header, `crash ${when}`);
        await st.close();
      }
      st = await f.open();
      assert.ok((await st.append('app', after0(s[5]!), h.journalId, s.slice(6))).ok);
      const copy = path.join(dir, `head-copy-${fixtures.length}-end`);
      await st.copyHead!('app', copy);
      assert.equal(sha256(fs.readFileSync(copy)), sha256(fs.readFileSync(h.dbPath)));
      await st.close();
    });

    it('never refuses a good append, nor copies wrong pages, because its head file was damaged', async () => {
      const f = await fresh();
      const s = h.snapshots;
      let st = await f.open();
      await st.append('app', EMPTY_POSITION, h.journalId, s.slice(0, 4));
      await st.close();
      const pages = path.join(f.headDir('app'), 'head.db');
      const flip = (at: number): void => {
        const b = fs.readFileSync(pages);
        b[at]! ^= 0x40;
        fs.writeFileSync(pages, b);
      };
      flip(100); // page 1, which every commit changes (its change counter is nearby)
      st = await f.open();
      const r = await st.append('app', after0(s[3]!), h.journalId, s.slice(4, 6));
      assert.ok(r.ok, 'checked against rebuilt pages, not refused');
      await st.close();
      flip(fs.statSync(pages).size - 1); // the last page, which the next append does not touch
      st = await f.open();
      const copy = path.join(dir, `head-copy-${fixtures.length}-checked`);
      assert.deepEqual(await st.copyHead!('app', copy, true), s[5]!.header);
      const at6 = await replayTo(h.dbPath, { txid: 6n });
      assert.equal(
        sha256(fs.readFileSync(copy)),
        sha256(fs.readFileSync(at6)),
        'checked: the pages of txid 6',
      );
      const rest = await st.append('app', after0(s[5]!), h.journalId, s.slice(6));
      assert.ok(rest.ok);
      await st.copyHead!('app', copy, true);
      assert.equal(sha256(fs.readFileSync(copy)), sha256(fs.readFileSync(h.dbPath)));
      await st.close();
      fs.truncateSync(pages, 0); // the pages lost, the record left
      st = await f.open();
      await st.copyHead!('app', copy);
      assert.equal(sha256(fs.readFileSync(copy)), sha256(fs.readFileSync(h.dbPath)), 'rebuilt, unasked');
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
