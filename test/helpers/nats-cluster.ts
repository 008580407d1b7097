/**
 * A real 3-node NATS JetStream cluster on loopback for tests and scripts: `nats-server` child processes
 * (Debian's package; `.ci/run` installs it) with -js, a cluster port and routes to the others, a temp
 * store dir per node and unique server names. `startNatsCluster()` waits until every node answers
 * JetStream (a meta leader is elected and every node has joined); `kill(i)` SIGKILLs a node and `restart(i)` starts it
 * again on the same ports and store.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';

export const NATS_SERVER = process.env.NATS_SERVER ?? 'nats-server';

interface Node {
  name: string;
  port: number;
  clusterPort: number;
  storeDir: string;
  proc?: ChildProcess;
  log: string;
}

export interface NatsCluster {
  /** `nats://127.0.0.1:P1,nats://127.0.0.1:P2,...` (for --storage). */
  readonly url: string;
  readonly servers: string[];
  /** SIGKILLs node `i` (0-2) and waits for it to exit. */
  kill(i: number): Promise<void>;
  /** Starts node `i` again (same ports, same store) and waits until JetStream answers again. */
  restart(i: number): Promise<void>;
  /** Starts every node that is not running (same ports and stores) and waits until JetStream answers. */
  startAll(): Promise<void>;
  /** Everything node `i` logged. */
  log(i: number): string;
  /** The process id of node `i` (undefined when it does not run). */
  pid(i: number): number | undefined;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Is nats-server on this machine? (tests skip with a reason when it is not). */
export function haveNatsServer(): boolean {
  return spawnSync(NATS_SERVER, ['--version']).status === 0;
}

/** The nodes of every cluster this process started (for `stopNatsClusters`). */
const started = new Set<ChildProcess>();

/**
 * SIGKILLs every nats-server this process started that still runs, and waits for them to exit: for
 * after-hooks, so that a test that failed or timed out (even inside `startNatsCluster`) leaves none behind.
 */
export async function stopNatsClusters(): Promise<void> {
  const exits: Promise<void>[] = [];
  for (const p of started) {
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    exits.push(exitOf(p));
  }
  await Promise.all(exits);
}

function exitOf(p: ChildProcess): Promise<void> {
  return p.exitCode !== null || p.signalCode !== null
    ? Promise.resolve()
    : new Promise((resolve) => p.once('exit', () => resolve()));
}

/** A node exited while the cluster was started (typically: a port it was given was taken meanwhile). */
class NodeExitedError extends Error {}

/**
 * Starts a cluster of `size` nodes on free ports and waits until every node answers JetStream. A node
 * that exits meanwhile (another process took one of its ports between the pick and nats-server's bind)
 * makes it start again on other ports, up to 3 times.
 */
export async function startNatsCluster(size = 3): Promise<NatsCluster> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(size);
    } catch (e) {
      if (!(e instanceof NodeExitedError) || attempt >= 3) throw e;
    }
  }
}

async function startOnce(size: number): Promise<NatsCluster> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-nats-'));
  const nodes: Node[] = [];
  for (let i = 0; i < size; i++) {
    nodes.push({
      name: `n${i + 1}`,
      port: await freePort(),
      clusterPort: await freePort(),
      storeDir: path.join(root, `n${i + 1}`),
      log: '',
    });
  }
  const routes = nodes.map((n) => `nats://127.0.0.1:${n.clusterPort}`).join(',');
  const servers = nodes.map((n) => `nats://127.0.0.1:${n.port}`);

  const launch = (n: Node): void => {
    fs.mkdirSync(n.storeDir, { recursive: true });
    const args = ['-js', '-sd', n.storeDir, '-a', '127.0.0.1', '-p', String(n.port), '-n', n.name];
    if (size > 1) {
      args.push('--cluster_name', 'mycelite', '--cluster', `nats://127.0.0.1:${n.clusterPort}`);
      args.push('--routes', routes);
    }
    const proc = spawn(NATS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
      n.log += d;
    });
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
      n.log += d;
    });
    proc.on('error', (e) => {
      n.log += `spawn failed: ${e.message}\n`;
    });
    n.proc = proc;
    started.add(proc);
  };
  const logs = (): string => nodes.map((n) => `${n.name}: ${n.log.slice(-2000)}`).join('\n');

  /**
   * Waits until every node runs and answers JetStream on its own port (each has joined the cluster: a
   * node alone has no meta leader), or 30 s passed. (Asking the cluster as a whole was not enough: with
   * one node of three gone, JetStream answers, but a stream of 3 replicas cannot be placed.)
   */
  const ready = async (): Promise<void> => {
    const deadline = Date.now() + 30_000;
    let last: unknown;
    for (const n of nodes) {
      for (;;) {
        const p = n.proc!;
        if (p.exitCode !== null || p.signalCode !== null)
          throw new NodeExitedError(
            `nats-server ${n.name} exited (${p.exitCode ?? p.signalCode}); logs:\n${logs()}`,
          );
        try {
          const nc = await connect({
            servers: [`nats://127.0.0.1:${n.port}`],
            timeout: 1000,
            reconnect: false,
          });
          try {
            const jsm = await jetstreamManager(nc, { timeout: 2000 });
            await jsm.getAccountInfo();
            break;
          } finally {
            await nc.close();
          }
        } catch (e) {
          last = e;
          if (Date.now() > deadline)
            throw new Error(
              `the NATS cluster did not become ready in 30 s (${n.name}: ${(last as Error)?.message}); logs:\n${logs()}`,
            );
          await sleep(100);
        }
      }
    }
  };

  /** Waits until every stream has a leader and all its replicas are current (a restarted node caught up). */
  const current = async (): Promise<void> => {
    const nc = await connect({ servers });
    try {
      const jsm = await jetstreamManager(nc);
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline) {
        let behind = 0;
        for await (const s of jsm.streams.list()) {
          const c = s.cluster;
          if (!c?.leader || (c.replicas ?? []).some((r) => !r.current || r.offline)) behind++;
          if ((c?.replicas?.length ?? 0) + 1 < Math.min(size, s.config.num_replicas)) behind++;
        }
        if (behind === 0) return;
        await sleep(200);
      }
    } finally {
      await nc.close();
    }
  };

  const stop = async (): Promise<void> => {
    for (const n of nodes) {
      const p = n.proc;
      if (p && p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
      if (p) await exitOf(p);
    }
    fs.rmSync(root, { recursive: true, force: true });
  };

  for (const n of nodes) launch(n);
  try {
    await ready();
  } catch (e) {
    await stop();
    throw e;
  }

  return {
    url: servers.join(','),
    servers,
    async kill(i) {
      const p = nodes[i]!.proc!;
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
      await exitOf(p);
    },
    async restart(i) {
      launch(nodes[i]!);
      await ready();
      await current();
    },
    async startAll() {
      for (const n of nodes) if (!n.proc || n.proc.exitCode !== null || n.proc.signalCode !== null) launch(n);
      await ready();
      await current();
    },
    log: (i) => nodes[i]!.log,
    pid: (i) => nodes[i]!.proc?.pid,
    stop,
  };
}
