/** The hub protocol (docs/PROTOCOL.md): names, positions, errors, and the wire parser. Runtime-neutral. */
export * from './constants.js';
export * from './errors.js';
export * from './mode.js';
export * from './names.js';
export * from './position.js';
export * from './stream.js';
