/**
 * A shared database's device state (`DB-mycelite/shared`, docs/FORMAT.md "Shared databases"): the device
 * id, the **base** — the last position of the hub's history the local journal is known to share — and the
 * **pending** local transactions after it, each with its logical change (a changeset, and schema changes as
 * SQL) and the local snapshots it became. The journal's snapshots after the base are exactly the pending
 * records' snapshots, in order; recovery restores that if a crash left them apart.
 *
 * File: a 64-byte header (magic `MYCSHRD1`, device id, base txid and checksum, next sequence number, XXH64
 * of the first 56 bytes), then records: u32 length of the record, u64 seq, u64 first and last local txid,
 * u64 postChecksum, u32 changeset length, the changeset, u32 schema length, the schema changes (JSON), u64
 * XXH64 of everything before it. A record cut short (a crash while appending) is ignored and cut off.
 * Appends are fsynced; everything else is a whole new file renamed into place.
 */

import { type FileHandle, type FileSystem, readAt, writeFileAtomic } from '../files/file-system.js';
import { concatBytes, type Position, xxh64 } from '../format/index.js';
import type { LocalChange } from './changes.js';

export type { LocalChange };

/** One pending local transaction. */
export interface PendingRecord {
  /** The device's sequence number of the change (1, 2, …, never reused). */
  seq: bigint;
  /** The local snapshots it became: txids first..last (one, unless one exec() committed several). */
  firstTxid: bigint;
  lastTxid: bigint;
  /** The database checksum after its last snapshot. */
  postChecksum: bigint;
  change: LocalChange;
}

const MAGIC = new TextEncoder().encode('MYCSHRD1');
const HEADER = 64;

/** A damaged device state file (the message says what to do). */
export class PendingFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PendingFileError';
  }
}

/** The device state, open for appending. */
export class PendingQueue {
  private constructor(
    private readonly fs: FileSystem,
    readonly path: string,
    private file: FileHandle,
    readonly deviceId: Uint8Array,
    private baseAt: Position,
    private next: bigint,
    private list: PendingRecord[],
    private end: number,
  ) {}

  /**
   * Opens the device state at `path`, creating it (a new random device id, base = `base`) when missing.
   * A record a crash cut short is cut off.
   */
  static open(fs: FileSystem, path: string, base: Position): PendingQueue {
    if (!fs.exists(path) || fs.fileSize(path) === 0) {
      writeFileAtomic(fs, path, (f) =>
        f.write(encodeHeader(crypto.getRandomValues(new Uint8Array(16)), base, 1n), 0),
      );
    }
    const file = fs.open(path);
    try {
      const size = file.size();
      const head = readAt(file, 0, HEADER);
      const v = new DataView(head.buffer);
      if (
        size < HEADER ||
        MAGIC.some((m, i) => head[i] !== m) ||
        v.getBigUint64(56, true) !== xxh64(head.subarray(0, 56))
      ) {
        throw new PendingFileError(
          `${path} is damaged (bad header): the device's pending changes cannot be read; move it away to start the device afresh (its unsynced changes are lost)`,
        );
      }
      const deviceId = head.slice(8, 24);
      const baseAt = { txid: v.getBigUint64(24, true), checksum: v.getBigUint64(32, true) };
      let next = v.getBigUint64(40, true);
      const list: PendingRecord[] = [];
      let at = HEADER;
      while (at + 4 <= size) {
        const len = new DataView(readAt(file, at, 4).buffer).getUint32(0, true);
        if (len < 60 || at + len > size) break;
        const rec = decodeRecord(readAt(file, at, len));
        if (!rec) break;
        list.push(rec);
        if (rec.seq >= next) next = rec.seq + 1n;
        at += len;
      }
      if (at < size) {
        file.truncate(at);
        file.sync();
      }
      return new PendingQueue(fs, path, file, deviceId, baseAt, next, list, at);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /** The last position of the hub's history the local journal shares. */
  get base(): Position {
    return { ...this.baseAt };
  }

  /** The pending records, oldest first. */
  get records(): readonly PendingRecord[] {
    return this.list;
  }

  /** The sequence number the next change gets. */
  get nextSeq(): bigint {
    return this.next;
  }

  /** The device id as 32 hex digits. */
  get device(): string {
    return [...this.deviceId].map((b) => b.toString(16).padStart(2, '0')).join('');
  }

  /** Appends a record (fsynced before it returns) and gives it the next sequence number. */
  append(r: Omit<PendingRecord, 'seq'>): PendingRecord {
    const rec: PendingRecord = { ...r, seq: this.next };
    const bytes = encodeRecord(rec);
    this.file.write(bytes, this.end);
    this.file.sync();
    this.end += bytes.length;
    this.list.push(rec);
    this.next++;
    return rec;
  }

  /** The bytes of a state file with this device, a new base and these records (see rewrite). */
  encode(base: Position, records: readonly PendingRecord[]): Uint8Array {
    const parts = [encodeHeader(this.deviceId, base, this.next), ...records.map(encodeRecord)];
    return concatBytes(parts);
  }

  /**
   * Replaces the whole state (atomically: a new file renamed into place): a new base and the records
   * still pending after it. Sequence numbers keep growing.
   */
  rewrite(base: Position, records: readonly PendingRecord[]): void {
    const bytes = this.encode(base, records);
    writeFileAtomic(this.fs, this.path, (f) => f.write(bytes, 0));
    this.reload();
  }

  /** Reads the file again (after it was replaced by a recovery or a rewrite). */
  reload(): void {
    const again = PendingQueue.open(this.fs, this.path, this.baseAt);
    this.file.close();
    this.file = again.file;
    this.baseAt = again.baseAt;
    this.next = again.next;
    this.list = again.list;
    this.end = again.end;
  }

  close(): void {
    this.file.close();
  }
}

function encodeHeader(deviceId: Uint8Array, base: Position, next: bigint): Uint8Array {
  const b = new Uint8Array(HEADER);
  b.set(MAGIC, 0);
  b.set(deviceId, 8);
  const v = new DataView(b.buffer);
  v.setBigUint64(24, base.txid, true);
  v.setBigUint64(32, base.checksum, true);
  v.setBigUint64(40, next, true);
  v.setBigUint64(56, xxh64(b.subarray(0, 56)), true);
  return b;
}

const text = new TextEncoder();
const untext = new TextDecoder();

function encodeRecord(r: PendingRecord): Uint8Array {
  const schema = text.encode(
    JSON.stringify({ ddl: r.change.ddl, unmergeable: r.change.unmergeable ?? null }),
  );
  const len = 4 + 8 * 4 + 4 + r.change.changeset.length + 4 + schema.length + 8;
  const b = new Uint8Array(len);
  const v = new DataView(b.buffer);
  let at = 0;
  v.setUint32(at, len, true);
  at += 4;
  for (const n of [r.seq, r.firstTxid, r.lastTxid, r.postChecksum]) {
    v.setBigUint64(at, n, true);
    at += 8;
  }
  v.setUint32(at, r.change.changeset.length, true);
  at += 4;
  b.set(r.change.changeset, at);
  at += r.change.changeset.length;
  v.setUint32(at, schema.length, true);
  at += 4;
  b.set(schema, at);
  at += schema.length;
  v.setBigUint64(at, xxh64(b.subarray(0, at)), true);
  return b;
}

function decodeRecord(b: Uint8Array): PendingRecord | undefined {
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  if (v.getBigUint64(b.length - 8, true) !== xxh64(b.subarray(0, b.length - 8))) return undefined;
  let at = 4;
  const [seq, firstTxid, lastTxid, postChecksum] = [0, 1, 2, 3].map(() => {
    const n = v.getBigUint64(at, true);
    at += 8;
    return n;
  }) as [bigint, bigint, bigint, bigint];
  const cl = v.getUint32(at, true);
  at += 4;
  const changeset = b.slice(at, at + cl);
  at += cl;
  const sl = v.getUint32(at, true);
  at += 4;
  const schema = JSON.parse(untext.decode(b.subarray(at, at + sl))) as {
    ddl: LocalChange['ddl'];
    unmergeable: string | null;
  };
  const change: LocalChange = { changeset, ddl: schema.ddl };
  if (schema.unmergeable) change.unmergeable = schema.unmergeable;
  return { seq, firstTxid, lastTxid, postChecksum, change };
}
