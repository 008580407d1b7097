/** A format ByteSource over a storage FileHandle. */

import { type FileHandle, readAt } from '../files/file-system.js';
import type { ByteSource } from '../format/index.js';

/** Reads `file` as a ByteSource; its size is taken once, at creation. */
export function fileSource(file: FileHandle): ByteSource {
  const size = file.size();
  return {
    size: () => size,
    read(offset, length) {
      if (offset + length > size) {
        throw new RangeError(
          `read ${length} bytes at ${offset} past the end of ${file.path} (${size} bytes)`,
        );
      }
      return readAt(file, offset, length);
    },
  };
}
