/**
 * One device of scripts/bench-shared.ts's merge benchmark: `node bench-shared-device.js DB URL TOKEN
 * SECONDS`. Opens DB shared with the hub's database `merges`, takes its history in, prints "writing",
 * commits one-row transactions as fast as it can for SECONDS (letting its sync run between them), then
 * waits until the hub holds all of them and it holds everyone's, and prints one JSON line.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { open } from '../src/node/index.js';

const [file, url, token, secondsArg] = process.argv.slice(2);
if (!file || !url || !token || !secondsArg) {
  process.stderr.write('usage: bench-shared-device.js DB URL TOKEN SECONDS\n');
  process.exit(2);
}
const db = await open(file, { shared: true, hub: { url, db: 'merges', token } });
const sync = db.sync as NonNullable<typeof db.sync> & { whenIdle(): Promise<void> };
let conflicts = 0;
let rejected = 0;
sync.on('conflict', () => conflicts++);
sync.on('rejected', () => rejected++);
await sync.whenIdle();
process.stdout.write('writing\n');
const insert = db.prepare('insert into e values (?, ?, ?)');
const name = `d${process.pid}`;
const until = performance.now() + Number(secondsArg) * 1000;
let commits = 0;
while (performance.now() < until) {
  insert.run(`${name}-${commits}`, name, commits);
  commits++;
  await new Promise((r) => setImmediate(r));
}
await sync.flush(120_000);
// Everyone else may still be merging: wait until nothing changes for a moment.
let last = -1n;
for (;;) {
  await new Promise((r) => setTimeout(r, 300));
  await sync.whenIdle();
  const head = sync.status().hubTxid ?? 0n;
  if (head === last) break;
  last = head;
}
await sync.close();
db.close();
const sha = createHash('sha256').update(fs.readFileSync(file)).digest('hex');
process.stdout.write(`${JSON.stringify({ commits, conflicts, rejected, hubTxid: String(last), sha })}\n`);
