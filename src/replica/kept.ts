/**
 * Where a reset puts a replica's new history while it is built, and where it keeps the old one: beside
 * the database, as `REPLICA_DB.replaced-<journal id, 8 hex>-<txid>` (the old database, when another
 * history was adopted) with `REPLICA_DB.replaced-…-mycelite/journal` and its replica tag — a whole
 * replica that `mycelite log/restore/verify` read. Nothing here ever deletes an old history.
 * Runtime-neutral.
 */

import type { FileSystem } from '../files/file-system.js';
import {
  JournalFormatError,
  JournalReader,
  type Position,
  type SnapshotInfo,
  toHex,
} from '../format/index.js';
import { fileSource } from '../journal/file-source.js';
import { journalPaths } from '../journal/paths.js';

/** The contents of a replica's tag file (`-mycelite/replica`). */
export const REPLICA_TAG = new TextEncoder().encode('replica\n');

/** Where a reset writes the new journal before it replaces `journal`. */
export function resetPath(journal: string): string {
  return `${journal}.reset`;
}

/**
 * A free suffix to keep the history `journalId` (at `txid`) of the replica at `dbPath` under:
 * `.replaced-<8 hex of the id>-<txid>` (then `.2`, `.3`, …), such that neither `dbPath + suffix` nor its
 * journal directory exists. (A suffix, not a path: a replica copied or moved elsewhere keeps its own.)
 */
export function keptSuffix(fs: FileSystem, dbPath: string, journalId: Uint8Array, txid: bigint): string {
  const stem = `.replaced-${toHex(journalId).slice(0, 8)}-${txid}`;
  for (let i = 1; ; i++) {
    const suffix = i === 1 ? stem : `${stem}.${i}`;
    const path = dbPath + suffix;
    if (!fs.exists(path) && !fs.exists(`${path}.partial`) && !fs.exists(journalPaths(path).dir))
      return suffix;
  }
}

/** Copies the file `from` to `to` (through `to.partial`, fsynced, then renamed: never half there). */
export function copyFile(fs: FileSystem, from: string, to: string): void {
  const partial = `${to}.partial`;
  const src = fs.open(from, { readonly: true });
  try {
    const out = fs.open(partial, { create: true });
    try {
      out.truncate(0);
      const size = src.size();
      const buf = new Uint8Array(1 << 20);
      for (let at = 0; at < size; at += buf.length) {
        const n = src.read(buf, at);
        out.write(n === buf.length ? buf : buf.subarray(0, n), at);
      }
      out.sync();
    } finally {
      out.close();
    }
  } finally {
    src.close();
  }
  fs.rename(partial, to);
  fs.syncDir(to);
}

/** A journal's id, base and last snapshot, read (not changed). */
export interface History {
  journalId: Uint8Array;
  base: Position;
  last: SnapshotInfo | undefined;
}

/**
 * Reads the journal at `path` (undefined when it is missing or empty). Throws what reading throws: an
 * I/O error, or a JournalFormatError for a damaged header or snapshot.
 */
export function historyOf(fs: FileSystem, path: string): History | undefined {
  if (fs.fileSize(path) === 0) return undefined;
  const f = fs.open(path, { readonly: true });
  try {
    const reader = new JournalReader(fileSource(f));
    let last: SnapshotInfo | undefined;
    for (const s of reader.snapshots()) last = s;
    const { journalId, baseTxid, baseChecksum } = reader.header;
    return { journalId, base: { txid: baseTxid, checksum: baseChecksum }, last };
  } finally {
    f.close();
  }
}

/** The image a reset's new journal holds, or undefined when the file is not a whole one. */
export function newImage(fs: FileSystem, path: string): SnapshotInfo | undefined {
  try {
    return historyOf(fs, path)?.last;
  } catch (e) {
    if (e instanceof JournalFormatError) return undefined;
    throw e;
  }
}

/** The position of the history's last snapshot, or its base. */
export function positionOf(h: History): Position {
  return h.last ? { txid: h.last.txid, checksum: h.last.postChecksum } : h.base;
}
