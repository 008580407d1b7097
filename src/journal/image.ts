/**
 * Full-image snapshots (docs/FORMAT.md, flags bit 0): every page of a database as a whole page. Used by a
 * hub to bootstrap a replica at its head. The snapshot is streamed in bounded memory: its length is known
 * in advance, so the header goes first, the body in chunks, the trailer last.
 */

import { type FileHandle, readAt } from '../files/file-system.js';
import {
  createXxh64,
  encodeSnapshotHeader,
  FLAG_FULL_IMAGE,
  FLAG_MERGED,
  PATCH_HEADER_SIZE,
  SNAPSHOT_HEADER_SIZE,
  SNAPSHOT_TRAILER_SIZE,
  SnapshotBodyWriter,
  type SnapshotHeader,
} from '../format/index.js';

/** What an image snapshot says besides its pages: normally copied from the snapshot it stands for. */
export interface ImageFields {
  txid: bigint;
  timestamp: number;
  pageSize: number;
  dbPages: number;
  preChecksum: bigint;
  /** The database checksum of the pages (the caller knows it: replay verified it). */
  postChecksum: bigint;
  commitTag: number;
  /** Flags besides FLAG_FULL_IMAGE (FLAG_MERGED in a compacted history). */
  flags?: number;
}

/** Length in bytes of a full image of `dbPages` pages of `pageSize`. */
export function imageLength(pageSize: number, dbPages: number): number {
  return SNAPSHOT_HEADER_SIZE + dbPages * (PATCH_HEADER_SIZE + pageSize) + SNAPSHOT_TRAILER_SIZE;
}

/**
 * Encodes the first `fields.dbPages` pages of `db` as a full-image snapshot, handing its bytes to `sink`
 * in order (header, body chunks, trailer). Returns the snapshot's header.
 */
export function writeImageSnapshot(
  db: FileHandle,
  fields: ImageFields,
  sink: (chunk: Uint8Array) => void,
): SnapshotHeader {
  const { pageSize, dbPages } = fields;
  if (db.size() < pageSize * dbPages) {
    throw new Error(`image: ${db.path} holds ${db.size()} bytes, fewer than ${dbPages} pages of ${pageSize}`);
  }
  const header: SnapshotHeader = {
    length: imageLength(pageSize, dbPages),
    txid: fields.txid,
    timestamp: fields.timestamp,
    pageSize,
    dbPages,
    patchCount: dbPages,
    // Only the merged flag carries over: the body written here is never compressed.
    flags: FLAG_FULL_IMAGE | ((fields.flags ?? 0) & FLAG_MERGED),
    preChecksum: fields.preChecksum,
    postChecksum: fields.postChecksum,
    commitTag: fields.commitTag,
  };
  const encoded = encodeSnapshotHeader(header);
  const hash = createXxh64();
  sink(encoded);
  const body = new SnapshotBodyWriter(pageSize, (chunk) => {
    hash.update(chunk);
    sink(chunk);
  });
  const per = Math.max(1, Math.floor((1 << 20) / pageSize));
  for (let first = 1; first <= dbPages; first += per) {
    const n = Math.min(per, dbPages - first + 1);
    const pages = readAt(db, (first - 1) * pageSize, n * pageSize);
    for (let i = 0; i < n; i++) body.addFullPage(first + i, pages.subarray(i * pageSize, (i + 1) * pageSize));
  }
  body.finish();
  if (SNAPSHOT_HEADER_SIZE + body.length + SNAPSHOT_TRAILER_SIZE !== header.length) {
    throw new Error('image: body length does not match the computed snapshot length');
  }
  hash.update(encoded);
  const trailer = new Uint8Array(SNAPSHOT_TRAILER_SIZE);
  new DataView(trailer.buffer).setBigUint64(0, hash.digest(), true);
  sink(trailer);
  return header;
}
