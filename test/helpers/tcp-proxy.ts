/**
 * The TCP proxy on loopback of the network-failure tests: forwards connections to a target port, and can
 * refuse connections (down), cut every open connection, cut one connection once after a given number of
 * bytes in one direction (a connection dropped mid-body or mid-answer), delay every chunk, stall all
 * traffic (connections stay open, no byte moves) until released, duplicate every request (each client
 * connection is mirrored to a second upstream connection whose answers are thrown away, so the server
 * receives every request twice), and retarget (a restarted hub).
 */
import * as net from 'node:net';

export interface TcpProxy {
  port: number;
  url: string;
  /** While down, new connections are closed at once and open ones are cut. */
  setDown(down: boolean): void;
  /** Cuts every open connection now. */
  cutAll(): void;
  /**
   * Cuts the next connection that carries more than `bytes` bytes in `direction` (counted from now),
   * once, right after forwarding exactly `bytes` of them.
   */
  cutOnceAfter(bytes: number, direction: 'up' | 'down'): void;
  /** How many cuts `cutOnceAfter` made so far. */
  cuts(): number;
  /** Delay of each chunk, random in [min, max] ms, per direction in order (0, 0: none). */
  setDelay(minMs: number, maxMs: number): void;
  /** While stalled, bytes are held (in order) and delivered on release. */
  setStalled(stalled: boolean): void;
  /** While on, new connections are mirrored to a second upstream connection (answers discarded). */
  setDuplicate(on: boolean): void;
  /** Connections mirrored so far. */
  duplicated(): number;
  /** Points the proxy at another target port (e.g. a restarted hub). */
  retarget(port: number): void;
  close(): Promise<void>;
}

export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  let target = targetPort;
  let down = false;
  let cutCount = 0;
  let arm: { left: number; direction: 'up' | 'down' } | undefined;
  let delay: [number, number] = [0, 0];
  let stalled = false;
  let duplicate = false;
  let mirrored = 0;
  const sockets = new Set<net.Socket>();
  const held: (() => void)[] = [];

  /**
   * A pipe that keeps order: each chunk waits for its delay (and a stall) after the previous one. The
   * armed cut is counted as chunks arrive; the connection is cut once its last bytes were written.
   */
  const pipe = (from: net.Socket, to: net.Socket[], direction: 'up' | 'down', cut: () => void): void => {
    let chain = Promise.resolve();
    from.on('data', (data: Buffer) => {
      let chunk = data;
      let last = false;
      if (arm && arm.direction === direction) {
        if (chunk.length > arm.left) {
          chunk = chunk.subarray(0, arm.left);
          arm = undefined;
          cutCount++;
          last = true;
        } else {
          arm.left -= chunk.length;
        }
      }
      const [lo, hi] = delay;
      const ms = hi > 0 ? lo + Math.random() * (hi - lo) : 0;
      chain = chain
        .then(() => (ms > 0 ? new Promise<void>((r) => setTimeout(r, ms)) : undefined))
        .then(() => (stalled ? new Promise<void>((r) => held.push(r)) : undefined))
        .then(() => {
          const live = to.filter((t) => !t.destroyed);
          if (last) {
            if (chunk.length > 0 && live[0]) live[0].write(chunk, cut);
            else cut();
            return;
          }
          for (const t of live) t.write(chunk);
        });
    });
  };

  const server = net.createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const upstream = net.connect(target, '127.0.0.1');
    const shadow = duplicate ? net.connect(target, '127.0.0.1') : undefined;
    if (shadow) mirrored++;
    const all = [client, upstream, ...(shadow ? [shadow] : [])];
    for (const s of all) sockets.add(s);
    const cut = (): void => {
      for (const s of all) {
        s.destroy();
        sockets.delete(s);
      }
    };
    pipe(client, shadow ? [upstream, shadow] : [upstream], 'up', cut);
    pipe(upstream, [client], 'down', cut);
    shadow?.on('data', () => {}); // answers of the duplicate are dropped
    shadow?.on('error', () => {});
    client.on('close', cut).on('error', cut);
    upstream.on('close', cut).on('error', cut);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const cutAll = (): void => {
    for (const s of sockets) s.destroy();
    sockets.clear();
  };
  const release = (): void => {
    for (const r of held.splice(0)) r();
  };
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    setDown(d) {
      down = d;
      if (d) cutAll();
    },
    cutAll,
    cutOnceAfter(bytes, direction) {
      arm = { left: bytes, direction };
    },
    cuts: () => cutCount,
    setDelay(minMs, maxMs) {
      delay = [minMs, maxMs];
    },
    setStalled(s) {
      stalled = s;
      if (!s) release();
    },
    setDuplicate(on) {
      duplicate = on;
    },
    duplicated: () => mirrored,
    retarget(p) {
      target = p;
    },
    close: () =>
      new Promise<void>((resolve) => {
        stalled = false;
        release();
        cutAll();
        server.close(() => resolve());
      }),
  };
}

/** A loopback port that was free a moment ago. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
