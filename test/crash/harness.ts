/**
 * Crash-consistency harness, shared by test/crash.test.ts and scripts/torture.ts.
 *
 * Each iteration starts test/crash/writer.ts as a child process on a database (continuing the database
 * of earlier iterations, so recovery must handle repeated crashes), SIGKILLs it at a random moment, then
 * reopens the database through `open()` in this process (which performs crash recovery) and checks
 * Mycelite's promise:
 *
 *  - recovery: `open()` does not throw;
 *  - divergence: the journal's replay equals the database byte for byte (verifyDatabase);
 *  - lost-ack: every acknowledged commit is in the database (max(acks.n) ≥ the last acknowledged n),
 *    and at most one commit beyond it (the one that committed but was killed before its ack);
 *  - acks: the acks rows are exactly 1..max, and never fewer than after the previous iteration;
 *  - txid: position().txid equals the number of snapshots in the journal, and never goes back;
 *  - integrity: `PRAGMA integrity_check` is ok (native SQLite, better-sqlite3, read-only).
 *
 * On a failure the files as the kill left them (before recovery) are kept in `<dir>/failure-<i>-pre/`
 * and the database after recovery in its generation folder; that configuration then starts afresh.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import BetterSqlite3 from 'better-sqlite3';
import { nodeRuntime, open } from '../../src/node/index.js';
import { verifyDatabase } from '../../src/restore/restore.js';
import { prng } from '../helpers/prng.js';

export const WRITER = fileURLToPath(new URL('./writer.js', import.meta.url));

/** A journal_mode, synchronous setting and open()'s durability for the writer. */
export interface CrashConfig {
  journalMode: string;
  synchronous: string;
  durability: string;
}

export const JOURNAL_MODES = ['DELETE', 'TRUNCATE', 'PERSIST'] as const;
export const SYNCHRONOUS = ['FULL', 'NORMAL', 'OFF'] as const;
export const DURABILITIES = ['journal', 'sqlite'] as const;

/** Every combination of `modes` × `syncs` × `durabilities`. */
export function configs(
  modes: readonly string[] = JOURNAL_MODES,
  syncs: readonly string[] = SYNCHRONOUS,
  durabilities: readonly string[] = DURABILITIES,
): CrashConfig[] {
  return durabilities.flatMap((durability) =>
    modes.flatMap((journalMode) => syncs.map((synchronous) => ({ journalMode, synchronous, durability }))),
  );
}

export const configName = (c: CrashConfig): string => `${c.durability}:${c.journalMode}/${c.synchronous}`;

/** Options of runHarness. */
export interface HarnessOptions {
  /** Working directory (databases, acks files, kept failures). */
  dir: string;
  /** Configurations, used round-robin. */
  configs: CrashConfig[];
  iterations: number;
  seed?: number;
  /** Iterations a database is continued for before a configuration starts a fresh one (default 25). */
  freshEvery?: number;
  /** Kill delay after the writer reported ready, in ms (default 20–400). */
  minDelayMs?: number;
  maxDelayMs?: number;
  /** Share of kills timed from the spawn instead (0–300 ms: during start-up and the child's own recovery). */
  earlyKillRate?: number;
  /**
   * Make the writer compact its history automatically once its journal passes this many bytes (retention
   * '1s:all,forever:1s', so points older than a second are merged): kills land inside compactions too.
   */
  compactAt?: number;
  /** Called after every iteration. */
  onIteration?: (result: IterationResult, stats: HarnessStats) => void;
}

export type FailureKind = 'writer' | 'recovery' | 'divergence' | 'lost-ack' | 'acks' | 'txid' | 'integrity';

/** One broken promise. */
export interface Failure {
  iteration: number;
  config: string;
  kind: FailureKind;
  message: string;
  /** Copy of the files as the kill left them, before recovery. */
  preRecovery?: string;
  /** The database after recovery. */
  database?: string;
}

/** The outcome of one iteration. */
export interface IterationResult {
  iteration: number;
  config: string;
  killed: boolean;
  /** Killed before the writer reported ready. */
  early: boolean;
  lastAck: number;
  maxAck: number;
  txid: bigint;
  failures: Failure[];
}

/** Totals of a run. */
export interface HarnessStats {
  iterations: number;
  kills: number;
  earlyKills: number;
  /** Acknowledged commits across the run. */
  acks: number;
  /** Commits found that the writer had not acknowledged yet (killed between commit and ack). */
  unackedCommits: number;
  /** Iterations whose writer had compacted its history (a history file beside the journal) when killed. */
  compacted: number;
  failures: Failure[];
  count: Record<FailureKind, number>;
}

interface ConfigState {
  generation: number;
  runs: number;
  dir: string;
  db: string;
  acks: string;
  txid: bigint;
  maxAck: number;
  fresh: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs the harness; resolves with the totals (failures are reported, never thrown). */
export async function runHarness(options: HarnessOptions): Promise<HarnessStats> {
  const seed = options.seed ?? Date.now() % 2 ** 31;
  const rand = prng(seed);
  const int = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
  const freshEvery = options.freshEvery ?? 25;
  const minDelay = options.minDelayMs ?? 20;
  const maxDelay = options.maxDelayMs ?? 400;
  const earlyRate = options.earlyKillRate ?? 0.1;
  fs.mkdirSync(options.dir, { recursive: true });
  const stats: HarnessStats = {
    iterations: 0,
    kills: 0,
    earlyKills: 0,
    acks: 0,
    unackedCommits: 0,
    compacted: 0,
    failures: [],
    count: { writer: 0, recovery: 0, divergence: 0, 'lost-ack': 0, acks: 0, txid: 0, integrity: 0 },
  };
  const states = new Map<string, ConfigState>();
  const stateOf = (c: CrashConfig): ConfigState => {
    const name = configName(c);
    let s = states.get(name);
    if (!s || s.fresh || s.runs >= freshEvery) {
      const generation = (s?.generation ?? -1) + 1;
      // A generation that failed stays on disk for inspection; a good one is deleted.
      if (s && !s.fresh) fs.rmSync(s.dir, { recursive: true, force: true });
      const dir = path.join(options.dir, `${c.durability}-${c.journalMode}-${c.synchronous}-${generation}`);
      fs.rmSync(dir, { recursive: true, force: true });
      fs.mkdirSync(dir, { recursive: true });
      s = {
        generation,
        runs: 0,
        dir,
        db: path.join(dir, 'test.db'),
        acks: path.join(dir, 'acks'),
        txid: 0n,
        maxAck: 0,
        fresh: false,
      };
      states.set(name, s);
    }
    return s;
  };

  for (let i = 0; i < options.iterations; i++) {
    const config = options.configs[i % options.configs.length]!;
    const name = configName(config);
    const s = stateOf(config);
    s.runs++;
    const failures: Failure[] = [];
    const fail = (kind: FailureKind, message: string) => {
      failures.push({ iteration: i, config: name, kind, message });
    };

    // 1. Run the writer and kill it.
    const early = rand() < earlyRate;
    const delay = early ? int(0, 300) : int(minDelay, maxDelay);
    const run = await runWriter(s, config, int(1, 2 ** 31 - 1), early, delay, options.compactAt);
    if (run.killed) stats.kills++;
    if (run.killed && run.early) stats.earlyKills++;
    if (run.error) fail('writer', run.error);

    // 2. Keep the files as the crash left them, for a reproduction.
    const pre = path.join(options.dir, 'pre-recovery');
    copyCrashState(s.db, pre);
    if (fs.existsSync(`${s.db}-mycelite/history`)) stats.compacted++;

    // 3. Recover and check.
    const lastAck = readLastAck(s.acks);
    let maxAck = -1;
    let txid = -1n;
    let opened = false;
    try {
      const db = await open(s.db);
      opened = true;
      try {
        const pos = db.position();
        txid = pos.txid;
        const hasAcks = db.prepare("SELECT count(*) FROM sqlite_master WHERE name = 'acks'").pluck().get();
        const row = hasAcks
          ? (db
              .prepare(
                'SELECT count(*) AS c, coalesce(min(n), 0) AS lo, coalesce(max(n), 0) AS hi, ' +
                  'count(DISTINCT n) AS d FROM acks',
              )
              .get() as { c: number; lo: number; hi: number; d: number })
          : { c: 0, lo: 0, hi: 0, d: 0 };
        maxAck = Number(row.hi);
        if (maxAck < lastAck) {
          fail('lost-ack', `acknowledged commit n=${lastAck} is lost: max(acks.n) = ${maxAck}`);
        } else if (maxAck > Math.max(lastAck, s.maxAck) + 1) {
          // At most one commit past what is known: the last acknowledged one, or one that landed in an
          // earlier iteration without its acknowledgement (the writer continues from the database's n).
          fail(
            'acks',
            `max(acks.n) = ${maxAck} but the last acknowledged n = ${lastAck} (and ${s.maxAck} was recovered before)`,
          );
        }
        if (Number(row.c) !== maxAck || Number(row.d) !== maxAck || (maxAck > 0 && Number(row.lo) !== 1)) {
          fail('acks', `acks rows are not exactly 1..${maxAck}: ${JSON.stringify(row)}`);
        }
        if (maxAck < s.maxAck) fail('acks', `max(acks.n) went back from ${s.maxAck} to ${maxAck}`);
        if (txid < s.txid) fail('txid', `position().txid went back from ${s.txid} to ${txid}`);
      } finally {
        db.close();
      }
    } catch (e) {
      if (!opened) fail('recovery', `open() threw: ${describe(e)}`);
      else fail('recovery', `checks after open() threw: ${describe(e)}`);
    }

    if (opened) {
      try {
        const tmp = path.join(options.dir, 'verify.tmp');
        const v = await verifyDatabase(nodeRuntime.fs, s.db, tmp);
        if (!v.ok) fail('divergence', `journal replay != database: ${v.problem}`);
        // With compaction, merged points make fewer snapshots than txids; the last txid still matches.
        const points = options.compactAt ? BigInt(v.snapshots) <= txid : BigInt(v.snapshots) === txid;
        if (!points || v.lastTxid !== txid) {
          fail(
            'txid',
            `position().txid = ${txid} but the journal holds ${v.snapshots} snapshots (last ${v.lastTxid})`,
          );
        }
        if (v.tornBytes !== 0) fail('divergence', `journal still has ${v.tornBytes} torn bytes after open()`);
      } catch (e) {
        fail('divergence', `verifyDatabase threw: ${describe(e)}`);
      }
      try {
        const native = new BetterSqlite3(s.db, { readonly: true, fileMustExist: true });
        try {
          const result = native.pragma('integrity_check', { simple: true });
          if (result !== 'ok') fail('integrity', `integrity_check: ${String(result)}`);
        } finally {
          native.close();
        }
      } catch (e) {
        fail('integrity', `better-sqlite3: ${describe(e)}`);
      }
    }

    if (maxAck >= 0) {
      stats.acks += Math.max(0, lastAck - s.maxAck);
      if (maxAck > lastAck) stats.unackedCommits++;
      s.maxAck = maxAck;
    }
    if (txid >= 0n) s.txid = txid;
    // Later iterations of this database would only repeat a failure: keep it and start afresh.
    if (failures.length > 0) {
      const kept = path.join(options.dir, `failure-${i}-pre`);
      fs.rmSync(kept, { recursive: true, force: true });
      fs.renameSync(pre, kept);
      for (const f of failures) {
        f.preRecovery = kept;
        f.database = s.db;
        stats.count[f.kind]++;
        stats.failures.push(f);
      }
      s.fresh = true;
    }
    stats.iterations++;
    options.onIteration?.(
      { iteration: i, config: name, killed: run.killed, early: run.early, lastAck, maxAck, txid, failures },
      stats,
    );
  }
  for (const s of states.values()) if (!s.fresh) fs.rmSync(s.dir, { recursive: true, force: true });
  fs.rmSync(path.join(options.dir, 'pre-recovery'), { recursive: true, force: true });
  return stats;
}

interface WriterRun {
  killed: boolean;
  early: boolean;
  error?: string;
}

/** Starts the writer; kills it `delay` ms after spawn (early) or after it reported ready. */
async function runWriter(
  s: ConfigState,
  c: CrashConfig,
  seed: number,
  early: boolean,
  delay: number,
  compactAt: number | undefined,
): Promise<WriterRun> {
  const child = spawn(process.execPath, [WRITER, s.db, c.journalMode, c.synchronous, String(seed), s.acks], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      MYCELITE_TEST_DURABILITY: c.durability,
      ...(compactAt ? { MYCELITE_TEST_COMPACT_AT: String(compactAt) } : {}),
    },
  });
  let stderr = '';
  let stdout = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    if (stderr.length < 8000) stderr += d;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  const ready = new Promise<boolean>((resolve) => {
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      if (stdout.includes('ready\n')) resolve(true);
    });
    void exited.then(() => resolve(false));
  });
  let wasReady = false;
  if (early) {
    await Promise.race([sleep(delay), exited]);
    wasReady = stdout.includes('ready\n');
  } else {
    const timeout = sleep(30_000).then(() => false);
    wasReady = await Promise.race([ready, timeout]);
    // A compacting writer is let run until it has compacted once (history file), whatever the machine's
    // speed: the kill then lands in its later work, compactions and journal rewrites included.
    if (wasReady && compactAt) {
      const history = `${s.db}-mycelite/history`;
      for (let waited = 0; !fs.existsSync(history) && waited < 20_000; waited += 20) {
        if (child.exitCode !== null || child.signalCode !== null) break;
        await sleep(20);
      }
    }
    if (wasReady) await Promise.race([sleep(delay), exited]);
  }
  const stillRunning = child.exitCode === null && child.signalCode === null;
  if (stillRunning) kill(child);
  const { code, signal } = await exited;
  const killed = stillRunning && signal === 'SIGKILL';
  const result: WriterRun = { killed, early: !wasReady };
  if (!stillRunning) {
    result.error = `writer exited by itself (code ${code}, signal ${signal}): ${stderr.trim() || '(no stderr)'}`;
  } else if (!early && !wasReady) {
    result.error = `writer did not report ready within 30 s: ${stderr.trim() || '(no stderr)'}`;
  }
  return result;
}

function kill(child: ChildProcess): void {
  child.kill('SIGKILL');
}

/** The highest n the writer acknowledged (complete lines only). */
function readLastAck(acksPath: string): number {
  if (!fs.existsSync(acksPath)) return 0;
  const text = fs.readFileSync(acksPath, 'utf8');
  const lines = text.split('\n');
  lines.pop(); // the part after the last newline: empty, or an incomplete line
  let max = 0;
  for (const l of lines) {
    const v = Number(l);
    if (Number.isInteger(v) && v > max) max = v;
  }
  return max;
}

/** Copies the database, its rollback journal and its Mycelite journal to `to`. */
function copyCrashState(db: string, to: string): void {
  fs.rmSync(to, { recursive: true, force: true });
  fs.mkdirSync(path.join(to, 'test.db-mycelite'), { recursive: true });
  for (const [from, name] of [
    [db, 'test.db'],
    [`${db}-journal`, 'test.db-journal'],
    [`${db}-mycelite/journal`, 'test.db-mycelite/journal'],
  ] as const) {
    if (fs.existsSync(from)) fs.copyFileSync(from, path.join(to, name));
  }
}

function describe(e: unknown): string {
  if (e instanceof Error) {
    const cause = e.cause instanceof Error ? ` (cause: ${e.cause.message})` : '';
    return `${e.name}: ${e.message}${cause}`;
  }
  return String(e);
}

/** A one-line-per-failure report. */
export function formatFailures(failures: Failure[]): string {
  return failures
    .map(
      (f) =>
        `#${f.iteration} ${f.config} ${f.kind}: ${f.message}\n    pre-recovery files: ${f.preRecovery}\n    database: ${f.database}`,
    )
    .join('\n');
}
