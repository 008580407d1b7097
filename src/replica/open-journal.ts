import type { FileSystem } from '../files/file-system.js';
import { checkSnapshotChecksum, decodeSnapshotHeader, SNAPSHOT_HEADER_SIZE } from '../format/index.js';
import { fileSource } from '../journal/file-source.js';
import { JournalWriter } from '../journal/journal-writer.js';
import type { Marker } from './marker.js';

/**
 * Opens the replica's journal. A batch's snapshots are fsynced together, so a power loss while they
 * were written can leave any of them damaged, not only the last; nothing of the batch was applied then
 * (the apply starts after the fsync), so unless every snapshot past the batch's start is whole (header
 * and trailer checksums), the journal is cut back to that start.
 */
export function openJournal(fs: FileSystem, path: string, m: Marker | undefined): JournalWriter {
  if (m?.offset !== undefined && fs.fileSize(path) > m.offset) {
    const f = fs.open(path);
    try {
      const src = fileSource(f);
      const size = src.size();
      let at = m.offset;
      while (at < size) {
        const h =
          size - at >= SNAPSHOT_HEADER_SIZE
            ? decodeSnapshotHeader(src.read(at, SNAPSHOT_HEADER_SIZE))
            : undefined;
        if (!h || typeof h === 'string' || at + h.length > size || !checkSnapshotChecksum(src, at, h)) break;
        at += h.length;
      }
      if (at < size) {
        f.truncate(m.offset);
        f.sync();
      }
    } finally {
      f.close();
    }
  }
  return JournalWriter.open(fs, path);
}
