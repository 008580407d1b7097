/** Journal format v1 (docs/FORMAT.md): encoding, decoding, validation and checksums. Imports only xxhash-wasm and fflate. */
export * from './byte-source.js';
export * from './bytes.js';
export * from './compress.js';
export * from './constants.js';
export * from './diff.js';
export * from './errors.js';
export * from './file-header.js';
export * from './hash.js';
export * from './journal-reader.js';
export * from './position.js';
export * from './snapshot-body.js';
export * from './snapshot-header.js';
