/**
 * One measurement of scripts/bench-length.ts: `node --expose-gc bench-length-open.js DB SCRATCH`. Loads
 * the engine first (opens SCRATCH, a tiny database), then times open(DB) and what it adds to the
 * process's RSS and heap, then how long the background history check takes. Prints one JSON line.
 */
import { open } from '../src/node/index.js';

const [file, scratch] = process.argv.slice(2);
if (!file || !scratch) {
  process.stderr.write('usage: bench-length-open.js DB SCRATCH\n');
  process.exit(2);
}
const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});
const warm = await open(scratch);
warm.close();
gc();
const before = process.memoryUsage();
const t0 = performance.now();
const db = await open(file, { history: false });
const openMs = performance.now() - t0;
gc();
const after = process.memoryUsage();
const t1 = performance.now();
await db.historyCheck;
const checkMs = performance.now() - t1;
const rows = Number(db.prepare('select count(*) from t').pluck().get());
db.close();
const MiB = 2 ** 20;
process.stdout.write(
  `${JSON.stringify({
    openMs,
    checkMs,
    rssMiB: (after.rss - before.rss) / MiB,
    heapMiB: (after.heapUsed - before.heapUsed) / MiB,
    rows,
  })}\n`,
);
