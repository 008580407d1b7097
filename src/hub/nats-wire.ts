/**
 * How NatsStorage lays out a hub's data in JetStream (docs/ARCHITECTURE.md, "Scale-out on NATS
 * JetStream"): names of the stream, subjects and KV bucket, and the headers of an append's messages.
 *
 * One append (the snapshots of one push, concatenated exactly as in a journal) is one or more messages on
 * the database's subject, each at most a part size: `Mycelite-Append: FIRST-LAST`, `Mycelite-Part: I/N`,
 * `Mycelite-Journal: ID`, `Mycelite-Base: TXID:CHECKSUM` (the position the append continues),
 * `Mycelite-Mode: single|shared` (the database's mode; absent on appends stored before modes existed:
 * `single`). An append counts only once all its N parts stand one after the other on the subject; a torn
 * one is skipped.
 */
import { checkDbName } from '../protocol/index.js';

export const HDR_APPEND = 'Mycelite-Append';
export const HDR_PART = 'Mycelite-Part';
export const HDR_JOURNAL = 'Mycelite-Journal';
export const HDR_BASE = 'Mycelite-Base';
/**
 * On the parts of an append: the mode of the database (src/protocol/mode.ts). The first append a view
 * reads gives the database its mode; an append of another mode is skipped (src/hub/nats-tail.ts).
 */
export const HDR_MODE = 'Mycelite-Mode';
/**
 * On the parts of a checkpoint (compaction, src/hub/nats-storage.ts): `TXID`, and the data is one full
 * image snapshot of that txid. Once a view has read it, its base is TXID (the messages before may be
 * purged); Mycelite-Base is then the position before the image.
 */
export const HDR_CHECKPOINT = 'Mycelite-Checkpoint';
/**
 * On the parts of a checkpoint: the name, in the deployment's object store (`NatsNames.historyBucket`),
 * of the compacted history that ends at the checkpoint's txid (src/hub/nats-history.ts); absent on
 * checkpoints stored before hubs kept one.
 */
export const HDR_HISTORY = 'Mycelite-History';
/**
 * A message of its own, before a compaction stores its history object: the object's name. A hub that dies
 * before its checkpoint names the object leaves it behind; the next compaction whose checkpoint stands
 * for that txid removes it (src/hub/nats-compaction.ts).
 */
export const HDR_UPLOAD = 'Mycelite-Upload';

/**
 * Shard streams of a deployment: a new database's snapshots go to one of them (by a hash of its name),
 * on a subject of its own. Fixed: changing it would move databases (each stays where it was made).
 */
export const SHARDS = 16;

/**
 * Where a database's snapshots are: its own stream (the layout before shards, kept for the databases
 * made then), or a subject of its own in a shard stream that other databases share (`shared`: a view
 * reads its subject only, and the stream's sequences have gaps).
 */
export interface Place {
  stream: string;
  subject: string;
  shared: boolean;
}

/** Names of one hub deployment's JetStream objects, from a prefix (default `mycelite`). */
export interface NatsNames {
  /** The stream of one database's snapshots, and its subject (the layout of one stream per database). */
  stream(db: string): string;
  subject(db: string): string;
  /** The database of a stream name, or undefined when it is not one of ours. */
  dbOfStream(stream: string): string | undefined;
  /** Subject of every per-database stream's subject (`PREFIX.snap.>`). */
  allSnapshots: string;
  /** The shard of a database (0 ≤ shard < SHARDS), and the place of a database in it. */
  shardOf(db: string): number;
  shardPlace(db: string): Place;
  /** A shard stream's name and subjects (`PREFIX.db.K.>`). */
  shardStream(shard: number): string;
  shardSubjects(shard: number): string;
  /** The database of a shard subject, or undefined when it is not one. */
  dbOfSubject(subject: string): string | undefined;
  /** Subject of every shard's subjects (`PREFIX.db.>`). */
  allShards: string;
  /** The stream of every database's lease (the last message per subject is the lease). */
  leaseStream: string;
  leaseSubject(db: string): string;
  /** The object store of the compacted histories (src/hub/nats-history.ts). */
  historyBucket: string;
}

/**
 * A database name as one subject token or stream name: names are letters, digits, '.', '_' and '-';
 * '.' separates subject tokens and may not be in a stream name, so it becomes '=' (never in a name: the
 * mapping is one to one).
 */
function token(db: string): string {
  const bad = checkDbName(db);
  if (bad) throw new Error(bad);
  return db.replaceAll('.', '=');
}

export function natsNames(prefix = 'mycelite'): NatsNames {
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(prefix))
    throw new Error(`the NATS prefix ${JSON.stringify(prefix)} must be 1-32 letters, digits, '_' or '-'`);
  const streamHead = `${prefix.toUpperCase()}_DB_`;
  const shardOf = (db: string): number => fnv1a(token(db)) % SHARDS;
  const shardStream = (k: number): string => `${prefix.toUpperCase()}_SHARD_${k}`;
  const shardHead = `${prefix}.db.`;
  return {
    stream: (db) => streamHead + token(db),
    subject: (db) => `${prefix}.snap.${token(db)}`,
    dbOfStream: (stream) => {
      if (!stream.startsWith(streamHead)) return undefined;
      const db = stream.slice(streamHead.length).replaceAll('=', '.');
      return checkDbName(db) === undefined ? db : undefined;
    },
    allSnapshots: `${prefix}.snap.>`,
    shardOf,
    shardPlace: (db) => {
      const k = shardOf(db);
      return { stream: shardStream(k), subject: `${shardHead}${k}.${token(db)}`, shared: true };
    },
    shardStream,
    shardSubjects: (k) => `${shardHead}${k}.>`,
    dbOfSubject: (subject) => {
      if (!subject.startsWith(shardHead)) return undefined;
      const rest = subject.slice(shardHead.length);
      const dot = rest.indexOf('.');
      if (dot < 0) return undefined;
      const db = rest.slice(dot + 1).replaceAll('=', '.');
      return checkDbName(db) === undefined ? db : undefined;
    },
    allShards: `${shardHead}>`,
    leaseStream: `${prefix.toUpperCase()}_LEASES`,
    leaseSubject: (db) => `${prefix}.lease.${token(db)}`,
    historyBucket: `${prefix.toUpperCase()}_HISTORY`,
  };
}

/** A new object name for the compacted history of `db` ending at `txid` (no other compaction's). */
export function historyName(db: string, txid: bigint): string {
  return `${db}/${txid}-${crypto.randomUUID()}`;
}

/** The txid a history object's name says it ends at; undefined when it is not such a name. */
export function historyTxid(name: string): bigint | undefined {
  const m = /\/(\d{1,20})-[0-9a-f-]{36}$/.exec(name);
  return m ? BigInt(m[1]!) : undefined;
}

/** FNV-1a, 32 bits, of a string's UTF-16 code units (names are ASCII): the shard of a database. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Splits `bytes` into parts of at most `size` bytes (at least one part). */
export function splitParts(bytes: Uint8Array, size: number): Uint8Array[] {
  const parts: Uint8Array[] = [];
  for (let at = 0; at < bytes.length || parts.length === 0; at += size)
    parts.push(bytes.subarray(at, Math.min(bytes.length, at + size)));
  return parts;
}

/** Parses `I/N` (1 ≤ I ≤ N); undefined when malformed. */
export function parsePart(text: string | undefined): { i: number; n: number } | undefined {
  const m = /^(\d{1,9})\/(\d{1,9})$/.exec(text ?? '');
  if (!m) return undefined;
  const i = Number(m[1]);
  const n = Number(m[2]);
  return i >= 1 && i <= n ? { i, n } : undefined;
}
