/**
 * Replication crash torture, shared by scripts/torture.ts (`--replication`) and test/torture.test.ts.
 *
 * Three kinds of process run at once: a hub (`mycelite serve`), a writer (test/helpers/repl-writer.ts:
 * open() with a hub, committing random transactions, reporting acknowledged commits and pushes) and
 * replicas (`mycelite follow`). Each iteration SIGKILLs one of them (sometimes all) at a random moment
 * while the writer commits, restarts it after a random delay, lets everything run, then pauses the writer
 * and checks the promises:
 *
 *  - lost (writer): every commit the writer acknowledged is in its database after its restart;
 *  - lost (hub): after a hub restart the hub's head is at least the last push it acknowledged;
 *  - divergence (writer): replaying the writer's journal gives its database, byte for byte;
 *  - divergence (hub): the hub's journal holds exactly the writer's snapshots (none lost, none twice);
 *  - divergence (replica, at a kill): the killed replica, recovered, equals the writer's state at the
 *    replica's txid (some committed state of the writer), byte for byte;
 *  - divergence (replica, at the end): every replica catches up to the writer's latest state (sha256).
 *
 * Every `generationEvery` iterations the writer and replicas start afresh on a new database name (the hub
 * keeps running), which bounds the cost of the replays.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import BetterSqlite3 from 'better-sqlite3';
import { HubClient } from '../../src/client/hub-client.js';
import { nodeRuntime } from '../../src/node/index.js';
import { ReplicaStore } from '../../src/replica/replica.js';
import { type Proc, sleep, start } from './child.js';
import { MYCELITE_BIN, readJournal, type SpawnedHub, spawnHub } from './hub.js';
import { prng } from './replica.js';
import { fileHash, replayBytes, sha256 } from './util.js';

const WRITER = fileURLToPath(new URL('./repl-writer.js', import.meta.url));

export type Kind = 'hub' | 'writer' | 'replica';

export interface ReplTortureOptions {
  dir: string;
  iterations: number;
  seed: number;
  /** Replica processes (default 2). */
  replicas?: number;
  /** Iterations per database before starting afresh (default 20). */
  generationEvery?: number;
  /** How long to wait for convergence before counting a divergence (ms, default 60 s). */
  convergeMs?: number;
  onIteration?: (i: number, stats: ReplTortureStats, problems: string[]) => void;
}

export interface ReplTortureStats {
  iterations: number;
  kills: Record<Kind, number>;
  /** Commits the writer acknowledged, and pushes the hub acknowledged (txids), over the run. */
  commits: number;
  pushedTxids: number;
  /** Killed replicas checked against the writer's state at their txid. */
  replicaStatesChecked: number;
  divergences: number;
  lostCommits: number;
  /** Processes that failed on their own (not killed by the harness). */
  processFailures: number;
  problems: string[];
}

async function killProc(proc: Proc | undefined): Promise<void> {
  if (!proc) return;
  proc.killedByUs = true;
  if (proc.p.exitCode === null && proc.p.signalCode === null) proc.p.kill('SIGKILL');
  await proc.closed;
}

const alive = (proc: Proc | undefined): boolean =>
  !!proc && proc.p.exitCode === null && proc.p.signalCode === null;

/** The last `c n txid` and `p txid` lines of a writer's output. */
function acks(out: string): { n: number; pushed: bigint } {
  let n = 0;
  let pushed = 0n;
  for (const line of out.split('\n')) {
    if (line.startsWith('c ')) n = Number(line.split(' ')[1]);
    else if (line.startsWith('p ')) {
      const t = BigInt(line.split(' ')[1]!);
      if (t > pushed) pushed = t;
    }
  }
  return { n, pushed };
}

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await sleep(10);
  }
  return true;
}

function safeHash(file: string): string | undefined {
  try {
    return fileHash(file);
  } catch {
    return undefined;
  }
}

export async function runReplTorture(o: ReplTortureOptions): Promise<ReplTortureStats> {
  const rand = prng(o.seed);
  const int = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
  const nReplicas = o.replicas ?? 2;
  const every = o.generationEvery ?? 20;
  const convergeMs = o.convergeMs ?? 60_000;
  fs.mkdirSync(o.dir, { recursive: true });
  const stats: ReplTortureStats = {
    iterations: 0,
    kills: { hub: 0, writer: 0, replica: 0 },
    commits: 0,
    pushedTxids: 0,
    replicaStatesChecked: 0,
    divergences: 0,
    lostCommits: 0,
    processFailures: 0,
    problems: [],
  };
  let problems: string[] = [];
  const diverged = (m: string): void => {
    stats.divergences++;
    problems.push(`divergence: ${m}`);
  };
  const lost = (m: string): void => {
    stats.lostCommits++;
    problems.push(`lost: ${m}`);
  };
  const failed = (m: string): void => {
    stats.processFailures++;
    problems.push(`process: ${m}`);
  };

  const hubDir = path.join(o.dir, 'hub');
  let hub: SpawnedHub = await spawnHub(hubDir);
  const port = hub.port;
  let gen = -1;
  let name = '';
  let genDir = '';
  let writerDb = '';
  let replicaDbs: string[] = [];
  let wtoken = '';
  let rtoken = '';
  let writer: Proc | undefined;
  let replicas: (Proc | undefined)[] = [];
  /** Acknowledged so far in this generation (highest acks row, highest pushed txid). */
  let ackedN = 0;
  let ackedPush = 0n;
  let genBroken = false;

  const startWriter = (): void => {
    writer = start([WRITER, writerDb, hub.url, name, wtoken, String(int(1, 2 ** 31 - 1))]);
  };
  const startReplica = (i: number): void => {
    replicas[i] = start([MYCELITE_BIN, 'follow', hub.url, replicaDbs[i]!, '--db', name], {
      MYCELITE_TOKEN: rtoken,
    });
  };
  /** Folds a writer's output into the acknowledged totals. */
  const collect = (w: Proc): void => {
    const a = acks(w.out);
    if (a.n > ackedN) {
      stats.commits += a.n - ackedN;
      ackedN = a.n;
    }
    if (a.pushed > ackedPush) {
      stats.pushedTxids += Number(a.pushed - ackedPush);
      ackedPush = a.pushed;
    }
  };
  const newGeneration = async (): Promise<void> => {
    await killProc(writer);
    for (const r of replicas) await killProc(r);
    // A generation that broke a promise stays on disk for inspection.
    if (genDir && !genBroken) fs.rmSync(genDir, { recursive: true, force: true });
    genBroken = false;
    gen++;
    name = `t${gen}`;
    genDir = path.join(o.dir, `gen-${gen}`);
    fs.mkdirSync(genDir, { recursive: true });
    writerDb = path.join(genDir, 'w.db');
    replicaDbs = Array.from({ length: nReplicas }, (_, i) => path.join(genDir, `r${i}.db`));
    wtoken = await hub.token(name, 'writer');
    rtoken = await hub.token(name, 'reader');
    ackedN = 0;
    ackedPush = 0n;
    startWriter();
    replicas = [];
    for (let i = 0; i < nReplicas; i++) startReplica(i);
  };
  const restartHub = async (): Promise<void> => {
    for (let attempt = 0; ; attempt++) {
      try {
        hub = await spawnHub(hubDir, port);
        return;
      } catch (e) {
        if (attempt >= 20) throw e;
        await sleep(100);
      }
    }
  };
  const hubHead = async (): Promise<bigint | undefined> => {
    const st = await new HubClient({ url: hub.url, db: name, token: rtoken }).state();
    return st?.head.txid;
  };

  /** A killed replica, recovered on a copy, equals the writer's state at the replica's txid. */
  const checkKilledReplica = async (i: number): Promise<void> => {
    const src = replicaDbs[i]!;
    if (!fs.existsSync(`${src}-mycelite/journal`)) return;
    const copy = path.join(genDir, `check-r${i}.db`);
    const clear = (): void => {
      for (const f of [copy, `${copy}-journal`, `${copy}-mycelite`])
        fs.rmSync(f, { recursive: true, force: true });
    };
    clear();
    // Everything the kill left: the database, SQLite's rollback journal if hot, the journal directory.
    fs.copyFileSync(src, copy);
    if (fs.existsSync(`${src}-journal`)) fs.copyFileSync(`${src}-journal`, `${copy}-journal`);
    fs.cpSync(`${src}-mycelite`, `${copy}-mycelite`, { recursive: true });
    let keep = false;
    try {
      const store = await ReplicaStore.open(nodeRuntime, copy);
      const at = store.position;
      store.close();
      if (!at) return;
      const want = sha256(await replayBytes(writerDb, { txid: at.txid }));
      stats.replicaStatesChecked++;
      if (fileHash(copy) !== want) {
        keep = true;
        diverged(`replica ${i} recovered at txid ${at.txid} != writer at that txid (kept: ${copy})`);
      }
    } catch (e) {
      keep = true;
      diverged(`replica ${i} (killed) did not recover: ${(e as Error).message} (kept: ${copy})`);
    } finally {
      if (!keep) clear();
    }
  };

  try {
    for (let i = 0; i < o.iterations; i++) {
      problems = [];
      if (i % every === 0) await newGeneration();
      // 1. Let everything run (the writer commits), then kill one kind, sometimes all.
      await waitFor(() => /^ready /m.test(writer!.out), 30_000);
      await sleep(int(20, 400));
      const r = rand();
      const victims: Kind[] =
        r < 0.06 ? ['hub', 'writer', 'replica'] : r < 0.36 ? ['writer'] : r < 0.64 ? ['hub'] : ['replica'];
      const which = int(0, nReplicas - 1);
      // Kill in random order, at slightly different moments.
      for (const v of victims.sort(() => rand() - 0.5)) {
        if (v === 'writer') {
          await killProc(writer);
          collect(writer!);
        } else if (v === 'hub') {
          await hub.kill('SIGKILL');
        } else {
          const idx = victims.length > 1 ? undefined : which;
          for (let k = 0; k < nReplicas; k++) if (idx === undefined || idx === k) await killProc(replicas[k]);
        }
        stats.kills[v]++;
        if (victims.length > 1) await sleep(int(0, 30));
      }
      if (victims.includes('replica')) {
        for (let k = 0; k < nReplicas; k++) if (!alive(replicas[k])) await checkKilledReplica(k);
      }
      // 2. Restart after a random pause.
      await sleep(int(0, 200));
      if (victims.includes('hub')) {
        await restartHub();
        if (writer && alive(writer)) collect(writer);
        const head = (await hubHead()) ?? 0n;
        if (head < ackedPush)
          lost(`the hub acknowledged txid ${ackedPush}, after its restart its head is ${head}`);
      }
      if (victims.includes('writer')) startWriter();
      for (let k = 0; k < nReplicas; k++) {
        if (!alive(replicas[k])) {
          if (replicas[k] && !replicas[k]!.killedByUs)
            failed(`follow ${k} exited: ${replicas[k]!.err.slice(-500)}`);
          startReplica(k);
        }
      }
      await sleep(int(50, 300));

      // 3. Pause the writer, flush, check everything.
      const ready = await waitFor(() => /^ready /m.test(writer!.out) || !alive(writer), 30_000);
      if (!ready || !alive(writer)) {
        failed(`writer did not start: ${writer!.err.slice(-800)}`);
        startWriter();
        await waitFor(() => /^ready /m.test(writer!.out), 30_000);
      }
      // A restarted writer recovered every commit it had acknowledged before its kill.
      const rd = /^ready (\d+) (\d+)$/m.exec(writer!.out);
      if (victims.includes('writer') && rd && Number(rd[2]) < ackedN)
        lost(`writer acknowledged commit ${ackedN}, after its restart its database has ${rd[2]}`);
      const mark = writer!.out.length;
      writer!.p.stdin!.write('pause\n');
      const flushed = await waitFor(() => /^f \d+$/m.test(writer!.out.slice(mark)) || !alive(writer), 90_000);
      collect(writer!);
      const f = /^f (\d+)$/m.exec(writer!.out.slice(mark));
      if (!flushed || !f) {
        failed(`writer did not flush: ${writer!.err.slice(-800)}`);
      } else {
        const txid = BigInt(f[1]!);
        const n = maxAck(writerDb);
        if (n < ackedN) lost(`writer acknowledged commit ${ackedN}, its database has ${n}`);
        const replay = sha256(await replayBytes(writerDb));
        const want = fileHash(writerDb);
        if (replay !== want) diverged(`writer: journal replay != database at txid ${txid}`);
        const head = await hubHead();
        if (head !== txid) diverged(`hub head ${head} != writer txid ${txid} after flush`);
        await compareJournals(writerDb, path.join(hubDir, 'dbs', name, 'journal'), diverged);
        // Every replica catches up to the writer's latest state.
        const ok = await waitFor(() => replicaDbs.every((r) => safeHash(r) === want), convergeMs);
        if (!ok) {
          const behind = replicaDbs.filter((r) => safeHash(r) !== want).map((r) => path.basename(r));
          diverged(`replicas ${behind.join(', ')} did not reach the writer's txid ${txid}`);
        }
        writer!.p.stdin!.write('resume\n');
      }
      if (problems.length > 0) genBroken = true;
      stats.iterations++;
      stats.problems.push(...problems.map((p) => `#${i}: ${p}`));
      o.onIteration?.(i, stats, problems);
    }
  } finally {
    await killProc(writer);
    for (const r of replicas) await killProc(r);
    await hub.kill('SIGKILL');
  }
  return stats;
}

/** The highest acks row of the writer's database (read-only, native SQLite). */
function maxAck(dbPath: string): number {
  if (!fs.existsSync(dbPath) || fs.statSync(dbPath).size === 0) return 0;
  const db = new BetterSqlite3(dbPath, { readonly: true, fileMustExist: true });
  try {
    db.pragma('busy_timeout = 5000');
    const has = db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'acks'").get();
    if (!has) return 0;
    return Number(db.prepare('SELECT coalesce(max(n), 0) FROM acks').pluck().get());
  } finally {
    db.close();
  }
}

/** The hub's journal holds exactly the writer's snapshots: same count, same bytes, same order. */
async function compareJournals(writerDb: string, hubJournal: string, diverged: (m: string) => void) {
  const mine = await readJournal(`${writerDb}-mycelite/journal`);
  if (!fs.existsSync(hubJournal)) {
    if (mine.snapshots.length > 0) diverged('the hub has no journal');
    return;
  }
  const hubs = await readJournal(hubJournal);
  if (hubs.snapshots.length !== mine.snapshots.length) {
    diverged(`hub holds ${hubs.snapshots.length} snapshots, writer ${mine.snapshots.length}`);
    return;
  }
  for (let k = 0; k < mine.snapshots.length; k++) {
    if (sha256(hubs.snapshots[k]!.bytes) !== sha256(mine.snapshots[k]!.bytes)) {
      diverged(`snapshot ${k + 1} differs between hub and writer`);
      return;
    }
  }
}
