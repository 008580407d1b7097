/**
 * Checking a stored journal whole, and cutting a damaged one back (src/hub/fs-storage.ts, when it first
 * opens a database): every snapshot's trailer checksum, structure and chain are checked; before the
 * journal is cut at the first damaged snapshot, the file is copied aside (`journal.damaged-TIME`, never
 * deleted), so nothing the hub held is lost.
 */
import * as fs from 'node:fs';
import {
  blockSource,
  FILE_HEADER_SIZE,
  JournalFormatError,
  JournalReader,
  type SnapshotInfo,
  walkPatches,
} from '../format/index.js';
import { fileSource } from '../journal/file-source.js';
import { NodeFileSystem } from '../node/node-fs.js';
import { hashingSource } from '../restore/replay.js';
import { StoredCopyDamagedError } from './heads.js';

const nodeFs = new NodeFileSystem();

/** Where a journal's first damaged snapshot starts, its txid, and what is wrong with it. */
export interface Damage {
  offset: number;
  txid: bigint;
  message: string;
}

/** Which part of a journal to check. */
export interface CheckRange {
  /** Start at the snapshot at this offset (one known from elsewhere: the offset index), not the first. */
  from?: number;
  /** Stop before the snapshot at or past this offset (the part checked already). */
  upTo?: number;
  /** Told each snapshot found whole, in order. */
  onSnapshot?: (s: SnapshotInfo) => void;
}

/**
 * The first damaged snapshot of the journal `file` of database `db` (in `range`: default all), or
 * undefined when every one is whole (a torn tail is not damage: the journal's writer cuts it). Throws
 * StoredCopyDamagedError when the damage is in the file header (there is nothing to cut back to).
 */
export function findDamage(db: string, file: string, range: CheckRange = {}): Damage | undefined {
  const f = nodeFs.open(file, { readonly: true });
  let bad: Damage | undefined;
  try {
    const src = blockSource(fileSource(f));
    let reader: JournalReader;
    try {
      reader = new JournalReader(src, { from: range.from });
    } catch (e) {
      throw new StoredCopyDamagedError(db, 0n, `its journal's file header: ${(e as Error).message}`, {
        cause: e,
      });
    }
    let cur: { offset: number; length: number } | undefined;
    try {
      for (const s of reader.snapshots()) {
        if (range.upTo !== undefined && s.offset >= range.upTo) break;
        cur = s;
        const hashed = hashingSource(src, s);
        walkPatches(hashed, s.offset, s);
        if (!hashed.matches()) {
          bad = { offset: s.offset, txid: s.txid, message: 'its checksum does not match its bytes' };
          break;
        }
        range.onSnapshot?.(s);
      }
    } catch (e) {
      if (!(e instanceof JournalFormatError)) throw e;
      // A body's damage names an offset inside its snapshot; the reader's own, the snapshot's start.
      const inBody = cur !== undefined && e.offset > cur.offset && e.offset < cur.offset + cur.length;
      bad = { offset: inBody ? cur!.offset : e.offset, txid: e.txid ?? 0n, message: e.message };
    }
  } finally {
    f.close();
  }
  if (bad && bad.offset < FILE_HEADER_SIZE) throw new StoredCopyDamagedError(db, bad.txid, bad.message);
  return bad;
}

/** Copies `file` aside (`FILE.damaged-TIME`), then cuts it at `offset`; both durable. The copy's path. */
export function keepAndCut(file: string, offset: number): string {
  const keptAt = `${file}.damaged-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  fs.copyFileSync(file, keptAt);
  const kept = nodeFs.open(keptAt, {});
  try {
    kept.sync();
  } finally {
    kept.close();
  }
  nodeFs.syncDir(keptAt);
  const j = nodeFs.open(file, {});
  try {
    j.truncate(offset);
    j.sync();
  } finally {
    j.close();
  }
  return keptAt;
}
