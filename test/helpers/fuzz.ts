/**
 * Fuzz targets, shared by scripts/fuzz.ts (the long run) and test/fuzz.test.ts (a short run and the replay
 * of test/fixtures/fuzz/). Each target has a generator of inputs (fast-check: generated and mutated from
 * real journals, streams, tokens) and a `check` that throws a FuzzFailure when the decoder broke a rule:
 *
 *  - journal: JournalReader + replay over a mutated real journal: only JournalFormatError or
 *    PositionMismatchError; a replay that succeeds gives a state of the original history;
 *  - stream / push: StreamParser over a mutated read stream or push body, cut into random chunks: only
 *    JournalFormatError; every snapshot it hands out is one of the original snapshots, byte for byte;
 *  - token: verifyToken / authorize over mutated and forged JWTs: only HubError 401/403, and a claim only
 *    for an untouched token;
 *  - http: requests to a hub (names, Mycelite-* headers, query strings, lease JSON): never a 5xx, every
 *    4xx a JSON {error, message} body with the code of its status, and the stored journal unchanged.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import type { FileHandle } from '../../src/files/file-system.js';
import {
  JournalFormatError,
  JournalReader,
  memorySource,
  PositionMismatchError,
} from '../../src/format/index.js';
import { authorize, verifyToken } from '../../src/hub/auth.js';
import { EMPTY_POSITION, HubError, StreamParser } from '../../src/protocol/index.js';
import { replay } from '../../src/restore/replay.js';
import { concatBytes, type History, makeHistory } from './hub.js';
import { sha256 } from './util.js';

export const FIXTURES = path.resolve(
  path.dirname(new URL(import.meta.url).pathname),
  '../../../test/fixtures/fuzz',
);

/** A rule a decoder broke, with the input that broke it. */
export class FuzzFailure extends Error {
  constructor(
    readonly target: string,
    message: string,
    readonly input: unknown,
  ) {
    super(`${target}: ${message}`);
    this.name = 'FuzzFailure';
  }
}

/** An in-memory FileHandle (replay's output). */
export class MemoryFile implements FileHandle {
  readonly path = 'memory';
  bytes = new Uint8Array(0);
  read(buf: Uint8Array, offset: number): number {
    const n = Math.max(0, Math.min(buf.length, this.bytes.length - offset));
    buf.set(this.bytes.subarray(offset, offset + n));
    buf.fill(0, n);
    return n;
  }
  write(buf: Uint8Array, offset: number): void {
    if (offset + buf.length > this.bytes.length) {
      const grown = new Uint8Array(offset + buf.length);
      grown.set(this.bytes);
      this.bytes = grown;
    }
    this.bytes.set(buf, offset);
  }
  truncate(size: number): void {
    const t = new Uint8Array(size);
    t.set(this.bytes.subarray(0, size));
    this.bytes = t;
  }
  sync(): void {}
  size(): number {
    return this.bytes.length;
  }
  close(): void {}
}

/** The real material the mutations start from. */
export interface Corpus {
  history: History;
  /** The whole journal file. */
  journal: Uint8Array;
  /** sha256 of each original snapshot's bytes. */
  snapshotHashes: Set<string>;
  /** sha256 of the database after each snapshot (replay of the prefix). */
  stateHashes: Set<string>;
  /** A read stream: the journal with beats between some snapshots. */
  stream: Uint8Array;
  key: Uint8Array;
  token: string;
}

const BEAT = new Uint8Array([0x42, 0x45, 0x41, 0x54, 0, 0, 0, 0]);

export async function makeCorpus(dir: string): Promise<Corpus> {
  const statements = [
    'create table t(id integer primary key, k, v)',
    'insert into t(k, v) values (1, randomblob(300))',
    'insert into t(k, v) values (2, randomblob(5000))',
    'update t set v = randomblob(100) where k = 1',
    'create index t_k on t(k)',
    'delete from t where k = 2',
    'insert into t(k, v) values (3, zeroblob(2000))',
  ];
  const history = await makeHistory(path.join(dir, 'corpus.db'), statements);
  const journal = new Uint8Array(fs.readFileSync(path.join(dir, 'corpus.db-mycelite', 'journal')));
  const snapshotHashes = new Set(history.snapshots.map((s) => sha256(s.bytes)));
  const stateHashes = new Set<string>([sha256(new Uint8Array(0))]);
  for (let n = 1; n <= history.snapshots.length; n++) {
    const out = new MemoryFile();
    replay(memorySource(journal), out, { txid: BigInt(n) });
    stateHashes.add(sha256(out.bytes));
  }
  const parts: Uint8Array[] = [journal.subarray(0, 64)];
  for (const [i, s] of history.snapshots.entries()) {
    if (i % 2 === 0) parts.push(BEAT);
    parts.push(s.bytes);
  }
  const key = crypto.randomBytes(32);
  const { mintToken } = await import('../../src/hub/auth.js');
  const token = await mintToken(key, { db: 'app', role: 'writer', ttlSeconds: 3600 });
  return { history, journal, snapshotHashes, stateHashes, stream: concatBytes(parts), key, token };
}

// ---- mutations ------------------------------------------------------------------------------------

type Mutation =
  | { op: 'flip'; at: number; bit: number }
  | { op: 'set'; at: number; value: number }
  | { op: 'cut'; at: number }
  | { op: 'drop'; at: number; len: number }
  | { op: 'dup'; at: number; len: number }
  | { op: 'insert'; at: number; bytes: Uint8Array };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat(7) }),
  fc.record({
    op: fc.constant('set' as const),
    at: fc.nat(),
    value: fc.constantFrom(0, 1, 0x7f, 0x80, 0xff),
  }),
  fc.record({ op: fc.constant('cut' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('drop' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 300 }) }),
  fc.record({ op: fc.constant('dup' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 3000 }) }),
  fc.record({
    op: fc.constant('insert' as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }),
  }),
);

export const mutationsArb = fc.array(mutationArb, { minLength: 1, maxLength: 4 });

export function mutate(src: Uint8Array, ms: Mutation[]): Uint8Array {
  let b: Uint8Array = src.slice();
  for (const m of ms) {
    if (b.length === 0) return b;
    const at = m.at % b.length;
    if (m.op === 'flip') b[at]! ^= 1 << m.bit;
    else if (m.op === 'set') b[at] = m.value;
    else if (m.op === 'cut') b = b.slice(0, at);
    else if (m.op === 'drop') b = concatBytes([b.subarray(0, at), b.subarray(at + m.len)]);
    else if (m.op === 'dup') b = concatBytes([b.subarray(0, at + m.len), b.subarray(at)]);
    else b = concatBytes([b.subarray(0, at), m.bytes, b.subarray(at)]);
  }
  return b;
}

/** Splits `b` at the given cut points (mod length). */
function chunks(b: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => (b.length === 0 ? 0 : c % b.length)))].sort((x, y) => x - y);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(b.subarray(prev, p));
    prev = p;
  }
  out.push(b.subarray(prev));
  return out;
}

const typed = (e: unknown): boolean => e instanceof JournalFormatError || e instanceof PositionMismatchError;

// ---- checks (also used to replay saved fixtures) ----------------------------------------------------

/** A mutated journal (`c` undefined: a saved fixture of another corpus, typed errors only): read and replayed, only typed errors; a replay that succeeds is a state of the history. */
export function checkJournal(c: Corpus | undefined, bytes: Uint8Array): void {
  try {
    const reader = new JournalReader(memorySource(bytes), { verify: true });
    for (const _ of reader.snapshots());
  } catch (e) {
    if (!typed(e)) throw new FuzzFailure('journal', `JournalReader threw ${describe(e)}`, bytes);
  }
  const out = new MemoryFile();
  try {
    replay(memorySource(bytes), out);
  } catch (e) {
    if (!typed(e)) throw new FuzzFailure('journal', `replay threw ${describe(e)}`, bytes);
    return;
  }
  if (c && !c.stateHashes.has(sha256(out.bytes))) {
    throw new FuzzFailure(
      'journal',
      'replay succeeded with a database that is no state of the history',
      bytes,
    );
  }
}

/** A mutated stream or push body, in chunks: only typed errors; only original snapshots handed out. */
export function checkStream(c: Corpus | undefined, bytes: Uint8Array, cuts: number[], push: boolean): void {
  const target = push ? 'push' : 'stream';
  const parser = new StreamParser(
    push
      ? { stream: false, base: EMPTY_POSITION, maxSnapshot: 1 << 20 }
      : { stream: true, maxSnapshot: 1 << 20 },
  );
  try {
    for (const chunk of chunks(bytes, cuts)) {
      for (const item of parser.push(chunk)) {
        if (item.kind === 'snapshot' && c && !c.snapshotHashes.has(sha256(item.bytes))) {
          throw new FuzzFailure(
            target,
            `handed out a snapshot that is not an original (txid ${item.header.txid})`,
            {
              bytes,
              cuts,
            },
          );
        }
      }
    }
    parser.end();
  } catch (e) {
    if (e instanceof FuzzFailure) throw e;
    if (!(e instanceof JournalFormatError))
      throw new FuzzFailure(target, `threw ${describe(e)}`, { bytes, cuts });
  }
}

/** A token: only HubError 401/403; a claim only when the token is the untouched original. */
export async function checkToken(c: Corpus, token: string, header?: string): Promise<void> {
  try {
    const claims = await verifyToken(c.key, token);
    // The signature's base64url text is malleable (whitespace, the unused bits of its last character
    // decode to the same bytes): only the signed header and payload must be the original's.
    const signed = (t: string): string => t.split('.').slice(0, 2).join('.');
    if (signed(token) !== signed(c.token) || token.split('.').length !== 3) {
      throw new FuzzFailure('token', `a changed token was accepted: ${JSON.stringify(claims)}`, { token });
    }
  } catch (e) {
    if (e instanceof FuzzFailure) throw e;
    if (!(e instanceof HubError) || e.status !== 401)
      throw new FuzzFailure('token', `verifyToken threw ${describe(e)}`, { token });
  }
  if (header === undefined) return;
  try {
    await authorize(c.key, header, 'app', 'writer');
    if (!header.includes(c.token)) {
      throw new FuzzFailure('token', 'authorize accepted a header without the real token', { header });
    }
  } catch (e) {
    if (e instanceof FuzzFailure) throw e;
    if (!(e instanceof HubError) || (e.status !== 401 && e.status !== 403))
      throw new FuzzFailure('token', `authorize threw ${describe(e)}`, { header });
  }
}

export function describe(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

// ---- token mutations ---------------------------------------------------------------------------------

const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');

export function tokenArb(c: Corpus): fc.Arbitrary<string> {
  const [h, p, s] = c.token.split('.') as [string, string, string];
  const claims = fc.record(
    {
      db: fc.oneof(fc.constant('app'), fc.string()),
      role: fc.oneof(fc.constantFrom('writer', 'reader', 'admin'), fc.anything()),
      exp: fc.oneof(fc.integer(), fc.double(), fc.string(), fc.constant(9_999_999_999)),
    },
    { requiredKeys: [] },
  );
  const header = fc.oneof(
    fc.constant({ alg: 'HS256', typ: 'JWT' }),
    fc.record({ alg: fc.constantFrom('none', 'HS512', 'RS256', 'ES256', 'hs256', 'None', '') }),
    fc.jsonValue(),
  );
  return fc.oneof(
    // characters of the real token changed
    fc.tuple(fc.nat(), fc.string({ minLength: 1, maxLength: 3 })).map(([at, ch]) => {
      const i = at % c.token.length;
      return c.token.slice(0, i) + ch + c.token.slice(i + 1);
    }),
    // forged: any header and payload with the real signature, none, or a random one
    fc
      .tuple(header, claims, fc.constantFrom('real', 'none', 'random'))
      .map(
        ([hd, cl, sig]) =>
          `${b64(hd)}.${b64(cl)}.${sig === 'real' ? s : sig === 'none' ? '' : crypto.randomBytes(32).toString('base64url')}`,
      ),
    // parts swapped, dropped, doubled
    fc.constantFrom(
      `${h}.${p}`,
      `${p}.${h}.${s}`,
      `${h}.${p}.${s}.${s}`,
      `${h}..${s}`,
      '',
      '...',
      `${h}.${p}.`,
    ),
    fc.string({ maxLength: 200 }),
  );
}

export const headerArb = (token: string): fc.Arbitrary<string> =>
  fc.oneof(
    fc.string({ maxLength: 300 }),
    fc.constantFrom(
      'Bearer',
      'Bearer ',
      `bearer ${token}`,
      `Bearer  ${token} `,
      `Basic ${token}`,
      `Bearer ${token} x`,
    ),
  );

/** Saves an input that broke something under test/fixtures/fuzz/ (replayed by test/fuzz.test.ts). */
export function saveFixture(f: FuzzFailure): string {
  fs.mkdirSync(FIXTURES, { recursive: true });
  const json = JSON.stringify(
    { target: f.target, message: f.message, input: f.input },
    (_k, v: unknown) => (v instanceof Uint8Array ? { base64: Buffer.from(v).toString('base64') } : v),
    1,
  );
  const file = path.join(FIXTURES, `${f.target}-${sha256(new TextEncoder().encode(json)).slice(0, 12)}.json`);
  fs.writeFileSync(file, `${json}\n`);
  return file;
}

/** Reads a saved fixture back (Uint8Arrays restored). */
export function loadFixture(file: string): { target: string; input: unknown } {
  return JSON.parse(fs.readFileSync(file, 'utf8'), (_k, v: unknown) =>
    v && typeof v === 'object' && 'base64' in v
      ? new Uint8Array(Buffer.from((v as { base64: string }).base64, 'base64'))
      : v,
  ) as { target: string; input: unknown };
}
