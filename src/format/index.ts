/** Journal format v1 (docs/FORMAT.md): encoding, decoding, validation and checksums. Imports nothing. */
export * from './byte-source.js';
export * from './constants.js';
export * from './diff.js';
export * from './errors.js';
export * from './file-header.js';
export * from './hash.js';
export * from './journal-reader.js';
export * from './snapshot-body.js';
export * from './snapshot-header.js';
export * from './compress.js';
