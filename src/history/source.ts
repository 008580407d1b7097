/**
 * A database's whole restorable history read as one journal: the compacted `history` file (if any)
 * followed by the live `journal`'s snapshots after the history's end (docs/FORMAT.md, "History"). The
 * result is a ByteSource that JournalReader (with `merged: true`), replay and the time-travel page index
 * read like any journal. Runtime-neutral.
 */
import {
  type ByteSource,
  decodeSnapshotHeader,
  FILE_HEADER_SIZE,
  hex64,
  JournalFormatError,
  JournalReader,
  SNAPSHOT_HEADER_SIZE,
  sameBytes,
} from '../format/index.js';
import { fileSource } from '../journal/file-source.js';
import type { FileHandle, FileSystem } from '../storage/file-system.js';

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

/** Where the history file at `path` ends (its last snapshot, or its base when it holds none); undefined without one. */
export function historyEnd(fs: FileSystem, path: string): { txid: bigint; checksum: bigint } | undefined {
  if (!fs.exists(path)) return undefined;
  const f = fs.open(path, { readonly: true });
  try {
    const r = new JournalReader(fileSource(f), { merged: true, whole: true });
    let end = { txid: r.header.baseTxid, checksum: r.header.baseChecksum };
    for (const s of r.snapshots()) end = { txid: s.txid, checksum: s.postChecksum };
    return end;
  } finally {
    f.close();
  }
}
