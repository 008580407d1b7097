/**
 * Test helpers to run a hub: in-process (`startTestHub`) or as a child process of the real CLI
 * (`spawnHub`, for SIGKILL scenarios). Both listen on loopback, port 0 unless told, and give a `token`
 * helper that mints tokens with the hub's key.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  concatBytes,
  decodeFileHeader,
  encodeSnapshotHeader,
  JournalReader,
  loadHash,
  memorySource,
  SNAPSHOT_HEADER_SIZE,
  SNAPSHOT_TRAILER_SIZE,
  walkPatches,
  xxh64,
} from '../../src/format/index.js';
import { loadOrCreateKey, mintToken, type Role } from '../../src/hub/auth.js';
import { type Hub, type HubOptions, startHub } from '../../src/hub/index.js';
import { type MyceliteDatabase, open, openReplica, type ReplicaDatabase } from '../../src/node/index.js';
import {
  type EncodedSnapshot,
  type StreamItem,
  StreamParser,
  unpackSnapshot,
} from '../../src/protocol/index.js';

/** bin/mycelite.js of this checkout (tests run from dist/test/). */
export const MYCELITE_BIN = fileURLToPath(new URL('../../../bin/mycelite.js', import.meta.url));

export interface TestHub {
  hub: Hub;
  url: string;
  port: number;
  dir: string;
  key: Uint8Array;
  /** A token for `db` and `role` (default lifetime 1 h; negative: already expired). */
  token(db: string, role: Role, ttlSeconds?: number): Promise<string>;
  close(): Promise<void>;
}

function freshDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-hub-'));
}

async function tokenWith(key: Uint8Array, db: string, role: Role, ttlSeconds = 3600): Promise<string> {
  if (ttlSeconds > 0) return mintToken(key, { db, role, ttlSeconds });
  // An expired token: sign one valid for 1 s whose clock started long ago.
  const { SignJWT } = await import('jose');
  const past = Math.floor(Date.now() / 1000) - 3600;
  return new SignJWT({ db, role })
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuedAt(past)
    .setExpirationTime(past + 1)
    .sign(key);
}

/**
 * A clock a test moves by hand, for a hub's `now`: real time plus what the test advanced it by, so a
 * lease expires at once instead of after a wait.
 */
export class TestClock {
  private ahead = 0;
  readonly now = (): number => Date.now() + this.ahead;
  advance(ms: number): void {
    this.ahead += ms;
  }
}

/**
 * Starts a hub in this process on 127.0.0.1, port 0, logs silent (override with `options`). The data
 * directory is `dir`, or a new temp dir (not removed: call `fs.rmSync(t.dir, …)` if you care).
 */
export async function startTestHub(dir?: string, options: Partial<HubOptions> = {}): Promise<TestHub> {
  const dataDir = dir ?? freshDir();
  const hub = await startHub({ dataDir, port: 0, logLevel: 'silent', ...options });
  return {
    hub,
    url: hub.url,
    port: hub.port,
    dir: dataDir,
    key: hub.key,
    token: (db, role, ttl) => tokenWith(hub.key, db, role, ttl),
    close: () => hub.close(),
  };
}

export interface SpawnedHub {
  url: string;
  port: number;
  dir: string;
  proc: ChildProcess;
  key: Uint8Array;
  /** Everything the child wrote to stderr so far (its JSON logs). */
  stderr(): string;
  token(db: string, role: Role, ttlSeconds?: number): Promise<string>;
  /** Kills the child (default SIGKILL) and waits for it to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Resolves with the exit code (or signal name) once the child exits. */
  exited: Promise<number | string>;
}

/** Every hub `spawnHub` started that has not exited yet (listening or not). */
const running = new Map<ChildProcess, Promise<unknown>>();

/**
 * SIGKILLs every hub `spawnHub` started in this process that still runs, and waits for them to exit: for
 * after-hooks, so that a test that failed or timed out (even inside `spawnHub`) leaves no hub behind.
 */
export async function killSpawnedHubs(): Promise<void> {
  for (const proc of running.keys())
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  await Promise.all(running.values());
}

/** How long `spawnHub` waits for the hub's "listening on" line by default (ms). */
export const HUB_LISTEN_MS = 60_000;

/**
 * Runs `mycelite serve --data DIR --port PORT` (port 0 by default) as a child process and waits for its
 * "listening on URL" line. Extra CLI arguments go in `args` (e.g. ['--max-body', '1MiB']). A hub that
 * does not listen within `listenMs` is killed (SIGKILL) and the call rejects with what it logged: a hub
 * that never listens is a failure, not a test (and a child process) waiting for ever.
 */
export async function spawnHub(
  dir: string,
  port = 0,
  args: string[] = [],
  { listenMs = HUB_LISTEN_MS }: { listenMs?: number } = {},
): Promise<SpawnedHub> {
  const key = loadOrCreateKey(dir); // created before the child starts, so both use the same key
  const proc = spawn(
    process.execPath,
    [MYCELITE_BIN, 'serve', '--data', dir, '--port', String(port), '--log-level', 'warn', ...args],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, MYCELITE_HUB_KEY: '' } },
  );
  let err = '';
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  const exited = new Promise<number | string>((resolve) => {
    proc.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
  });
  running.set(proc, exited);
  void exited.then(() => running.delete(proc));
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    const onData = (d: string): void => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(late);
        proc.stdout!.off('data', onData);
        proc.stdout!.resume(); // keep draining
        resolve(m[1]!);
      }
    };
    proc.stdout!.setEncoding('utf8').on('data', onData);
    void exited.then((code) => reject(new Error(`mycelite serve exited (${code}) before listening: ${err}`)));
    const late = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(
        new Error(`mycelite serve ${args.join(' ')} did not listen within ${listenMs} ms (killed): ${err}`),
      );
    }, listenMs);
    void exited.then(() => clearTimeout(late));
  });
  return {
    url,
    port: Number(new URL(url).port),
    dir,
    proc,
    key,
    stderr: () => err,
    token: (db, role, ttl) => tokenWith(key, db, role, ttl),
    exited,
    kill: async (signal = 'SIGKILL') => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      await exited;
    },
  };
}

/** A journal's history: its id, base position and encoded snapshots, exactly as in the file. */
export interface History {
  journalId: Uint8Array;
  baseTxid: bigint;
  baseChecksum: bigint;
  snapshots: EncodedSnapshot[];
}

/** Reads a journal file (docs/FORMAT.md) into its encoded snapshots. */
export async function readJournal(file: string): Promise<History> {
  await loadHash();
  const bytes = new Uint8Array(fs.readFileSync(file));
  const header = decodeFileHeader(bytes);
  const reader = new JournalReader(memorySource(bytes), { verify: true });
  const snapshots: EncodedSnapshot[] = [];
  for (const s of reader.snapshots()) {
    const { offset: _offset, ...h } = s;
    snapshots.push({ bytes: bytes.slice(s.offset, s.offset + s.length), header: h });
  }
  return {
    journalId: header.journalId,
    baseTxid: header.baseTxid,
    baseChecksum: header.baseChecksum,
    snapshots,
  };
}

/**
 * Writes a database with the real writer (`open()`), one transaction per statement, and returns its path
 * and its journal's history. `dbPath` must not exist yet unless you mean to add to it.
 */
export async function makeHistory(
  dbPath: string,
  statements: string[],
): Promise<History & { dbPath: string }> {
  const db = await open(dbPath);
  try {
    for (const sql of statements) db.exec(sql);
  } finally {
    db.close();
  }
  return { ...(await readJournal(`${dbPath}-mycelite/journal`)), dbPath };
}

/** Statements for a history of `n` transactions (the first creates the table). */
export function sampleStatements(n: number, rowBytes = 200): string[] {
  const out = ['create table t(id integer primary key, v blob)'];
  for (let i = 1; i < n; i++) out.push(`insert into t(v) values (randomblob(${rowBytes}))`);
  return out;
}

/**
 * `s` with one byte of its first run changed, the same header (so the same txid and checksums: the
 * chain still looks right) and a recomputed trailer: a snapshot that passes every check of its own but
 * whose pages do not give the postChecksum it claims. Its body is stored uncompressed.
 */
export function tamper(s: EncodedSnapshot): EncodedSnapshot {
  const u = unpackSnapshot(s.bytes, s.header);
  const bytes = u.bytes.slice();
  bytes.set(encodeSnapshotHeader(u.header), 0);
  let at = -1;
  walkPatches(memorySource(bytes), 0, u.header, (_pgno, _offset, _run, pos) => {
    if (at < 0) at = pos;
  });
  bytes[at]! ^= 0x5a;
  const end = bytes.length - SNAPSHOT_TRAILER_SIZE;
  const signed = concatBytes([
    bytes.subarray(SNAPSHOT_HEADER_SIZE, end),
    bytes.subarray(0, SNAPSHOT_HEADER_SIZE),
  ]);
  new DataView(bytes.buffer).setBigUint64(end, xxh64(signed), true);
  return { bytes, header: u.header };
}

/** `s` with one byte of its body flipped and nothing else changed: its trailer checksum fails. */
export function damage(s: EncodedSnapshot): EncodedSnapshot {
  const bytes = s.bytes.slice();
  bytes[
    SNAPSHOT_HEADER_SIZE + Math.floor((bytes.length - SNAPSHOT_HEADER_SIZE - SNAPSHOT_TRAILER_SIZE) / 2)
  ]! ^= 0x01;
  return { bytes, header: s.header };
}

export { concatBytes } from '../../src/format/index.js';

/** Reads a hub read stream item by item (StreamParser), keeping the bytes of everything but beats. */
export class StreamItems {
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  private readonly parser = new StreamParser({ stream: true });
  private items: StreamItem[] = [];
  /** The stream's bytes, beats removed: a valid journal. */
  readonly bytes: Uint8Array[] = [];
  beats = 0;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.reader = stream.getReader();
  }

  /** The next item; undefined at the end of the stream. */
  async next(): Promise<StreamItem | undefined> {
    while (this.items.length === 0) {
      const r = await this.reader.read();
      if (r.done) {
        this.parser.end();
        return undefined;
      }
      this.items.push(...this.parser.push(r.value));
    }
    const item = this.items.shift()!;
    if (item.kind === 'beat') this.beats++;
    else this.bytes.push(item.bytes);
    return item;
  }

  /** Every remaining item until the stream ends. */
  async rest(): Promise<StreamItem[]> {
    const out: StreamItem[] = [];
    for (let i = await this.next(); i; i = await this.next()) out.push(i);
    return out;
  }

  /** Reads until snapshot `txid` arrived (beats skipped); returns the snapshots read. */
  async until(txid: bigint): Promise<EncodedSnapshot[]> {
    const out: EncodedSnapshot[] = [];
    for (;;) {
      const i = await this.next();
      if (!i) throw new Error(`the stream ended before snapshot ${txid}`);
      if (i.kind === 'snapshot') {
        out.push({ bytes: i.bytes, header: i.header });
        if (i.header.txid >= txid) return out;
      }
    }
  }

  cancel(): Promise<void> {
    return this.reader.cancel().catch(() => undefined);
  }
}

/**
 * A replica of `db` (default 'app') that follows `hub` and reconnects fast (backoff 20 ms up to
 * `maxBackoffMs`); its close goes on `cleanups`.
 */
export async function followReplica(
  file: string,
  hub: { url: string; token(db: string, role: Role): Promise<string> },
  cleanups: (() => unknown)[],
  options: { db?: string; maxBackoffMs?: number } = {},
): Promise<ReplicaDatabase> {
  const db = options.db ?? 'app';
  const r = await openReplica(file, {
    hub: { url: hub.url, db, token: await hub.token(db, 'reader') },
    minBackoffMs: 20,
    maxBackoffMs: options.maxBackoffMs ?? 200,
  });
  cleanups.push(() => r.close());
  return r;
}

/**
 * A writer of hub database `db` (default 'app') with a writer token, closed (and its sync stopped) by
 * `cleanups`.
 */
export async function hubWriter(
  file: string,
  hub: { url: string; token(db: string, role: Role): Promise<string> },
  cleanups: (() => unknown)[],
  db = 'app',
): Promise<MyceliteDatabase> {
  const w = await open(file, { hub: { url: hub.url, db, token: await hub.token(db, 'writer') } });
  cleanups.push(async () => {
    if (w.open) w.close();
    await w.sync?.close();
  });
  return w;
}

/** Resolves once the hub holds every commit of `w` and replica `r` has applied them. */
export async function caughtUp(w: MyceliteDatabase, r: ReplicaDatabase, ms = 20_000): Promise<void> {
  await w.sync!.flush(ms);
  await r.waitFor(w.position().txid, ms);
}
