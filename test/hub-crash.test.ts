/**
 * The hub as a real child process (`mycelite serve`): killed with SIGKILL in the middle of a push load and
 * restarted, it still holds every acknowledged push, its journals are valid, and pushing resumes from its
 * head. Also the `serve` and `token` command lines.
 */

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import { HubClient } from '../src/client/hub-client.js';
import { JournalReader, memorySource, type Position } from '../src/format/index.js';
import { EMPTY_POSITION } from '../src/protocol/index.js';
import {
  concatBytes,
  type History,
  MYCELITE_BIN,
  makeHistory,
  readJournal,
  type SpawnedHub,
  StreamItems,
  sampleStatements,
  spawnHub,
} from './helpers/hub.js';
import { cleanupTempDirs, tempDir } from './helpers/util.js';

let dir: string;
let histories: History[];
const children: SpawnedHub[] = [];

before(async () => {
  dir = tempDir();
  histories = [
    await makeHistory(path.join(dir, 'a.db'), sampleStatements(120, 800)),
    await makeHistory(path.join(dir, 'b.db'), sampleStatements(120, 300)),
  ];
});

after(async () => {
  for (const c of children) await c.kill();
  cleanupTempDirs();
});

const posOf = (h: History, n: number): Position =>
  n === 0 ? EMPTY_POSITION : { txid: BigInt(n), checksum: h.snapshots[n - 1]!.header.postChecksum };

async function clients(hub: SpawnedHub, db: string): Promise<{ w: HubClient; r: HubClient }> {
  return {
    w: new HubClient({ url: hub.url, db, token: await hub.token(db, 'writer') }),
    r: new HubClient({ url: hub.url, db, token: await hub.token(db, 'reader') }),
  };
}

/** Pushes snapshots one request at a time from `from` until an error; returns the last acknowledged count. */
async function pushUntilError(w: HubClient, h: History, from: number, epoch: number, acked: { n: number }) {
  for (let n = from; n < h.snapshots.length; n++) {
    try {
      const r = await w.push(h.snapshots[n]!.bytes, { journalId: h.journalId, base: posOf(h, n), epoch });
      acked.n = Number(r.head.txid);
    } catch {
      return;
    }
  }
}

describe('hub: SIGKILL mid-push and restart', () => {
  it('keeps every acknowledged push, with valid journals, and resumes', async () => {
    const data = path.join(dir, 'hubdata');
    fs.mkdirSync(data);
    const hub = await spawnHub(data);
    children.push(hub);
    const dbs = ['alpha', 'beta'];
    const acked = dbs.map(() => ({ n: 0 }));
    const epochs: number[] = [];
    for (const db of dbs) epochs.push((await (await clients(hub, db)).w.takeLease('w', 600_000)).epoch);
    const loads = await Promise.all(dbs.map((db) => clients(hub, db)));
    const running = dbs.map((_, i) => pushUntilError(loads[i]!.w, histories[i]!, 0, epochs[i]!, acked[i]!));
    while (acked[0]!.n < 40 || acked[1]!.n < 40) await new Promise((r) => setTimeout(r, 5));
    await hub.kill('SIGKILL');
    await Promise.all(running);
    assert.ok(acked[0]!.n < 120 || acked[1]!.n < 120, 'the kill came in the middle of the load');

    const again = await spawnHub(data);
    children.push(again);
    for (let i = 0; i < dbs.length; i++) {
      const db = dbs[i]!;
      const h = histories[i]!;
      const { w, r } = await clients(again, db);
      const state = await r.state();
      assert.ok(state, `${db} exists after the restart`);
      assert.ok(
        state.head.txid >= BigInt(acked[i]!.n),
        `${db}: head ${state.head.txid} holds every ack (${acked[i]!.n})`,
      );
      const n = Number(state.head.txid);
      // the stored journal is valid and is the writer's history, byte for byte
      const stored = await readJournal(path.join(data, 'dbs', db, 'journal'));
      assert.equal(stored.snapshots.length, n);
      const s = new StreamItems(await r.read({ after: EMPTY_POSITION }));
      await s.rest();
      const want = concatBytes(h.snapshots.slice(0, n).map((x) => x.bytes));
      assert.deepEqual(concatBytes(s.bytes.slice(1)), want);
      // the lease survived (same epoch), and pushing resumes from the hub's head
      const res = await w.push(concatBytes(h.snapshots.slice(n).map((x) => x.bytes)), {
        journalId: h.journalId,
        base: posOf(h, n),
        epoch: epochs[i]!,
      });
      assert.equal(res.head.txid, 120n);
      const file = new Uint8Array(fs.readFileSync(path.join(data, 'dbs', db, 'journal')));
      let count = 0;
      const jr = new JournalReader(memorySource(file), { verify: true });
      for (const _ of jr.snapshots()) count++;
      assert.equal(count, 120);
      assert.equal(jr.tornBytes, 0);
    }
    await again.kill('SIGTERM');
    assert.equal(await again.exited, 0, 'SIGTERM ends the hub cleanly');
  });
});

describe('hub: command line', () => {
  it('mycelite token prints only a token with the asked claims; serve --help explains', () => {
    const data = path.join(dir, 'tokdata');
    const out = execFileSync(
      process.execPath,
      [MYCELITE_BIN, 'token', '--data', data, '--db', 'app', '--role', 'reader', '--ttl', '2h'],
      {
        encoding: 'utf8',
      },
    );
    const token = out.trim();
    assert.equal(out, `${token}\n`);
    const claims = decodeJwt(token);
    assert.equal(claims.db, 'app');
    assert.equal(claims.role, 'reader');
    assert.ok(Math.abs(claims.exp! - claims.iat! - 7200) <= 1);
    assert.equal(fs.statSync(path.join(data, 'hub.key')).mode & 0o777, 0o600);
    assert.throws(() =>
      execFileSync(
        process.execPath,
        [MYCELITE_BIN, 'token', '--data', data, '--db', '../x', '--role', 'reader'],
        {
          stdio: 'pipe',
        },
      ),
    );
    const help = execFileSync(process.execPath, [MYCELITE_BIN, 'serve', '--help'], { encoding: 'utf8' });
    assert.match(help, /--max-body/);
    assert.match(help, /Examples:/);
  });

  it('serve on port 0 prints the real port, and the printed URL serves', async () => {
    const hub = await spawnHub(path.join(dir, 'portdata'));
    children.push(hub);
    assert.ok(hub.port > 0);
    const res = await fetch(`${hub.url}/healthz`);
    assert.equal(res.status, 200);
    await hub.kill('SIGINT');
    assert.equal(await hub.exited, 0);
  });
});
