/**
 * Shared-torture device: a child process that opens a device of a shared database with a hub and
 * commits random transactions until it is killed (test/helpers/shared-torture.ts sends SIGKILL at random
 * moments and takes its network away through a proxy).
 *
 *   node dist/test/helpers/shared-device.js <db> <hub-url> <name> <token> <device> <seed>
 *
 * Schema (every device runs it at start; the first devices to sync merge the same CREATE statements):
 *   log(id TEXT PRIMARY KEY, device, seq)  one row per transaction, id = device:seq, insert-only;
 *   items(id TEXT PRIMARY KEY, owner, value, tag UNIQUE, note)  rows inserted, updated and deleted at
 *     random by every device (conflicts), `tag` taken from a small set (two devices taking the same
 *     tag offline: the second to sync is rejected).
 * `seq` is the sequence number the device gives the transaction's pending change (the one 'rejected'
 * and 'conflict' events name).
 *
 * Files (one write(2) per line, so a line is whole or absent after a SIGKILL):
 *   <db>.acks    `seq` after each commit returned (an acknowledged local transaction);
 *   <db>.events  `rejected seq reason` and `conflict seq kind table op choice`, as the events come.
 * Lines on stdout: `ready`; `crash` just before it kills itself in the middle of a rebase (now and then,
 * until calm); answers to the commands on stdin:
 *   `pause`  stop committing → `paused`;      `resume` go on committing (and crashing) → `resumed`;
 *   `calm`   stop killing itself → `calmed`;
 *   `sync`   flush and wait until idle → `synced <pending> <hubTxid> <localTxid>` (or `error <message>`);
 *   `state`  → `state <pending> <hubTxid> <localTxid>`.
 */
import { openSync, writeSync } from 'node:fs';
import { open } from '../../src/node/index.js';
import type { DeviceSync } from '../../src/shared/device-sync.js';
import { prng } from './prng.js';

const [dbPath, url, name, token, device, seedArg = '1'] = process.argv.slice(2);
if (!dbPath || !url || !name || !token || !device) {
  process.stderr.write('usage: shared-device.js <db> <hub-url> <name> <token> <device> <seed>\n');
  process.exit(2);
}
const rand = prng(Number(seedArg));
const int = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
const say = (line: string): void => {
  writeSync(1, `${line}\n`);
};
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Now and then (until told `calm`) the device SIGKILLs itself inside the conflict handler: in the middle
 * of a rebase, after the reset and some changes applied again, before the tail is rewritten. It says
 * `crash` first, so the harness counts it as a kill, not a failure.
 */
/** With SHARED_DEVICE_TRACE=1: every request to the hub and how it ended, on stderr. */
const traced: typeof fetch = async (input, init) => {
  const t0 = Date.now();
  const what = `${init?.method ?? 'GET'} ${String(input).replace(/^.*\/v1\/db\/[^/?]*/, '')}`;
  process.stderr.write(`${t0 % 100000} > ${what}\n`);
  try {
    const r = await fetch(input, init);
    process.stderr.write(`${Date.now() % 100000} < ${what} ${r.status} (${Date.now() - t0} ms)\n`);
    return r;
  } catch (e) {
    process.stderr.write(
      `${Date.now() % 100000} ! ${what} ${(e as Error).message} (${Date.now() - t0} ms)\n`,
    );
    throw e;
  }
};
const crashes = prng(Number(seedArg) ^ 0x5bd1e995);
let crashing = true;
const killInEvents = process.env['SHARED_DEVICE_KILL_IN_EVENTS'] === '1';
const db = await open(dbPath, {
  shared: {
    onConflict: () => {
      if (crashing && crashes() < 0.002) {
        say('crash');
        process.kill(process.pid, 'SIGKILL');
      }
      return undefined;
    },
  },
  hub: {
    url,
    db: name,
    token,
    leaseTtlMs: 2000,
    requestTimeoutMs: 5000,
    ...(process.env['SHARED_DEVICE_TRACE'] === '1' ? { fetch: traced } : {}),
  },
  onWarning: (w) => process.stderr.write(`shared-device ${device}: warning: ${w.message}\n`),
});
const sync = db.sync as unknown as DeviceSync;
/** The device's pending queue (its next sequence number is the seq of the next transaction). */
const queue = (sync as unknown as { o: { device: { queue: { nextSeq: bigint } } } }).o.device.queue;

const acks = openSync(`${dbPath}.acks`, 'a');
const events = openSync(`${dbPath}.events`, 'a');
const oneLine = (s: string): string => s.replace(/\s+/g, ' ');
sync.on('rejected', (r) => {
  writeSync(events, `rejected ${r.seq} ${oneLine(r.reason)}\n`);
});
sync.on('conflict', (c) => {
  writeSync(
    events,
    `conflict ${c.seq} ${c.conflict.kind} ${c.conflict.table} ${c.conflict.op} ${c.choice}\n`,
  );
  // With SHARED_DEVICE_KILL_IN_EVENTS=1, now and then killed here: after a rebase was written, while its
  // reports are being delivered (the rejections come after the conflicts).
  if (killInEvents && crashing && crashes() < 0.01) {
    say('crash');
    process.kill(process.pid, 'SIGKILL');
  }
});

db.exec(`
  CREATE TABLE IF NOT EXISTS log(id TEXT PRIMARY KEY, device TEXT NOT NULL, seq INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS items(id TEXT PRIMARY KEY, owner TEXT, value INTEGER, tag TEXT UNIQUE, note BLOB);
`);
say('ready');

const log = db.prepare('INSERT INTO log(id, device, seq) VALUES (?, ?, ?)');
const insert = db.prepare('INSERT INTO items(id, owner, value, note) VALUES (?, ?, ?, randomblob(?))');
const count = db.prepare('SELECT count(*) FROM items').pluck();
const nth = db.prepare('SELECT id FROM items ORDER BY id LIMIT 1 OFFSET ?').pluck();
const update = db.prepare('UPDATE items SET value = ?, owner = ? WHERE id = ?');
const bump = db.prepare('UPDATE items SET value = value + 1 WHERE substr(id, -1) = ?');
const del = db.prepare('DELETE FROM items WHERE id = ?');
const takeTag = db.prepare('UPDATE items SET tag = ? WHERE id = ?');
const dropTag = db.prepare('UPDATE items SET tag = NULL WHERE tag = ?');
const note = db.prepare('UPDATE items SET note = randomblob(?) WHERE id = ?');

const transaction = db.transaction((seq: bigint) => {
  log.run(`${device}:${seq}`, device, seq);
  const ops = int(1, 4);
  for (let k = 0; k < ops; k++) {
    const r = rand();
    const n = Number(count.get());
    const id = n === 0 ? undefined : (nth.get(int(0, n - 1)) as string);
    if (id === undefined || (r < 0.35 && n < 200)) {
      insert.run(`${device}-${seq}-${k}`, device, int(0, 1000), rand() < 0.9 ? int(0, 300) : int(1000, 6000));
    } else if (r < 0.6) update.run(int(0, 1000), device, id);
    else if (r < 0.72) del.run(id);
    else if (r < 0.8) bump.run(String(int(0, 9)));
    else if (r < 0.88) note.run(int(0, 3000), id);
    else if (r < 0.95) takeTag.run(`tag-${int(0, 7)}`, id);
    else dropTag.run(`tag-${int(0, 7)}`);
  }
});

let paused = false;
let running: Promise<void> = Promise.resolve();
async function loop(): Promise<void> {
  while (!paused) {
    const seq = queue.nextSeq;
    let ok = true;
    try {
      transaction(seq);
    } catch (e) {
      // A tag this device's own state already has: the transaction rolled back, nothing committed.
      if (!/UNIQUE constraint failed/.test((e as Error).message)) throw e;
      ok = false;
    }
    if (ok) writeSync(acks, `${seq}\n`);
    // Bursts of commits, then a pause: other devices get the lease in between (a device committing
    // without pause keeps it), so rebases, conflicts and kills in them happen while everyone writes.
    const r = rand();
    await sleep(r < 0.1 ? int(100, 600) : r < 0.4 ? 0 : int(1, 25));
  }
}
const failed = (e: unknown): void => {
  process.stderr.write(`shared-device ${device}: ${(e as Error).stack ?? e}\n`);
  process.exit(3);
};
running = loop().catch(failed);

const status = (): string => {
  const s = sync.status();
  return `${s.pending} ${s.hubTxid} ${s.localTxid}`;
};

let input = '';
process.stdin.setEncoding('utf8').on('data', (d: string) => {
  input += d;
  for (let i = input.indexOf('\n'); i >= 0; i = input.indexOf('\n')) {
    const cmd = input.slice(0, i).trim();
    input = input.slice(i + 1);
    if (cmd === 'pause') {
      paused = true;
      void running.then(() => say('paused'));
    } else if (cmd === 'resume') {
      crashing = true;
      if (paused) {
        paused = false;
        running = loop().catch(failed);
      }
      say('resumed');
    } else if (cmd === 'calm') {
      crashing = false;
      say('calmed');
    } else if (cmd === 'state') {
      say(`state ${status()}`);
    } else if (cmd === 'sync') {
      void (async () => {
        await sync.flush(60_000);
        await sync.whenIdle();
        say(`synced ${status()}`);
      })().catch((e: unknown) => say(`error ${oneLine((e as Error).message)}`));
    }
  }
});
