/**
 * Finds the committed snapshots of a journal that another process writes, without being its writer (for
 * `mycelite push --watch`). A writer appends a snapshot as *tentative* only while it holds SQLite's
 * EXCLUSIVE lock on the database, and confirms or cuts it off before it unlocks (docs/ARCHITECTURE.md,
 * "Commit protocol"); it never appends after a tentative snapshot. So every snapshot followed by another
 * one is committed, and the last one is committed when, under a SHARED lock (no writer mid-commit), it
 * is still there unchanged and no hot rollback journal carries its commitTag (a crash inside its
 * transaction: the next open cuts it off). Runtime-neutral: runs over the storage interface.
 */

import { type FileHandle, type FileSystem, readAt } from '../files/file-system.js';
import {
  type ByteSource,
  decodeFileHeader,
  FILE_HEADER_SIZE,
  SNAPSHOT_HEADER_SIZE,
  SNAPSHOT_TRAILER_SIZE,
  type SnapshotInfo,
  sameBytes,
} from '../format/index.js';
import { hotJournalNonce } from '../journal/sqlite-header.js';
import { JournalIndex, readNewSnapshots } from './journal-index.js';

export interface TailPoll {
  /** Committed snapshots after the index's end, in order (not yet added to the index). */
  snapshots: SnapshotInfo[];
  /** True when a last snapshot may be committed but the writer is committing right now: poll again soon. */
  busy: boolean;
}

export class CommittedTail {
  readonly index: JournalIndex;
  /** The journal's bytes (its size read live). */
  readonly source: ByteSource;
  private readonly journal: FileHandle;
  private readonly db: FileHandle;

  constructor(
    private readonly fs: FileSystem,
    private readonly dbPath: string,
    private readonly journalPath: string,
  ) {
    this.journal = fs.open(journalPath, { readonly: true });
    try {
      this.db = fs.open(dbPath, { readonly: true, sqliteLocks: true });
    } catch (e) {
      this.journal.close();
      throw e;
    }
    try {
      if (!this.db.lock || !this.db.unlock) {
        throw new Error(`cannot take SQLite locks on ${dbPath} in this runtime`);
      }
      const journal = this.journal;
      this.source = { size: () => journal.size(), read: (offset, length) => readAt(journal, offset, length) };
      const header = decodeFileHeader(readAt(journal, 0, FILE_HEADER_SIZE));
      this.index = new JournalIndex(header.journalId, {
        txid: header.baseTxid,
        checksum: header.baseChecksum,
      });
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** Looks for new committed snapshots (at most `max`). */
  poll(max = 4096): TailPoll {
    const found = readNewSnapshots(this.source, this.index, max);
    if (found.length === 0) return { snapshots: found, busy: false };
    if (found.length === max) return { snapshots: found.slice(0, -1), busy: true };
    const last = found[found.length - 1]!;
    const header = this.source.read(last.offset, SNAPSHOT_HEADER_SIZE);
    const trailerAt = last.offset + last.length - SNAPSHOT_TRAILER_SIZE;
    const trailer = this.source.read(trailerAt, SNAPSHOT_TRAILER_SIZE);
    if (!this.db.lock!(1)) return { snapshots: found.slice(0, -1), busy: true };
    let state: 'committed' | 'changed' | 'rolled back';
    try {
      const unchanged =
        this.source.size() >= last.offset + last.length &&
        sameBytes(this.source.read(last.offset, SNAPSHOT_HEADER_SIZE), header) &&
        sameBytes(this.source.read(trailerAt, SNAPSHOT_TRAILER_SIZE), trailer);
      state = !unchanged
        ? 'changed'
        : this.hotJournalNonce() === last.commitTag
          ? 'rolled back'
          : 'committed';
    } finally {
      this.db.unlock!(0);
    }
    if (state === 'committed') return { snapshots: found, busy: false };
    return { snapshots: found.slice(0, -1), busy: state === 'changed' };
  }

  /**
   * True when the file now at the journal's path starts after another base than the one this tail reads:
   * the writer's compaction rewrote the journal (docs/ARCHITECTURE.md, "History"); open a new tail.
   */
  rebased(): boolean {
    try {
      const f = this.fs.open(this.journalPath, { readonly: true });
      try {
        return decodeFileHeader(readAt(f, 0, FILE_HEADER_SIZE)).baseTxid !== this.index.base.txid;
      } finally {
        f.close();
      }
    } catch {
      return false;
    }
  }

  close(): void {
    this.db?.close();
    this.journal.close();
  }

  /** The nonce of a hot rollback journal beside the database, or undefined (none, or committed). */
  private hotJournalNonce(): number | undefined {
    let nonce: number | undefined;
    try {
      nonce = hotJournalNonce(this.fs, this.dbPath);
    } catch {
      return undefined; // deleted meanwhile: a transaction that had not reached its commit ended
    }
    return nonce === 0 ? undefined : nonce;
  }
}
