/**
 * A fault-injecting TCP proxy on loopback for the network-fault tests: forwards connections to a target
 * port and can delay every chunk, stall all traffic (connections stay open, no byte moves) until released,
 * duplicate every request (each client connection is mirrored to a second upstream connection whose answers
 * are thrown away, so the server receives every request twice), cut every connection, and retarget.
 */
import * as net from 'node:net';

export interface FaultProxy {
  port: number;
  url: string;
  /** Delay of each chunk, random in [min, max] ms, per direction in order (0, 0: none). */
  setDelay(minMs: number, maxMs: number): void;
  /** While stalled, bytes are held (in order) and delivered on release. */
  setStalled(stalled: boolean): void;
  /** While on, new connections are mirrored to a second upstream connection (answers discarded). */
  setDuplicate(on: boolean): void;
  cutAll(): void;
  retarget(port: number): void;
  /** Connections mirrored so far. */
  duplicated(): number;
  close(): Promise<void>;
}

export async function startFaultProxy(targetPort: number): Promise<FaultProxy> {
  let target = targetPort;
  let delay: [number, number] = [0, 0];
  let stalled = false;
  let duplicate = false;
  let mirrored = 0;
  const sockets = new Set<net.Socket>();
  const held: (() => void)[] = [];

  /** A pipe that keeps order: each chunk waits for its delay (and a stall) after the previous one. */
  const pipe = (from: net.Socket, to: net.Socket[]): void => {
    let chain = Promise.resolve();
    from.on('data', (chunk: Buffer) => {
      const [lo, hi] = delay;
      const ms = hi > 0 ? lo + Math.random() * (hi - lo) : 0;
      chain = chain
        .then(() => (ms > 0 ? new Promise<void>((r) => setTimeout(r, ms)) : undefined))
        .then(() => (stalled ? new Promise<void>((r) => held.push(r)) : undefined))
        .then(() => {
          for (const t of to) if (!t.destroyed) t.write(chunk);
        });
    });
  };

  const server = net.createServer((client) => {
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
    pipe(client, shadow ? [upstream, shadow] : [upstream]);
    pipe(upstream, [client]);
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
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    setDelay(minMs, maxMs) {
      delay = [minMs, maxMs];
    },
    setStalled(s) {
      stalled = s;
      if (!s) for (const r of held.splice(0)) r();
    },
    setDuplicate(on) {
      duplicate = on;
    },
    cutAll,
    retarget(p) {
      target = p;
    },
    duplicated: () => mirrored,
    close: () =>
      new Promise<void>((resolve) => {
        stalled = false;
        for (const r of held.splice(0)) r();
        cutAll();
        server.close(() => resolve());
      }),
  };
}
