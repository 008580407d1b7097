/**
 * Replication-torture writer: a child process that opens a database with a hub and commits random
 * transactions until it is killed (test/helpers/repl-torture.ts sends SIGKILL at random moments).
 *
 *   node dist/test/helpers/repl-writer.js <db> <hub-url> <name> <token> <seed>
 *
 * Lines on stdout (one write(2) each, to a pipe: they survive a SIGKILL once written):
 *   `ready <txid> <n>`   open() returned (recovery done): local txid and last acks row
 *   `c <n> <txid>`      the commit of acks row n returned (an acknowledged local commit)
 *   `p <txid>`          the hub answered a push: it holds everything up to txid (an acknowledged push)
 *   `f <txid>`          answer to `pause` on stdin: stopped committing, the hub holds everything
 * stdin: `pause` (stop committing and flush to the hub), `resume`.
 */
import { writeSync } from 'node:fs';
import { type MyceliteDatabase, OpenError, open } from '../../src/node/index.js';
import { prng } from './replica.js';

const [dbPath, url, name, token, seedArg = '1'] = process.argv.slice(2);
if (!dbPath || !url || !name || !token) {
  process.stderr.write('usage: repl-writer.js <db> <hub-url> <name> <token> <seed>\n');
  process.exit(2);
}
const rand = prng(Number(seedArg));
const int = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
const say = (line: string): void => {
  writeSync(1, `${line}\n`);
};
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Opens with the hub; a lease still held by the killed predecessor expires within its TTL: retry. */
async function openWithRetry(): Promise<MyceliteDatabase> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      return await open(dbPath!, {
        hub: { url: url!, db: name!, token: token!, leaseTtlMs: 1500, connectTimeoutMs: 1000 },
      });
    } catch (e) {
      if (!(e instanceof OpenError) || !/lease/.test(e.message) || Date.now() > deadline) throw e;
      await sleep(200);
    }
  }
}

const db = await openWithRetry();
db.exec(`
  CREATE TABLE IF NOT EXISTS acks(n INTEGER PRIMARY KEY);
  CREATE TABLE IF NOT EXISTS data(id INTEGER PRIMARY KEY, k INTEGER, v BLOB);
  CREATE INDEX IF NOT EXISTS data_k ON data(k);
`);
let n = Number(db.prepare('SELECT coalesce(max(n), 0) FROM acks').pluck().get());
say(`ready ${db.position().txid} ${n}`);
db.sync!.on('pushed', (p) => say(`p ${p.hubTxid}`));
db.sync!.on('status', (s) => {
  if (s.state === 'error') {
    process.stderr.write(`repl-writer: pushing stopped: ${s.lastError}\n`);
    process.exit(3);
  }
});

const insert = db.prepare('INSERT INTO data(k, v) VALUES (?, randomblob(?))');
const update = db.prepare('UPDATE data SET v = randomblob(?), k = k + 1 WHERE id % 13 = ?');
const del = db.prepare('DELETE FROM data WHERE id % 17 = ?');
const ack = db.prepare('INSERT INTO acks(n) VALUES (?)');
const commit = db.transaction((next: number) => {
  ack.run(next);
  const ops = int(1, 6);
  for (let i = 0; i < ops; i++) {
    const r = rand();
    if (r < 0.7) insert.run(int(0, 1e6), rand() < 0.9 ? int(0, 500) : int(1000, 9000));
    else if (r < 0.9) update.run(int(0, 700), int(0, 12));
    else del.run(int(0, 16));
  }
});

let paused = false;
let running: Promise<void> | undefined;
async function loop(): Promise<void> {
  while (!paused) {
    commit(n + 1);
    n++;
    say(`c ${n} ${db.position().txid}`);
    if (n % 97 === 0) db.exec('VACUUM');
    await sleep(rand() < 0.5 ? 0 : int(1, 4));
  }
}
running = loop();

let input = '';
process.stdin.setEncoding('utf8').on('data', (d: string) => {
  input += d;
  let i = input.indexOf('\n');
  while (i >= 0) {
    const cmd = input.slice(0, i).trim();
    input = input.slice(i + 1);
    i = input.indexOf('\n');
    if (cmd === 'pause') {
      paused = true;
      void (async () => {
        await running;
        await db.sync!.flush(60_000);
        say(`f ${db.position().txid}`);
      })().catch((e: unknown) => {
        process.stderr.write(`repl-writer: flush failed: ${(e as Error).message}\n`);
        process.exit(4);
      });
    } else if (cmd === 'resume' && paused) {
      paused = false;
      running = loop();
    }
  }
});
