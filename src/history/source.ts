/**
 * A database's whole restorable history read as one journal: the compacted `history` file (if any)
 * followed by the live `journal`'s snapshots after the history's end (docs/FORMAT.md, "History"). The
 * result is a ByteSource that JournalReader (with `merged: true`), replay and the time-travel page index
 * read like any journal. Runtime-neutral.
 */

import type { FileHandle, FileSystem } from '../files/file-system.js';
import {
  type ByteSource,
  decodeSnapshotHeader,
  FILE_HEADER_SIZE,
  hex64,
  JournalFormatError,
  JournalReader,
  SNAPSHOT_HEADER_SIZE,
  sameBytes,
  xxh64,
} from '../format/index.js';
import { fileSource } from '../journal/file-source.js';

/** Where a database's journal and compacted history are. */
export interface HistoryPaths {
  journal: string;
  history: string;
}

/** The joined history, open for reading. */
export interface HistorySource {
  source: ByteSource;
  /** Offset in `source` where the live journal's part begins (= the history file's valid end). */
  journalStart: number;
  /** Txid the history file ends at (the journal's base when there is no history file). */
  historyEnd: bigint;
  close(): void;
}

/** The history at `paths` as one source; throws when the two files do not join up. */
export function openHistory(fs: FileSystem, paths: HistoryPaths, missing: () => Error): HistorySource {
  if (!fs.exists(paths.journal)) throw missing();
  const journal = fs.open(paths.journal, { readonly: true });
  const handles: FileHandle[] = [journal];
  const close = (): void => {
    for (const h of handles) h.close();
  };
  try {
    const jsrc = fileSource(journal);
    if (!fs.exists(paths.history)) {
      const r = new JournalReader(jsrc);
      return { source: jsrc, journalStart: FILE_HEADER_SIZE, historyEnd: r.header.baseTxid, close };
    }
    const hfile = fs.open(paths.history, { readonly: true });
    handles.push(hfile);
    const hsrc = fileSource(hfile);
    const hr = new JournalReader(hsrc, { merged: true, whole: true });
    let end = { txid: hr.header.baseTxid, checksum: hr.header.baseChecksum };
    for (const s of hr.snapshots()) end = { txid: s.txid, checksum: s.postChecksum };
    const jr = new JournalReader(jsrc);
    if (!sameBytes(hr.header.journalId, jr.header.journalId)) {
      throw new JournalFormatError(`${paths.history} belongs to another history than ${paths.journal}`, 16);
    }
    // The journal's part: its snapshots after the history's end (a crash between the two renames of a
    // compaction leaves an overlap, never a gap).
    let cut = FILE_HEADER_SIZE;
    let at = { txid: jr.header.baseTxid, checksum: jr.header.baseChecksum };
    if (at.txid > end.txid) {
      throw new JournalFormatError(
        `${paths.history} ends at txid ${end.txid} but ${paths.journal} starts after txid ${at.txid}: transactions between are missing`,
        FILE_HEADER_SIZE,
      );
    }
    while (at.txid < end.txid) {
      const h =
        cut + SNAPSHOT_HEADER_SIZE <= jsrc.size()
          ? decodeSnapshotHeader(jsrc.read(cut, SNAPSHOT_HEADER_SIZE))
          : undefined;
      if (h === undefined || typeof h === 'string') {
        throw new JournalFormatError(
          `${paths.journal} ends at txid ${at.txid}, before the end of ${paths.history} (txid ${end.txid})`,
          cut,
        );
      }
      at = { txid: h.txid, checksum: h.postChecksum };
      cut += h.length;
    }
    if (at.checksum !== end.checksum) {
      throw new JournalFormatError(
        `${paths.history} and ${paths.journal} disagree at txid ${end.txid} (${hex64(end.checksum)} vs ${hex64(at.checksum)})`,
        cut,
      );
    }
    const split = hr.end;
    const tail = jsrc.size() - cut;
    const source: ByteSource = {
      size: () => split + tail,
      read(offset, length) {
        if (offset + length <= split) return hsrc.read(offset, length);
        if (offset >= split) return jsrc.read(cut + offset - split, length);
        const out = new Uint8Array(length);
        out.set(hsrc.read(offset, split - offset), 0);
        out.set(jsrc.read(cut, length - (split - offset)), split - offset);
        return out;
      },
    };
    return { source, journalStart: split, historyEnd: end.txid, close };
  } catch (e) {
    close();
    throw e;
  }
}

/**
 * Where the history file at `path` ends (its last snapshot, or its base when it holds none); undefined
 * without one. Finding it reads every snapshot header of the history. With `cached`, what was found is
 * kept in `PATH.end` (docs/FORMAT.md) — the history's size, its last snapshot's offset, txid and checksum, sealed with
 * XXH64 — and used next time only when the history still has that size and its last snapshot's header at
 * that offset (checked by its own checksum) names that txid and checksum and ends the file: open() then
 * reads 64 bytes of the history instead of all of it (a history that has another size, a damaged or
 * missing cache: scanned again, and the cache rewritten).
 */
export function historyEnd(
  fs: FileSystem,
  path: string,
  options: { cached?: boolean } = {},
): { txid: bigint; checksum: bigint } | undefined {
  if (!fs.exists(path)) return undefined;
  const cache = options.cached ? `${path}.end` : undefined;
  const f = fs.open(path, { readonly: true });
  try {
    const size = f.size();
    const found = cache ? readEndCache(fs, cache, f, size) : undefined;
    if (found) return found;
    const r = new JournalReader(fileSource(f), { merged: true, whole: true });
    let end = { txid: r.header.baseTxid, checksum: r.header.baseChecksum };
    let last = -1;
    for (const s of r.snapshots()) {
      end = { txid: s.txid, checksum: s.postChecksum };
      last = s.offset;
    }
    if (cache && last >= 0) writeEndCache(fs, cache, { size, last, ...end });
    return end;
  } finally {
    f.close();
  }
}

const END_CACHE_SIZE = 40;

interface EndCache {
  size: number;
  last: number;
  txid: bigint;
  checksum: bigint;
}

function readEndCache(
  fs: FileSystem,
  cache: string,
  history: FileHandle,
  size: number,
): { txid: bigint; checksum: bigint } | undefined {
  try {
    if (!fs.exists(cache)) return undefined;
    const c = fs.open(cache, { readonly: true });
    let b: Uint8Array;
    try {
      if (c.size() !== END_CACHE_SIZE) return undefined;
      b = new Uint8Array(END_CACHE_SIZE);
      c.read(b, 0);
    } finally {
      c.close();
    }
    const v = new DataView(b.buffer);
    if (v.getBigUint64(32, true) !== xxh64(b.subarray(0, 32))) return undefined;
    const e: EndCache = {
      size: Number(v.getBigUint64(0, true)),
      last: Number(v.getBigUint64(8, true)),
      txid: v.getBigUint64(16, true),
      checksum: v.getBigUint64(24, true),
    };
    if (e.size !== size || e.last < FILE_HEADER_SIZE || e.last + SNAPSHOT_HEADER_SIZE > size)
      return undefined;
    const hb = new Uint8Array(SNAPSHOT_HEADER_SIZE);
    history.read(hb, e.last);
    const h = decodeSnapshotHeader(hb);
    if (!h || typeof h === 'string') return undefined;
    if (h.txid !== e.txid || h.postChecksum !== e.checksum || e.last + h.length !== size) return undefined;
    return { txid: e.txid, checksum: e.checksum };
  } catch {
    return undefined;
  }
}

function writeEndCache(fs: FileSystem, cache: string, e: EndCache): void {
  const b = new Uint8Array(END_CACHE_SIZE);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt(e.size), true);
  v.setBigUint64(8, BigInt(e.last), true);
  v.setBigUint64(16, e.txid, true);
  v.setBigUint64(24, e.checksum, true);
  v.setBigUint64(32, xxh64(b.subarray(0, 32)), true);
  try {
    const c = fs.open(cache, { create: true });
    try {
      c.truncate(0);
      c.write(b, 0);
    } finally {
      c.close();
    }
  } catch {
    // a cache: the next open scans again
  }
}
