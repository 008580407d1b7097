/**
 * History benchmark (issue 4): restoring a large database to a retained point against copying its file,
 * and what compaction does to the bytes kept for workloads a, b, c of ../shared/bench/WORKLOADS.md.
 *
 *   node dist/scripts/bench-history.js [--size-mb N] [--dir DIR] [--runs N] [--json FILE] [--skip-workloads]
 *     [--warm-only] [--keep] [--scale F (workloads a, b, c shrunk: a smoke test)]
 *
 * 1. Builds a database of ~N MiB (default 1024) through open() — the WORKLOADS.md schema and row shape,
 *    bulk transactions of inserts, then updates, a fake clock advancing 10 minutes per commit — compacts
 *    it ('2h:all,1d:1h,forever:1d', default checkpoint ratio), then times, interleaved, `runs` times: a
 *    copy of the database file (copyFileSync with and without fsync; read+write with fsync) against
 *    restoreDatabase (which fsyncs) to the latest point, to the point just before a checkpoint that
 *    replays the most bytes (the worst case), and to a random retained point. Cold (page cache dropped
 *    before each operation, when running as root) and warm.
 * 2. Workloads a, b, c (scripts/bench-run.ts) with the fake clock: journal + history bytes / db bytes
 *    before and after compaction, and compress / inflate MB/s of the body codec on their snapshots.
 * Prints tables; writes JSON (default bench-history.json). Run it on the real disk (default .bench/ here).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import {
  compressBody,
  FLAG_COMPRESSED,
  inflateBody,
  JournalReader,
  loadHash,
  maxBodyLength,
  SNAPSHOT_HEADER_SIZE,
  SNAPSHOT_TRAILER_SIZE,
  type SnapshotInfo,
} from '../src/format/index.js';
import { checkpointBefore } from '../src/history/points.js';
import { parseRetention } from '../src/history/policy.js';
import { openHistory } from '../src/history/source.js';
import { fileSource } from '../src/journal/file-source.js';
import { journalPaths } from '../src/journal/paths.js';
import { open } from '../src/node/index.js';
import { NodeFileSystem } from '../src/node/node-fs.js';
import { compactDatabase } from '../src/restore/compact-database.js';
import { restoreDatabase } from '../src/restore/restore.js';
import { prng } from '../test/helpers/prng.js';
import { benchRun, type Workload } from './bench-run.js';

const { values: args } = parseArgs({
  options: {
    'size-mb': { type: 'string', default: '1024' },
    dir: { type: 'string', default: '.bench/history' },
    runs: { type: 'string', default: '3' },
    json: { type: 'string', default: 'bench-history.json' },
    'skip-workloads': { type: 'boolean', default: false },
    'warm-only': { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    scale: { type: 'string', default: '1' },
  },
});
const SIZE = Number(args['size-mb']) * 1024 * 1024;
const RUNS = Number(args.runs);
const POLICY = '2h:all,1d:1h,forever:1d';
const STEP = 10 * 60_000;
const T0 = Date.UTC(2026, 0, 1);
const nfs = new NodeFileSystem();
const MB = 1024 * 1024;

fs.mkdirSync(args.dir!, { recursive: true });
const base = fs.mkdtempSync(path.join(args.dir!, 'run-'));

/** Runs `fn` with Date.now advancing STEP per call to `tick()`. */
async function withClock<T>(fn: (tick: () => void) => Promise<T>): Promise<{ value: T; end: number }> {
  const real = Date.now;
  let now = T0;
  Date.now = () => now;
  try {
    const value = await fn(() => {
      now += STEP;
    });
    return { value, end: now };
  } finally {
    Date.now = real;
  }
}

function bytesOf(db: string): { db: number; journal: number; history: number } {
  const p = journalPaths(db);
  return { db: nfs.fileSize(db), journal: nfs.fileSize(p.journal), history: nfs.fileSize(p.history) };
}

function sha(file: string): string {
  const h = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.alloc(8 * MB);
  try {
    for (let n = fs.readSync(fd, buf); n > 0; n = fs.readSync(fd, buf)) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

let canDrop: boolean | undefined;
/** Drops the page cache (root only): returns false when it cannot. */
function dropCaches(): boolean {
  if (canDrop === false) return false;
  try {
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
    canDrop = true;
  } catch {
    canDrop = false;
  }
  return canDrop;
}

function syncAll(): void {
  // Flush dirty pages of everything written before, so one operation's writeback does not land in the next.
  const fd = fs.openSync(base, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  execFileSync('sync');
}

/** 1. The big database: bulk inserts, then updates, through open() with a fake clock. */
async function buildBig(db: string): Promise<{ end: number; buildMs: number; commits: number }> {
  const t0 = performance.now();
  let commits = 0;
  const { end } = await withClock(async (tick) => {
    const c = await open(db, { history: false });
    try {
      c.exec('PRAGMA page_size = 4096');
      c.exec('PRAGMA journal_mode = DELETE');
      c.exec('PRAGMA synchronous = FULL');
      c.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT NOT NULL, v TEXT NOT NULL)');
      c.exec('CREATE INDEX t_k ON t(k)');
      // Rows of WORKLOADS.md's shape (k 16 hex characters, v 84), generated by SQLite's randomblob.
      const per = Math.max(1000, Math.min(1_000_000, Math.round(SIZE / 170 / 8)));
      while (fs.statSync(db).size < SIZE) {
        tick();
        c.exec(
          `WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ${per}) ` +
            'INSERT INTO t(k, v) SELECT lower(hex(randomblob(8))), lower(hex(randomblob(42))) FROM s',
        );
        commits++;
        process.stderr.write(`  build: ${(fs.statSync(db).size / MB).toFixed(0)} MiB\r`);
      }
      const rows = Number(c.prepare('SELECT max(id) FROM t').pluck().get());
      const rand = prng(4);
      const upd = c.prepare('UPDATE t SET v = lower(hex(randomblob(42))) WHERE id = ?');
      for (let u = 0; u < 40; u++) {
        tick();
        c.transaction(() => {
          for (let i = 0; i < 5000; i++) upd.run(1 + Math.floor(rand() * rows));
        })();
        commits++;
      }
    } finally {
      c.close();
    }
  });
  process.stderr.write('\n');
  return { end, buildMs: performance.now() - t0, commits };
}

function points(db: string): SnapshotInfo[] {
  const hs = openHistory(nfs, journalPaths(db), () => new Error('no journal'));
  try {
    return [...new JournalReader(hs.source, { merged: true }).snapshots()];
  } finally {
    hs.close();
  }
}

/** The point whose restore replays the most bytes after its checkpoint. */
function worstPoint(all: SnapshotInfo[]): { index: number; bytes: number; from: number } {
  let worst = { index: all.length - 1, bytes: 0, from: 0 };
  for (let i = 0; i < all.length; i++) {
    const from = checkpointBefore(all, i);
    let bytes = 0;
    for (let j = from; j <= i; j++) bytes += all[j]!.length;
    if (bytes > worst.bytes) worst = { index: i, bytes, from };
  }
  return worst;
}

function copyFsync(from: string, to: string, fsync: boolean): void {
  fs.copyFileSync(from, to);
  if (fsync) {
    const fd = fs.openSync(to, 'r+');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  }
}

function readWriteCopy(from: string, to: string): void {
  const src = fs.openSync(from, 'r');
  const dst = fs.openSync(to, 'w');
  const buf = Buffer.alloc(4 * MB);
  try {
    let at = 0;
    for (
      let n = fs.readSync(src, buf, 0, buf.length, at);
      n > 0;
      n = fs.readSync(src, buf, 0, buf.length, at)
    ) {
      fs.writeSync(dst, buf, 0, n, at);
      at += n;
    }
    fs.fsyncSync(dst);
  } finally {
    fs.closeSync(src);
    fs.closeSync(dst);
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

interface Op {
  name: string;
  run: (out: string) => Promise<unknown> | unknown;
}

async function timeOps(ops: Op[], cold: boolean): Promise<Record<string, number[]>> {
  const times: Record<string, number[]> = Object.fromEntries(ops.map((o) => [o.name, []]));
  const out = path.join(base, 'out.db');
  for (let r = 0; r < RUNS; r++) {
    for (const op of r % 2 === 0 ? ops : [...ops].reverse()) {
      fs.rmSync(out, { force: true });
      syncAll();
      if (cold) dropCaches();
      else await op.run(out); // warm: the same operation once before, untimed
      fs.rmSync(out, { force: true });
      syncAll();
      const t0 = performance.now();
      await op.run(out);
      times[op.name]!.push(performance.now() - t0);
    }
  }
  fs.rmSync(out, { force: true });
  return times;
}

async function bigDatabase(): Promise<Record<string, unknown>> {
  const db = path.join(base, 'big.db');
  console.log(`building a ${SIZE / MB} MiB database in ${base} …`);
  const built = await buildBig(db);
  const before = bytesOf(db);
  const dbSha = sha(db);
  const t0 = performance.now();
  const compacted = await compactDatabase(nfs, db, { policy: parseRetention(POLICY), now: built.end });
  const compactMs = performance.now() - t0;
  const after = bytesOf(db);
  const all = points(db);
  const worst = worstPoint(all);
  const rand = prng(9);
  const random = Math.floor(rand() * all.length);
  const targets = {
    latest: all.length - 1,
    worst: worst.index,
    random,
  };
  const ops: Op[] = [
    { name: 'copy+fsync', run: (o) => copyFsync(db, o, true) },
    { name: 'copy (no fsync)', run: (o) => copyFsync(db, o, false) },
    { name: 'read+write+fsync', run: (o) => readWriteCopy(db, o) },
    ...Object.entries(targets).map(([name, i]) => ({
      name: `restore ${name}`,
      run: (o: string) => restoreDatabase(nfs, db, o, { target: { txid: all[i]!.txid }, force: true }),
    })),
  ];
  // Correctness first: the latest restore is the database.
  const check = path.join(base, 'check.db');
  await restoreDatabase(nfs, db, check, { force: true });
  const restoreEqual = sha(check) === dbSha;
  fs.rmSync(check, { force: true });
  const cold = !args['warm-only'] && dropCaches() ? await timeOps(ops, true) : undefined;
  const warm = await timeOps(ops, false);
  const replayed = (i: number): number => {
    const from = checkpointBefore(all, i);
    let bytes = 0;
    for (let j = from; j <= i; j++) bytes += all[j]!.length;
    return bytes;
  };
  return {
    sizeMb: SIZE / MB,
    dbBytes: before.db,
    commits: built.commits,
    buildMs: built.buildMs,
    compactMs,
    policy: POLICY,
    before,
    after,
    points: all.length,
    checkpoints: all.filter((s) => s.flags & 1).length,
    compacted,
    restoreEqual,
    targets: Object.fromEntries(
      Object.entries(targets).map(([k, i]) => [
        k,
        { txid: all[i]!.txid, replayedBytes: replayed(i), snapshots: i - checkpointBefore(all, i) + 1 },
      ]),
    ),
    cold:
      cold && Object.fromEntries(Object.entries(cold).map(([k, v]) => [k, { median: median(v), runs: v }])),
    warm: Object.fromEntries(Object.entries(warm).map(([k, v]) => [k, { median: median(v), runs: v }])),
  };
}

/** compress / inflate throughput of the body codec on the snapshots of `journal`. */
function codec(journal: string): { bytes: number; stored: number; compressMBs: number; inflateMBs: number } {
  const f = nfs.open(journal, { readonly: true });
  const src = fileSource(f);
  const bodies: Uint8Array[] = [];
  try {
    for (const s of new JournalReader(src).snapshots()) {
      const stored = src.read(
        s.offset + SNAPSHOT_HEADER_SIZE,
        s.length - SNAPSHOT_HEADER_SIZE - SNAPSHOT_TRAILER_SIZE,
      );
      bodies.push(
        (s.flags & FLAG_COMPRESSED) !== 0 ? inflateBody(stored, maxBodyLength(s), s.flags) : stored,
      );
    }
  } finally {
    f.close();
  }
  const raw = bodies.reduce((n, b) => n + b.length, 0);
  let t0 = performance.now();
  const packed = bodies.map((b) => compressBody(b));
  const compressMs = performance.now() - t0;
  t0 = performance.now();
  for (let i = 0; i < bodies.length; i++) if (packed[i]) inflateBody(packed[i]!, bodies[i]!.length);
  const inflateMs = performance.now() - t0;
  const packedRaw = bodies.reduce((n, b, i) => n + (packed[i] ? b.length : 0), 0);
  return {
    bytes: raw,
    stored: packed.reduce((n, p, i) => n + (p?.length ?? bodies[i]!.length), 0),
    compressMBs: raw / MB / (compressMs / 1000),
    inflateMBs: packedRaw / MB / (inflateMs / 1000),
  };
}

async function workloads(): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const w of ['a', 'b', 'c'] as Workload[]) {
    const dir = fs.mkdtempSync(path.join(base, `${w}-`));
    // benchRun commits through open(): the writer reads Date.now() once per commit to stamp the snapshot,
    // so a clock that advances STEP per call gives ~10 minutes per commit.
    const real = Date.now;
    let now = T0;
    Date.now = () => (now += STEP);
    let run: Awaited<ReturnType<typeof benchRun>>;
    try {
      run = await benchRun('mycelite', w, dir, Number(args.scale));
    } finally {
      Date.now = real;
    }
    const db = path.join(dir, `${w}.db`);
    const before = bytesOf(db);
    const pts = points(db);
    const codecFigures = codec(journalPaths(db).journal);
    const dbSha = sha(db);
    const results: Record<string, unknown> = {};
    for (const [name, policy, at] of [
      ['retain 2h:all,1d:1h,forever:1d', POLICY, now],
      ['keep all (checkpoints only)', 'forever:all', now],
    ] as const) {
      const copy = fs.mkdtempSync(path.join(base, `${w}-c-`));
      fs.cpSync(dir, copy, { recursive: true });
      const cdb = path.join(copy, `${w}.db`);
      const r = await compactDatabase(nfs, cdb, { policy: parseRetention(policy), now: at });
      const after = bytesOf(cdb);
      const check = `${cdb}.check`;
      await restoreDatabase(nfs, cdb, check, { force: true });
      results[name] = {
        pointsBefore: r.pointsBefore,
        pointsAfter: r.pointsAfter,
        checkpoints: r.checkpoints,
        after,
        ratioAfter: (after.journal + after.history) / after.db,
        restoreEqual: sha(check) === dbSha,
      };
      fs.rmSync(copy, { recursive: true, force: true });
    }
    out[w] = {
      replayEqual: run.replayEqual,
      before,
      ratioBefore: (before.journal + before.history) / before.db,
      snapshots: pts.length,
      spanHours: (pts[pts.length - 1]!.timestamp - pts[0]!.timestamp) / 3_600_000,
      compaction: results,
      codec: codecFigures,
    };
  }
  return out;
}

await loadHash();
const result: Record<string, unknown> = { date: new Date().toISOString(), dir: base };
try {
  result.big = await bigDatabase();
  if (!args['skip-workloads']) result.workloads = await workloads();
} finally {
  if (args.keep) console.log(`kept ${base}`);
  else fs.rmSync(base, { recursive: true, force: true });
}
fs.writeFileSync(
  args.json!,
  `${JSON.stringify(result, (_, v) => (typeof v === 'bigint' ? String(v) : v), 2)}\n`,
);
printTables(result);

function printTables(r: Record<string, unknown>): void {
  const big = r.big as {
    dbBytes: number;
    compactMs: number;
    buildMs: number;
    before: { journal: number; history: number; db: number };
    after: { journal: number; history: number; db: number };
    points: number;
    checkpoints: number;
    restoreEqual: boolean;
    targets: Record<string, { txid: string; replayedBytes: number; snapshots: number }>;
    cold?: Record<string, { median: number }>;
    warm: Record<string, { median: number }>;
  };
  const mib = (b: number): string => `${(b / MB).toFixed(1)} MiB`;
  console.log(
    `\nDatabase ${mib(big.dbBytes)}; built in ${(big.buildMs / 1000).toFixed(1)} s; compacted in ${(big.compactMs / 1000).toFixed(1)} s`,
  );
  console.log(
    `journal+history before ${mib(big.before.journal + big.before.history)}, after ${mib(big.after.journal + big.after.history)} (history ${mib(big.after.history)}); ${big.points} points, ${big.checkpoints} checkpoints; restore latest == db: ${big.restoreEqual}`,
  );
  for (const [k, t] of Object.entries(big.targets)) {
    console.log(`  target ${k}: txid ${t.txid}, replays ${t.snapshots} snapshots, ${mib(t.replayedBytes)}`);
  }
  for (const mode of ['cold', 'warm'] as const) {
    const m = big[mode];
    if (!m) {
      console.log(`${mode}: not measured (--warm-only, or cannot drop the page cache: not root)`);
      continue;
    }
    const copy = m['copy+fsync']!.median;
    console.log(`\n${mode} (median of ${RUNS})     ms     × copy+fsync`);
    for (const [k, v] of Object.entries(m)) {
      console.log(`  ${k.padEnd(20)} ${v.median.toFixed(0).padStart(7)}  ${(v.median / copy).toFixed(2)}×`);
    }
  }
  const w = r.workloads as Record<string, Record<string, unknown>> | undefined;
  if (!w) return;
  console.log(
    '\nworkload  snapshots  (journal+history)/db before → after [retain 2h:all,1d:1h,forever:1d] / [forever:all]   compress  inflate MB/s (ratio)',
  );
  for (const [name, x] of Object.entries(w)) {
    const c = x.compaction as Record<
      string,
      { ratioAfter: number; pointsAfter: number; restoreEqual: boolean }
    >;
    const [a, b] = Object.values(c);
    const k = x.codec as { bytes: number; stored: number; compressMBs: number; inflateMBs: number };
    console.log(
      `  ${name}        ${String(x.snapshots).padStart(5)}  ${(x.ratioBefore as number).toFixed(2)} → ${a!.ratioAfter.toFixed(2)} (${a!.pointsAfter} points) / ${b!.ratioAfter.toFixed(2)} (${b!.pointsAfter} points)  restore==db ${a!.restoreEqual && b!.restoreEqual}   ${k.compressMBs.toFixed(0)}  ${k.inflateMBs.toFixed(0)} (${(k.bytes / k.stored).toFixed(2)}×)`,
    );
  }
}
