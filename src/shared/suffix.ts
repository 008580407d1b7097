/**
 * Rewriting the tail of a shared device's journal after a rebase: the local snapshots after the base are
 * replaced by the hub's snapshots and the re-applied local transactions (renumbered to follow the hub's
 * head), and the device state (base, pending records) changes with it. Both must change together: an
 * **intent** file (`DB-mycelite/rebase`) holding everything needed is fsynced first; the rewrite then
 * happens in place; recovery finishes an intent a crash interrupted (the database file already holds
 * the final state before the intent is written).
 *
 * Intent: magic `MYCREBS1`, u64 offset of the journal's cut, u32 length + the new journal tail, u32 length
 * + the new device state file, u64 XXH64 of everything before it.
 *
 * Before the intent, the same file holds the **re-apply pin** while the pending changes are applied again
 * without fsyncs (synchronous=OFF): magic `MYCREAP1`, u64 journal offset where the reset's snapshot ends
 * (fsynced), u64 its txid, u64 its post-checksum, u64 XXH64 of everything before it. Recovery finding it
 * cuts the journal back there and rebuilds the file from it (src/shared/recover.ts); the intent replaces
 * it atomically once the journal and the file are durable at the rebase's final state.
 */

import { type FileSystem, readAt, writeFileAtomic } from '../files/file-system.js';
import {
  createXxh64,
  encodeSnapshotHeader,
  SNAPSHOT_HEADER_SIZE,
  SNAPSHOT_TRAILER_SIZE,
  type SnapshotHeader,
  xxh64,
} from '../format/index.js';
import { writeSuffix } from '../journal/journal-writer.js';

const MAGIC = new TextEncoder().encode('MYCREBS1');
const PIN_MAGIC = new TextEncoder().encode('MYCREAP1');
const PIN_SIZE = 40;

/** Where a rebase's re-apply started: the end of the reset's snapshot in the journal (fsynced). */
export interface ReapplyPin {
  end: number;
  txid: bigint;
  checksum: bigint;
}

/** Writes the re-apply pin (fsynced, atomically: a torn one is never read as a pin). */
export function writeReapplyPin(fs: FileSystem, path: string, pin: ReapplyPin): void {
  const b = new Uint8Array(PIN_SIZE);
  const v = new DataView(b.buffer);
  b.set(PIN_MAGIC, 0);
  v.setBigUint64(8, BigInt(pin.end), true);
  v.setBigUint64(16, pin.txid, true);
  v.setBigUint64(24, pin.checksum, true);
  v.setBigUint64(32, xxh64(b.subarray(0, 32)), true);
  writeFileAtomic(fs, path, (f) => f.write(b, 0));
}

/** The re-apply pin at `path`, or undefined when the file is missing or holds something else. */
export function readReapplyPin(fs: FileSystem, path: string): ReapplyPin | undefined {
  if (!fs.exists(path)) return undefined;
  const f = fs.open(path, { readonly: true });
  let b: Uint8Array;
  try {
    b = readAt(f, 0, Math.min(f.size(), PIN_SIZE + 1));
  } finally {
    f.close();
  }
  if (b.length !== PIN_SIZE || PIN_MAGIC.some((m, i) => b[i] !== m)) return undefined;
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  if (v.getBigUint64(32, true) !== xxh64(b.subarray(0, 32))) return undefined;
  return {
    end: Number(v.getBigUint64(8, true)),
    txid: v.getBigUint64(16, true),
    checksum: v.getBigUint64(24, true),
  };
}

/** What a suffix rewrite does. */
export interface SuffixRewrite {
  /** Byte offset of the journal where the rewritten tail starts (the end of the base snapshot). */
  cut: number;
  /** The new tail: whole snapshots. */
  tail: Uint8Array;
  /** The new device state file's bytes. */
  state: Uint8Array;
}

/** Writes the intent (fsynced, atomically). */
export function writeIntent(fs: FileSystem, path: string, r: SuffixRewrite): void {
  const b = new Uint8Array(8 + 8 + 4 + r.tail.length + 4 + r.state.length + 8);
  const v = new DataView(b.buffer);
  b.set(MAGIC, 0);
  v.setBigUint64(8, BigInt(r.cut), true);
  v.setUint32(16, r.tail.length, true);
  b.set(r.tail, 20);
  let at = 20 + r.tail.length;
  v.setUint32(at, r.state.length, true);
  b.set(r.state, at + 4);
  at += 4 + r.state.length;
  v.setBigUint64(at, xxh64(b.subarray(0, at)), true);
  writeFileAtomic(fs, path, (f) => f.write(b, 0));
}

/** The intent at `path`, or undefined when there is none (or it was never wholly written). */
export function readIntent(fs: FileSystem, path: string): SuffixRewrite | undefined {
  if (!fs.exists(path)) return undefined;
  const f = fs.open(path, { readonly: true });
  let b: Uint8Array;
  try {
    b = readAt(f, 0, f.size());
  } finally {
    f.close();
  }
  if (b.length < 32 || MAGIC.some((m, i) => b[i] !== m)) return undefined;
  const v = new DataView(b.buffer);
  if (v.getBigUint64(b.length - 8, true) !== xxh64(b.subarray(0, b.length - 8))) return undefined;
  const cut = Number(v.getBigUint64(8, true));
  const tl = v.getUint32(16, true);
  const tail = b.slice(20, 20 + tl);
  const sl = v.getUint32(20 + tl, true);
  const state = b.slice(24 + tl, 24 + tl + sl);
  return { cut, tail, state };
}

/**
 * Carries out a rewrite (again, after a crash: every step is idempotent): the journal's tail, then the
 * device state, then the intent is deleted.
 */
export function finishRewrite(
  fs: FileSystem,
  paths: { journal: string; shared: string; rebase: string },
  r: SuffixRewrite,
): void {
  const j = fs.open(paths.journal);
  try {
    writeSuffix(j, r.cut, r.tail);
  } finally {
    j.close();
  }
  writeFileAtomic(fs, paths.shared, (f) => f.write(r.state, 0));
  fs.delete(paths.rebase, { syncDir: true });
}

/**
 * The snapshot `bytes` with a new txid (and the previous state's checksum `pre`): its header rewritten,
 * its trailer checksum recomputed over the same body.
 */
export function renumber(bytes: Uint8Array, header: SnapshotHeader, txid: bigint, pre: bigint): Uint8Array {
  const out = bytes.slice();
  const h = encodeSnapshotHeader({ ...header, txid, preChecksum: pre });
  out.set(h, 0);
  const hash = createXxh64();
  hash.update(out.subarray(SNAPSHOT_HEADER_SIZE, out.length - SNAPSHOT_TRAILER_SIZE));
  hash.update(h);
  new DataView(out.buffer).setBigUint64(out.length - SNAPSHOT_TRAILER_SIZE, hash.digest(), true);
  return out;
}
