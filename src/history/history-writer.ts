/**
 * Writes a compacted history file front to back: the file header, then snapshots copied as they are,
 * merged from pages, or full images of a scratch database. Each snapshot's header and trailer are written
 * once its body is (the header's place is kept). Runtime-neutral.
 */

import type { FileHandle } from '../files/file-system.js';
import {
  BODY_COMPRESS_LIMIT,
  BodyCompressor,
  createXxh64,
  encodeFileHeader,
  encodeSnapshotHeader,
  type FileHeader,
  FLAG_FULL_IMAGE,
  SNAPSHOT_HEADER_SIZE,
  SNAPSHOT_TRAILER_SIZE,
  SnapshotBodyWriter,
  type SnapshotHeader,
} from '../format/index.js';
import { type ImageFields, writeImageSnapshot } from '../journal/image.js';

/** The header fields of a snapshot besides its length, patchCount and body flags. */
export type PointFields = Omit<SnapshotHeader, 'length' | 'patchCount'>;

export class HistoryWriter {
  /** Offset where the next snapshot goes. */
  end = 0;
  /** Snapshots written. */
  count = 0;

  constructor(
    private readonly file: FileHandle,
    header: FileHeader,
  ) {
    this.file.truncate(0);
    this.put(encodeFileHeader(header));
  }

  /** Appends an encoded snapshot as it is. */
  copy(bytes: Uint8Array): void {
    this.put(bytes);
    this.count++;
  }

  /** Appends a full image of the first `fields.dbPages` pages of `db` (compressed when small enough). */
  image(db: FileHandle, fields: ImageFields): number {
    const { pageSize, dbPages } = fields;
    if (pageSize * dbPages <= BODY_COMPRESS_LIMIT / 2) {
      const flags = FLAG_FULL_IMAGE | (fields.flags ?? 0);
      return this.patches({ ...fields, flags }, pageSize, (body) => {
        const page = new Uint8Array(pageSize);
        for (let p = 1; p <= dbPages; p++) {
          db.read(page, (p - 1) * pageSize);
          body.addFullPage(p, page);
        }
      });
    }
    const start = this.end;
    writeImageSnapshot(db, fields, (chunk) => this.put(chunk));
    this.count++;
    return this.end - start;
  }

  /**
   * Appends a snapshot whose body `fill` builds (pages in ascending order), compressed when that is
   * smaller. Returns its length.
   */
  patches(fields: PointFields, pageSize: number, fill: (body: SnapshotBodyWriter) => void): number {
    const start = this.end;
    this.end += SNAPSHOT_HEADER_SIZE;
    const hash = createXxh64();
    const out = (chunk: Uint8Array): void => {
      hash.update(chunk);
      this.put(chunk);
    };
    const compressor = new BodyCompressor(out);
    const body = new SnapshotBodyWriter(pageSize, compressor.sink);
    fill(body);
    body.finish();
    const compressed = compressor.finish();
    const h: SnapshotHeader = {
      ...fields,
      flags: fields.flags | compressed,
      length: this.end + SNAPSHOT_TRAILER_SIZE - start,
      patchCount: body.patchCount,
    };
    const header = encodeSnapshotHeader(h);
    hash.update(header);
    const trailer = new Uint8Array(SNAPSHOT_TRAILER_SIZE);
    new DataView(trailer.buffer).setBigUint64(0, hash.digest(), true);
    this.put(trailer);
    this.file.write(header, start);
    this.count++;
    return h.length;
  }

  private put(bytes: Uint8Array): void {
    this.file.write(bytes, this.end);
    this.end += bytes.length;
  }
}
