/**
 * A replica's inflight marker (`-mycelite/inflight`), encoded and decoded: which apply (one snapshot, a
 * batch, a reset) was under way, and what its post step must make true (see replica.ts). Runtime-neutral.
 */
import { type FileHandle, readAt } from '../files/file-system.js';
import type { PostStep } from './apply.js';

/**
 * Marker: 1 (one snapshot), 2 (a batch) or 3 (a reset), the post step (28 bytes), then for a batch 24
 * more bytes, for a reset the length (2 bytes) and the suffix of where the old history is kept. Always
 * written whole, at least MARKER_SIZE bytes (zeros after), so the file's size never shrinks: after a power
 * loss a file's data and its size can come from different writes, and a batch marker cut to a single
 * one's size read as offset 0.
 */
const MARKER_SIZE = 53;
const MARKER_ONE = 1;
const MARKER_BATCH = 2;
const MARKER_RESET = 3;
/** Longest suffix of a kept history in a reset's marker (bytes). */
const MAX_KEPT_SUFFIX = 256;

/** A set inflight marker: the post step of the last snapshot, and where the marked apply started. */
export interface Marker extends PostStep {
  /** The first snapshot of the apply (= txid for one snapshot). */
  first: bigint;
  /** For a batch: where its first snapshot starts in the journal, and its preChecksum. */
  offset?: number;
  pre?: bigint;
  /** For a reset: the suffix of the database's path the old history goes to; '' for none. */
  kept?: string;
}

/**
 * The bytes of the marker for the apply of `step`'s snapshot, or of the batch from `batch.first` to it,
 * or, with `kept` (the suffix of the database's path its old history goes to, '' for none), of a reset.
 */
export function encodeMarker(
  step: PostStep,
  batch?: { first: bigint; offset: number; pre: bigint },
  kept?: string,
): Uint8Array {
  const name = new TextEncoder().encode(kept ?? '');
  if (name.length > MAX_KEPT_SUFFIX) throw new Error(`suffix too long: ${kept}`);
  const b = new Uint8Array(Math.max(MARKER_SIZE, kept !== undefined ? 31 + name.length : 0));
  const v = new DataView(b.buffer);
  b[0] = batch ? MARKER_BATCH : kept !== undefined ? MARKER_RESET : MARKER_ONE;
  v.setBigUint64(1, step.txid, true);
  v.setUint32(9, step.pageSize, true);
  v.setUint32(13, step.dbPages, true);
  b.set(step.counter, 17);
  if (batch) {
    v.setBigUint64(29, batch.first, true);
    v.setBigUint64(37, BigInt(batch.offset), true);
    v.setBigUint64(45, batch.pre, true);
  }
  if (kept !== undefined) {
    v.setUint16(29, name.length, true);
    b.set(name, 31);
  }
  return b;
}

/** The marker in `file`, or undefined when it is clear. */
export function readMarker(file: FileHandle): Marker | undefined {
  const b = readAt(file, 0, 31 + MAX_KEPT_SUFFIX);
  if (b[0] !== MARKER_ONE && b[0] !== MARKER_BATCH && b[0] !== MARKER_RESET) return undefined;
  const v = new DataView(b.buffer);
  const txid = v.getBigUint64(1, true);
  const m: Marker = {
    txid,
    pageSize: v.getUint32(9, true),
    dbPages: v.getUint32(13, true),
    counter: b.slice(17, 29),
    first: txid,
  };
  if (b[0] === MARKER_BATCH) {
    m.first = v.getBigUint64(29, true);
    m.offset = Number(v.getBigUint64(37, true));
    m.pre = v.getBigUint64(45, true);
  }
  if (b[0] === MARKER_RESET) {
    const n = Math.min(v.getUint16(29, true), MAX_KEPT_SUFFIX);
    m.kept = new TextDecoder().decode(b.subarray(31, 31 + n));
  }
  return m;
}
