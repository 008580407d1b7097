/**
 * A tiny TCP proxy on loopback for network-failure tests: forwards connections to a target port, and
 * can refuse connections (down), cut every open connection, or cut one connection once after a given
 * number of bytes in one direction (a connection dropped mid-body or mid-answer).
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
  /** How many cuts happened so far. */
  cuts(): number;
  /** Points the proxy at another target port (e.g. a restarted hub). */
  retarget(port: number): void;
  close(): Promise<void>;
}

export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  let target = targetPort;
  let down = false;
  let cutCount = 0;
  let arm: { left: number; direction: 'up' | 'down' } | undefined;
  const sockets = new Set<net.Socket>();

  const server = net.createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const upstream = net.connect(target, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    const cut = (): void => {
      client.destroy();
      upstream.destroy();
    };
    const forward = (from: net.Socket, to: net.Socket, direction: 'up' | 'down'): void => {
      from.on('data', (chunk: Buffer) => {
        if (arm && arm.direction === direction) {
          if (chunk.length > arm.left) {
            const head = chunk.subarray(0, arm.left);
            arm = undefined;
            cutCount++;
            if (head.length > 0) to.write(head, cut);
            else cut();
            return;
          }
          arm.left -= chunk.length;
        }
        to.write(chunk);
      });
    };
    forward(client, upstream, 'up');
    forward(upstream, client, 'down');
    const cleanup = (): void => {
      sockets.delete(client);
      sockets.delete(upstream);
      cut();
    };
    client.on('close', cleanup).on('error', cleanup);
    upstream.on('close', cleanup).on('error', cleanup);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const cutAll = (): void => {
    for (const s of sockets) s.destroy();
    sockets.clear();
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
    retarget(p) {
      target = p;
    },
    close: () =>
      new Promise<void>((resolve) => {
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
