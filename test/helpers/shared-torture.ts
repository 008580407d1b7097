/**
 * Shared-database torture, shared by scripts/torture.ts (`--shared`) and test/shared-torture.test.ts.
 *
 * A hub (`mycelite serve`, on files; or two hubs on a NATS cluster) and N device processes
 * (test/helpers/shared-device.ts: a device of one shared database, committing random transactions), each
 * device reaching its hub through its own TCP proxy (test/helpers/tcp-proxy.ts). Each iteration runs a
 * random schedule of faults while the devices commit: a device's network taken away and given back, its
 * connections cut, a device SIGKILLed (restarted later), a hub SIGKILLed (restarted on the same port and
 * data). Then everything comes back, every device flushes and idles until none has anything pending and
 * all hold the hub's head, and the promises are checked:
 *
 *  - divergence: every device's file, byte for byte (sha256), equals every other's and a plain replica's
 *    (`mycelite follow --once`); each device's journal holds the hub's snapshots at the same txids;
 *    verify passes on every device and on the replica;
 *  - lost: every transaction a device acknowledged (its `<db>.acks`) is in the `log` table exactly once
 *    or was reported rejected (`<db>.events`), never both; nothing is pending;
 *  - history: walking the hub's history snapshot by snapshot, the `log` table never loses a row (no
 *    transaction leaves the hub's history once in it) and no conflict ever touches `log` (it would mean
 *    a transaction applied twice);
 *  - process: a device that exits on its own, a sync that fails, devices that do not converge.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import BetterSqlite3 from 'better-sqlite3';
import { HubClient, HubUnreachableError } from '../../src/client/hub-client.js';
import { JournalReader, loadHash, memorySource, walkPatches } from '../../src/format/index.js';
import { nodeRuntime } from '../../src/node/index.js';
import { StreamParser } from '../../src/protocol/index.js';
import { verifyDatabase } from '../../src/restore/restore.js';
import { type Proc, sleep, start } from './child.js';
import { runCli } from './cli.js';
import { type SpawnedHub, spawnHub } from './hub.js';
import { type NatsCluster, startNatsCluster } from './nats-cluster.js';
import { prng } from './prng.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';
import { fileHash } from './util.js';

const DEVICE = fileURLToPath(new URL('./shared-device.js', import.meta.url));

export interface SharedTortureOptions {
  dir: string;
  iterations: number;
  seed: number;
  /** Device processes (default 3). */
  devices?: number;
  /** 'files': one hub on a data directory; 'nats': two hubs on a 3-node NATS cluster (default 'files'). */
  storage?: 'files' | 'nats';
  /**
   * Devices also kill themselves now and then while a rebase's conflict events are delivered (after the
   * rebase was written, before its rejections are reported). Default false.
   */
  killInEvents?: boolean;
  /** Devices that may join later, each with a new empty file (default 0). */
  joins?: number;
  /** Fault steps per iteration, at most (default 6). */
  steps?: number;
  /**
   * End every iteration with a fault of each kind in turn (a hub killed, a device killed right after
   * coming back online, a device joining if `joins` allows, a device killed), whatever the seed: short
   * runs then always meet each.
   */
  forceFaults?: boolean;
  /** Also run the `mycelite verify` command on every file at the end (default true). */
  cliVerify?: boolean;
  /** How long devices may take to converge before it counts as a problem (ms, default 120 s). */
  convergeMs?: number;
  onIteration?: (i: number, stats: SharedTortureStats, problems: string[]) => void;
  /** Progress lines (faults, phases), for debugging a run (they also go to DIR/trace.log). */
  trace?: (line: string) => void;
  /** Aborting it stops every process of the run (a test's `t.signal`: its timeout). */
  signal?: AbortSignal;
}

export interface SharedTortureStats {
  iterations: number;
  kills: { hub: number; device: number };
  /** Devices that killed themselves in the middle of a rebase (in the conflict handler). */
  killedInRebase: number;
  /** Device kills that left a rebase's re-apply to undo or its rewrite to finish (its pin or intent file). */
  killedInRewrite: number;
  /** Devices that joined after the start. */
  joins: number;
  /** Times a device was taken offline, and connections cut. */
  offline: number;
  cuts: number;
  /** Local transactions acknowledged (all devices, over the run). */
  commits: number;
  /** Conflict and rejection events reported, and rejected transactions (distinct seqs). */
  conflicts: number;
  rejections: number;
  /** Rejections reported more than once for the same seq (after a crash). */
  repeatedRejections: number;
  /** Snapshots of the hub's history walked. */
  hubSnapshots: number;
  divergences: number;
  lost: number;
  processFailures: number;
  problems: string[];
}

const alive = (proc: Proc | undefined): boolean =>
  !!proc && proc.p.exitCode === null && proc.p.signalCode === null;

async function killProc(proc: Proc | undefined): Promise<void> {
  if (!proc) return;
  proc.killedByUs = true;
  if (alive(proc)) proc.p.kill('SIGKILL');
  await proc.closed;
}

/**
 * Sends `cmd` and waits for the first line after it that matches `re` (no `cmd`: any line so far);
 * undefined if the process exits or `ms` pass first.
 */
async function ask(proc: Proc, cmd: string | undefined, re: RegExp, ms: number): Promise<string | undefined> {
  // Without a command: any line so far counts (e.g. `ready`).
  const mark = cmd === undefined ? 0 : proc.out.length;
  if (cmd !== undefined) proc.p.stdin!.write(`${cmd}\n`);
  const deadline = Date.now() + ms;
  for (;;) {
    const lines = proc.out.slice(mark).split('\n');
    lines.pop(); // an unfinished line
    const hit = lines.find((l) => re.test(l));
    if (hit !== undefined) return hit;
    if (!alive(proc) || Date.now() > deadline) return undefined;
    await sleep(10);
  }
}

/** Reads the lines of a file written one line per write(2) (a missing file has none). */
function lines(file: string): string[] {
  if (!fs.existsSync(file)) return [];
  const text = fs.readFileSync(file, 'utf8');
  const all = text.split('\n');
  all.pop();
  return all;
}

/** What one device reported: acknowledged seqs, rejected seqs (with how often), conflict events. */
function reports(dbPath: string): {
  acked: Set<string>;
  rejected: Map<string, number>;
  conflicts: string[];
} {
  const acked = new Set(lines(`${dbPath}.acks`));
  const rejected = new Map<string, number>();
  const conflicts: string[] = [];
  for (const l of lines(`${dbPath}.events`)) {
    const [kind, seq] = l.split(' ');
    if (kind === 'rejected') rejected.set(seq!, (rejected.get(seq!) ?? 0) + 1);
    else if (kind === 'conflict') conflicts.push(l);
  }
  return { acked, rejected, conflicts };
}

/** The (device, seq) rows of `log` in a database file, read with native SQLite. */
function logRows(file: string): Map<string, Set<string>> {
  const db = new BetterSqlite3(file, { readonly: true, fileMustExist: true });
  try {
    const out = new Map<string, Set<string>>();
    for (const r of db.prepare('SELECT device, seq FROM log').raw().all() as [string, number][]) {
      const s = out.get(r[0]) ?? new Set<string>();
      s.add(String(r[1]));
      out.set(r[0], s);
    }
    return out;
  } finally {
    db.close();
  }
}

/**
 * The hub's history walked snapshot by snapshot, incrementally across checks: the database image after
 * each snapshot (built in memory) and its `log` rows, which must only grow.
 */
class HistoryWalk {
  private image = new Uint8Array(0);
  private pageSize = 0;
  private at = { txid: 0n, checksum: 0n };
  private journal: Uint8Array | undefined;
  private ids = new Set<string>();
  /** Rows that left the history: id → the snapshot that took them out. */
  private missing = new Map<string, bigint>();
  snapshots = 0;

  /** Walks the snapshots after the last one walked; returns the problems found. */
  async walk(client: HubClient): Promise<string[]> {
    const problems: string[] = [];
    const stream = await client.read({
      after: this.at,
      ...(this.journal ? { journalId: this.journal } : {}),
      follow: false,
    });
    const parser = new StreamParser({ stream: true });
    const reader = stream.getReader();
    for (;;) {
      const chunk = await reader.read();
      if (chunk.done) break;
      for (const item of parser.push(chunk.value)) {
        if (item.kind === 'header') this.journal = item.header.journalId;
        if (item.kind !== 'snapshot') continue;
        const h = item.header;
        if (h.txid !== this.at.txid + 1n || h.preChecksum !== this.at.checksum) {
          problems.push(`hub history: snapshot ${h.txid} does not follow txid ${this.at.txid}`);
          return problems;
        }
        const pages: number[] = [];
        walkPatches(memorySource(item.bytes), 0, h, (pgno) => {
          if (pages[pages.length - 1] !== pgno) pages.push(pgno);
        });
        this.apply(item.bytes, h);
        this.at = { txid: h.txid, checksum: h.postChecksum };
        this.snapshots++;
        const before = this.ids;
        this.rows();
        const gone = [...before].filter((id) => !this.ids.has(id));
        if (gone.length > 0) {
          problems.push(
            `hub history: snapshot ${h.txid} took ${gone.length} row(s) out of log: ${gone.join(', ')} ` +
              `(its header: dbPages ${h.dbPages}, timestamp ${h.timestamp}, commitTag ${h.commitTag}, ` +
              `pages ${pages.join(' ')})`,
          );
          for (const id of gone) this.missing.set(id, h.txid);
        }
        for (const [id, at] of this.missing) {
          if (!this.ids.has(id)) continue;
          problems.push(`hub history: log row ${id}, out since snapshot ${at}, came back at ${h.txid}`);
          this.missing.delete(id);
        }
      }
    }
    parser.end();
    return problems;
  }

  private apply(
    bytes: Uint8Array,
    h: { pageSize: number; dbPages: number } & Parameters<typeof walkPatches>[2],
  ) {
    if (h.pageSize !== this.pageSize || this.image.length !== h.pageSize * h.dbPages) {
      const next = new Uint8Array(h.pageSize * h.dbPages);
      if (h.pageSize === this.pageSize) next.set(this.image.subarray(0, next.length));
      this.image = next;
      this.pageSize = h.pageSize;
    }
    walkPatches(memorySource(bytes), 0, h, (pgno, offset, run) => {
      this.image.set(run, (pgno - 1) * h.pageSize + offset);
    });
  }

  /** Reads the ids of log in the current image into `ids`. */
  private rows(): void {
    this.ids = new Set();
    if (this.image.length === 0) return;
    const db = new BetterSqlite3(Buffer.from(this.image));
    try {
      const has = db.prepare("SELECT 1 FROM sqlite_schema WHERE name = 'log'").get();
      if (has) this.ids = new Set(db.prepare('SELECT id FROM log').pluck().all() as string[]);
    } finally {
      db.close();
    }
  }
}

/** Snapshots of a journal file: txid → bytes, and the journal's base txid. */
function journalSnapshots(file: string): { base: bigint; byTxid: Map<bigint, Uint8Array> } {
  const bytes = new Uint8Array(fs.readFileSync(file));
  const reader = new JournalReader(memorySource(bytes), { merged: true });
  const byTxid = new Map<bigint, Uint8Array>();
  for (const s of reader.snapshots()) byTxid.set(s.txid, bytes.slice(s.offset, s.offset + s.length));
  return { base: reader.header.baseTxid, byTxid };
}

/** The hub's snapshots as a stream from the start (txid → bytes). */
async function hubSnapshots(client: HubClient): Promise<Map<bigint, Uint8Array>> {
  const stream = await client.read({ after: { txid: 0n, checksum: 0n }, follow: false });
  const parser = new StreamParser({ stream: true });
  const out = new Map<bigint, Uint8Array>();
  const reader = stream.getReader();
  for (;;) {
    const chunk = await reader.read();
    if (chunk.done) break;
    for (const item of parser.push(chunk.value)) {
      if (item.kind === 'snapshot') out.set(item.header.txid, item.bytes.slice());
    }
  }
  parser.end();
  return out;
}

/**
 * Runs a read of the hub again when the connection failed: fetch reuses a kept-alive connection the hub
 * may be closing at that moment ("other side closed"), which is no finding.
 */
async function retried<T>(read: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await read();
    } catch (e) {
      if (attempt >= 5 || !(e instanceof HubUnreachableError || (e as Error).name === 'TypeError')) throw e;
      await sleep(100);
    }
  }
}

const same = (a: Uint8Array, b: Uint8Array): boolean =>
  a.length === b.length && a.every((v, i) => v === b[i]);

export async function runSharedTorture(o: SharedTortureOptions): Promise<SharedTortureStats> {
  await loadHash();
  const rand = prng(o.seed);
  const int = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
  const nDevices = o.devices ?? 3;
  const maxSteps = o.steps ?? 6;
  const maxJoins = o.joins ?? 0;
  const convergeMs = o.convergeMs ?? 120_000;
  const name = 'shared';
  fs.mkdirSync(o.dir, { recursive: true });
  // Every step also goes to DIR/trace.log (kept with the files of a failed or hung run).
  const traceFile = path.join(o.dir, 'trace.log');
  const trace = (line: string): void => {
    fs.appendFileSync(traceFile, `${new Date().toISOString()} ${line}\n`);
    o.trace?.(line);
  };
  const stats: SharedTortureStats = {
    iterations: 0,
    kills: { hub: 0, device: 0 },
    joins: 0,
    killedInRewrite: 0,
    killedInRebase: 0,
    offline: 0,
    cuts: 0,
    commits: 0,
    conflicts: 0,
    rejections: 0,
    repeatedRejections: 0,
    hubSnapshots: 0,
    divergences: 0,
    lost: 0,
    processFailures: 0,
    problems: [],
  };
  let problems: string[] = [];
  const diverged = (m: string): void => {
    stats.divergences++;
    problems.push(`divergence: ${m}`);
  };
  const lost = (m: string): void => {
    stats.lost++;
    problems.push(`lost: ${m}`);
  };
  const failed = (m: string): void => {
    stats.processFailures++;
    problems.push(`process: ${m}`);
  };

  // Hubs: one on files, or two on one NATS cluster (same key: each accepts the other's tokens).
  let cluster: NatsCluster | undefined;
  const hubDirs: string[] = [];
  const hubArgs: string[][] = [];
  if (o.storage === 'nats') {
    cluster = await startNatsCluster(3);
    const keyDir = path.join(o.dir, 'hub-key');
    for (let i = 0; i < 2; i++) {
      hubDirs.push(keyDir);
      hubArgs.push(['--storage', cluster.url]);
    }
  } else {
    hubDirs.push(path.join(o.dir, 'hub'));
    hubArgs.push([]);
  }
  const hubs: (SpawnedHub | undefined)[] = [];
  const ports: number[] = [];
  try {
    for (let i = 0; i < hubDirs.length; i++) {
      const h = await spawnHub(hubDirs[i]!, 0, hubArgs[i]);
      hubs.push(h);
      ports.push(h.port);
    }
  } catch (e) {
    // A hub that does not start: nothing may stay behind (a live nats-server keeps the test process up).
    for (const h of hubs) await h?.kill('SIGKILL');
    await cluster?.stop();
    throw e;
  }
  const restartHub = async (i: number): Promise<void> => {
    for (let attempt = 0; ; attempt++) {
      try {
        hubs[i] = await spawnHub(hubDirs[i]!, ports[i], hubArgs[i]);
        return;
      } catch (e) {
        if (attempt >= 50) throw e;
        await sleep(100);
      }
    }
  };
  const anyHub = (): SpawnedHub => hubs.find((h) => h !== undefined)!;
  const wtoken = await anyHub().token(name, 'writer');
  const rtoken = await anyHub().token(name, 'reader');
  const client = (): HubClient => new HubClient({ url: anyHub().url, db: name, token: rtoken });

  const dbs: string[] = [];
  const hubOf = (i: number): number => i % hubs.length;
  const proxies: TcpProxy[] = [];
  const offline: boolean[] = [];
  const devices: (Proc | undefined)[] = [];
  const conflictsSeen: number[] = [];
  const outsideSeen: number[] = [];
  const reportedLost = new Set<string>();
  const startDevice = (i: number): void => {
    const d = start(
      [DEVICE, dbs[i]!, proxies[i]!.url, name, wtoken, `d${i}`, String(int(1, 2 ** 31 - 1))],
      o.killInEvents ? { SHARED_DEVICE_KILL_IN_EVENTS: '1' } : {},
    );
    // Everything a device says on stderr (warnings, errors), across its restarts, kept beside its file.
    const log = `${dbs[i]}.log`;
    fs.appendFileSync(log, `--- start ${new Date().toISOString()}\n`);
    d.p.stderr!.on('data', (chunk: string) => fs.appendFileSync(log, chunk));
    devices[i] = d;
  };
  /** SIGKILLs device `i`, noting whether it died inside a rebase's rewrite (its intent file is there). */
  const killDevice = async (i: number): Promise<void> => {
    await killProc(devices[i]);
    stats.kills.device++;
    if (fs.existsSync(`${dbs[i]}-mycelite/rebase`)) stats.killedInRewrite++;
  };
  /** A new device (a new file, its own proxy to its hub), started. */
  const addDevice = async (): Promise<number> => {
    const i = dbs.length;
    dbs.push(path.join(o.dir, `d${i}.db`));
    proxies.push(await startTcpProxy(ports[hubOf(i)]!));
    offline.push(false);
    devices.push(undefined);
    conflictsSeen.push(0);
    startDevice(i);
    return i;
  };
  /** A device that exited without being killed is a failure; it is started again. */
  const checkAlive = (i: number): void => {
    const d = devices[i];
    if (d && !alive(d) && !d.killedByUs && /^crash$/m.test(d.out)) {
      // It killed itself in the middle of a rebase (test/helpers/shared-device.ts).
      d.killedByUs = true;
      stats.kills.device++;
      stats.killedInRebase++;
      trace(`d${i} killed itself in a rebase`);
    } else if (d && !alive(d) && !d.killedByUs) {
      failed(`device d${i} exited (${d.p.exitCode ?? d.p.signalCode}): ${d.err.slice(-1500)}`);
      devices[i] = undefined;
    }
  };
  const replica = path.join(o.dir, 'replica.db');
  const walk = new HistoryWalk();

  /** Brings everything back and waits until every device holds the hub's head with nothing pending. */
  const converge = async (): Promise<{ head: bigint } | undefined> => {
    for (let h = 0; h < hubs.length; h++) if (!hubs[h]) await restartHub(h);
    /** Device `i` online, running (started again if dead) and paused; false if it failed. */
    const bringUp = async (i: number, calm: boolean): Promise<boolean> => {
      proxies[i]!.setDown(false);
      offline[i] = false;
      for (let attempt = 1; ; attempt++) {
        checkAlive(i);
        if (!alive(devices[i])) startDevice(i);
        const d = devices[i]!;
        const ready = (await ask(d, undefined, /^ready$/, 60_000)) !== undefined;
        if (ready && (await ask(d, 'pause', /^paused$/, 60_000)) !== undefined) break;
        // Until it is calm, a device may kill itself in the rebase it runs as it starts: start it again.
        if (!alive(d) && /^crash$/m.test(d.out) && attempt < 5) continue;
        failed(`device d${i} did not ${ready ? 'pause' : 'start'}: ${d.err.slice(-1500)}`);
        return false;
      }
      return !calm || (await ask(devices[i]!, 'calm', /^calmed$/, 10_000)) !== undefined;
    };
    for (let i = 0; i < dbs.length; i++) if (!(await bringUp(i, false))) return undefined;
    const deadline = Date.now() + convergeMs;
    let last = '';
    // The first rounds run the big rebases of the devices that were offline: devices may still kill
    // themselves in them (test/helpers/shared-device.ts); from the third round on they are calm.
    for (let round = 1; Date.now() < deadline; round++) {
      if (round === 3) for (const d of devices) await ask(d!, 'calm', /^calmed$/, 10_000);
      const answers = await Promise.all(
        devices.map((d) => ask(d!, 'sync', /^(synced|error) /, Math.max(1000, deadline - Date.now()))),
      );
      let again = false;
      for (let i = 0; i < answers.length; i++) {
        const a = answers[i];
        if (a !== undefined && !a.startsWith('error')) continue;
        const d = devices[i]!;
        if (a === undefined && !alive(d) && /^crash$/m.test(d.out)) {
          if (!(await bringUp(i, round >= 2))) return undefined;
          again = true;
          continue;
        }
        failed(`device d${i} did not sync: ${a ?? 'no answer'} ${d.err.slice(-1500)}`);
        return undefined;
      }
      if (again) continue;
      const head = (await retried(() => client().state()))?.head.txid ?? 0n;
      const states = await Promise.all(devices.map((d) => ask(d!, 'state', /^state /, 10_000)));
      last = `hub ${head}; ${states.map((s, i) => `d${i}: ${s}`).join('; ')}`;
      if (states.every((s) => s === `state 0 ${head} ${head}`)) return { head };
      await sleep(50);
    }
    failed(`devices did not converge in ${convergeMs} ms: ${last}`);
    return undefined;
  };

  /** The promises, once converged at `head`. */
  const check = async (head: bigint, final: boolean): Promise<void> => {
    // Files: all the same bytes, and a plain replica's too.
    const hashes = dbs.map((d) => fileHash(d));
    for (let i = 1; i < dbs.length; i++) {
      if (hashes[i] !== hashes[0]) diverged(`d${i}'s file differs from d0's at hub txid ${head}`);
    }
    trace('check: follow --once');
    const follow = await runCli(['follow', anyHub().url, replica, '--db', name, '--once'], {
      MYCELITE_TOKEN: rtoken,
    });
    if (follow.status !== 0) failed(`follow --once: ${follow.stderr.trim()}`);
    else if (fileHash(replica) !== hashes[0])
      diverged(`the replica differs from the devices at txid ${head}`);
    // verify: every snapshot checks and the journal's replay is the file.
    trace('check: verify');
    for (const file of [...dbs, replica]) {
      const v = await verifyDatabase(nodeRuntime.fs, file, `${file}.verify-tmp`);
      fs.rmSync(`${file}.verify-tmp`, { force: true });
      if (!v.ok || v.lastTxid !== head)
        diverged(`verify ${path.basename(file)}: ${v.problem ?? `last txid ${v.lastTxid}, hub ${head}`}`);
    }
    // The command too, at the end of a run (the same check, as a user runs it).
    if (final && o.cliVerify !== false) {
      for (const file of [...dbs, replica]) {
        const v = await runCli(['verify', file]);
        if (v.status !== 0) diverged(`mycelite verify ${path.basename(file)}: ${v.stderr.trim()}`);
      }
    }
    // Each device's journal holds the hub's snapshots at the same txids.
    trace('check: journals against the hub');
    const hubSnaps = await retried(() => hubSnapshots(client()));
    for (let i = 0; i < dbs.length; i++) {
      const mine = journalSnapshots(`${dbs[i]}-mycelite/journal`);
      for (const [txid, bytes] of mine.byTxid) {
        // An adopted history starts with the hub's image of that txid, not its snapshot.
        if (txid === mine.base + 1n && mine.base > 0n) continue;
        const theirs = hubSnaps.get(txid);
        if (!theirs || !same(theirs, bytes)) {
          diverged(`d${i}'s snapshot ${txid} is not the hub's`);
          break;
        }
      }
    }
    // Every acknowledged transaction is in log once, or was reported rejected, never both.
    const rows = logRows(dbs[0]!);
    stats.commits = 0;
    stats.conflicts = 0;
    stats.rejections = 0;
    stats.repeatedRejections = 0;
    for (let i = 0; i < dbs.length; i++) {
      const dev = `d${i}`;
      const r = reports(dbs[i]!);
      const inLog = rows.get(dev) ?? new Set<string>();
      stats.commits += r.acked.size;
      stats.conflicts += r.conflicts.length;
      stats.rejections += r.rejected.size;
      for (const n of r.rejected.values()) if (n > 1) stats.repeatedRejections++;
      for (const seq of r.acked) {
        // Reported once (the files keep every line; a finding stays one).
        if (reportedLost.has(`${dev}:${seq}`)) continue;
        const before = stats.lost;
        const rejected = r.rejected.has(seq);
        if (!inLog.has(seq) && !rejected)
          lost(`${dev} transaction ${seq} was acknowledged, is not in log, and was not reported rejected`);
        if (inLog.has(seq) && rejected) lost(`${dev} transaction ${seq} was reported rejected but is in log`);
        if (stats.lost > before) reportedLost.add(`${dev}:${seq}`);
      }
      // Only the events since the last check (the file keeps them all).
      for (const c of r.conflicts.slice(conflictsSeen[i])) {
        if (/ log /.test(c)) lost(`${dev}: a conflict on log (a transaction applied twice?): ${c}`);
      }
      conflictsSeen[i] = r.conflicts.length;
    }
    // Nothing but the devices writes their files: an outside change at an open is a defect (it would
    // record, and push, whatever state a crash left as the user's change).
    for (let i = 0; i < dbs.length; i++) {
      const said = lines(`${dbs[i]}.log`).filter((l) => /outside change/.test(l));
      for (const l of said.slice(outsideSeen[i] ?? 0)) lost(`d${i}: ${l}`);
      outsideSeen[i] = said.length;
    }
    // The hub's history: log rows only ever added.
    trace('check: the hub history walk');
    const found = await retried(() => walk.walk(client()));
    stats.hubSnapshots = walk.snapshots;
    for (const p of found) lost(p);
  };

  /** One fault step of the schedule, chosen by `r` (in [0, 1)), on device `i` where it is one's. */
  const fault = async (it: number, r: number, i: number): Promise<void> => {
    if (r < 0.3) {
      offline[i] = !offline[i];
      proxies[i]!.setDown(offline[i]!);
      if (offline[i]) stats.offline++;
      trace(`#${it} d${i} ${offline[i] ? 'offline' : 'online'}`);
    } else if (r < 0.35 && offline[i] && alive(devices[i])) {
      // Back online with a backlog, then killed while it likely rebases and pushes it.
      offline[i] = false;
      proxies[i]!.setDown(false);
      await sleep(int(0, 150));
      await killDevice(i);
      trace(`#${it} d${i} online, then killed`);
    } else if (r < 0.4) {
      proxies[i]!.cutAll();
      stats.cuts++;
      trace(`#${it} d${i} connections cut`);
    } else if (r < 0.65) {
      if (alive(devices[i])) {
        await killDevice(i);
        trace(`#${it} d${i} killed`);
      } else {
        startDevice(i);
        trace(`#${it} d${i} started`);
      }
    } else if (r < 0.8) {
      const h = int(0, hubs.length - 1);
      if (hubs[h]) {
        await hubs[h]!.kill('SIGKILL');
        hubs[h] = undefined;
        stats.kills.hub++;
        trace(`#${it} hub ${h} killed`);
      } else {
        await restartHub(h);
        trace(`#${it} hub ${h} restarted`);
      }
    } else if (r >= 0.97 && dbs.length < nDevices + maxJoins) {
      // A new device joins: an empty file whose first sync adopts the hub's history.
      const k = await addDevice();
      stats.joins++;
      trace(`#${it} d${k} joins`);
    } else {
      // A dead device or hub comes back after a while.
      for (let k = 0; k < dbs.length; k++) if (!devices[k] || !alive(devices[k])) startDevice(k);
      for (let h = 0; h < hubs.length; h++) if (!hubs[h]) await restartHub(h);
      trace(`#${it} everything up`);
    }
  };
  /** The faults every iteration of a `forceFaults` run ends with, in turn: a hub, a device, a device back online. */
  const forced = async (it: number): Promise<void> => {
    const up = devices.flatMap((d, k) => (alive(d) ? [k] : []));
    const i = up.length > 0 ? up[int(0, up.length - 1)]! : 0;
    const turn = it % 4;
    if (turn === 0) {
      for (let h = 0; h < hubs.length; h++) if (!hubs[h]) await restartHub(h);
      await fault(it, 0.7, i); // a hub killed
    } else if (turn === 2 && dbs.length < nDevices + maxJoins) {
      await fault(it, 0.99, i); // a device joins
    } else if (turn === 1 && alive(devices[i])) {
      if (!offline[i]) await fault(it, 0, i); // offline
      await sleep(int(100, 300));
      await fault(it, 0.32, i); // online, then killed
    } else {
      if (!alive(devices[i])) startDevice(i);
      await ask(devices[i]!, undefined, /^ready$/, 60_000);
      await fault(it, 0.5, i); // killed
    }
  };

  /** Stops every process of the run (at its end, or when the caller aborts a run that hangs). */
  const stopAll = async (): Promise<void> => {
    trace('stopping devices');
    for (const d of devices) await killProc(d);
    trace('stopping hubs');
    for (const h of hubs) await h?.kill('SIGKILL');
    trace('stopping the NATS cluster');
    await cluster?.stop();
    trace('closing proxies');
    for (const p of proxies) await p.close();
    trace('stopped');
  };
  const onAbort = (): void => {
    trace('aborted by the caller (a test timeout?): stopping everything');
    void stopAll();
  };
  o.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for (let i = 0; i < nDevices; i++) await addDevice();
    for (let it = 0; it < o.iterations; it++) {
      problems = [];
      // 1. Faults at random moments while the devices commit.
      const steps = int(1, maxSteps);
      for (let s = 0; s < steps; s++) {
        await sleep(int(20, 400));
        for (let i = 0; i < dbs.length; i++) checkAlive(i);
        await fault(it, rand(), int(0, dbs.length - 1));
      }
      if (o.forceFaults) {
        await sleep(int(20, 200));
        await forced(it);
      }
      // 2. Everything back; converge; check.
      trace(`#${it} converging`);
      const at = await converge();
      if (at) {
        trace(`#${it} converged at hub txid ${at.head}; checking`);
        try {
          await check(at.head, it === o.iterations - 1);
        } catch (e) {
          const logs = hubs.map(
            (h, k) =>
              `hub ${k} (${h && h.proc.exitCode === null && h.proc.signalCode === null ? 'running' : 'exited'}): ${h?.stderr().slice(-1500)}`,
          );
          failed(
            `the check failed: ${(e as Error).message} (${String((e as Error).cause ?? '')}); ${logs.join('; ')}`,
          );
        }
        for (const d of devices) await ask(d!, 'resume', /^resumed$/, 10_000);
      }
      stats.iterations++;
      stats.problems.push(...problems.map((p) => `#${it}: ${p}`));
      o.onIteration?.(it, stats, problems);
      if (!at) break; // nothing more can be learnt from devices that do not converge
    }
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
    await stopAll();
  }
  return stats;
}
