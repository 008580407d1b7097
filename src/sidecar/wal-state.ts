/**
 * The sidecar's `DB-mycelite/wal` file: where in the WAL the journal's head came from, so a restarted
 * sidecar resumes exactly there. 128 bytes written in place with one write: magic `MYCWAL01`, two
 * positions (the one before the snapshot being appended and the one after it: a crash between the
 * journal's fsync and this file's next write leaves the journal's head at either), XXH64 of the rest.
 * A position is the snapshot's txid and database checksum, and the WAL generation (salts) and commit
 * frame (index, running checksum) it ended at. A torn or stale file only costs a re-bootstrap: the
 * sidecar trusts a position only when the journal's head and the WAL both still match it.
 */
import * as fs from 'node:fs';
import { xxh64 } from '../format/index.js';

export interface WalPosition {
  txid: bigint;
  checksum: bigint;
  salt1: number;
  salt2: number;
  pageSize: number;
  frame: number;
  ck0: number;
  ck1: number;
}

const MAGIC = 'MYCWAL01';
const SIZE = 128;
const RECORD = 40;

function put(v: DataView, at: number, p: WalPosition): void {
  v.setBigUint64(at, p.txid, true);
  v.setBigUint64(at + 8, p.checksum, true);
  v.setUint32(at + 16, p.salt1, true);
  v.setUint32(at + 20, p.salt2, true);
  v.setUint32(at + 24, p.pageSize, true);
  v.setUint32(at + 28, p.frame, true);
  v.setUint32(at + 32, p.ck0, true);
  v.setUint32(at + 36, p.ck1, true);
}

function get(v: DataView, at: number): WalPosition {
  return {
    txid: v.getBigUint64(at, true),
    checksum: v.getBigUint64(at + 8, true),
    salt1: v.getUint32(at + 16, true),
    salt2: v.getUint32(at + 20, true),
    pageSize: v.getUint32(at + 24, true),
    frame: v.getUint32(at + 28, true),
    ck0: v.getUint32(at + 32, true),
    ck1: v.getUint32(at + 36, true),
  };
}

export function encodeWalState(before: WalPosition, after: WalPosition): Uint8Array {
  const b = new Uint8Array(SIZE);
  b.set(new TextEncoder().encode(MAGIC), 0);
  const v = new DataView(b.buffer);
  put(v, 8, before);
  put(v, 8 + RECORD, after);
  v.setBigUint64(SIZE - 8, xxh64(b.subarray(0, SIZE - 8)), true);
  return b;
}

/** The two positions of a state file, or undefined when it is missing or torn. */
export function readWalState(path: string): WalPosition[] | undefined {
  let b: Buffer;
  try {
    b = fs.readFileSync(path);
  } catch {
    return undefined;
  }
  if (b.length !== SIZE || b.subarray(0, 8).toString('latin1') !== MAGIC) return undefined;
  const v = new DataView(b.buffer, b.byteOffset, SIZE);
  if (v.getBigUint64(SIZE - 8, true) !== xxh64(b.subarray(0, SIZE - 8))) return undefined;
  return [get(v, 8), get(v, 8 + RECORD)];
}

/** The state file, kept open and written in place. */
export class WalStateFile {
  private readonly fd: number;
  constructor(readonly path: string) {
    this.fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
  }
  write(before: WalPosition, after: WalPosition): void {
    fs.writeSync(this.fd, encodeWalState(before, after), 0, SIZE, 0);
  }
  close(): void {
    fs.closeSync(this.fd);
  }
}
