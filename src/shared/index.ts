/**
 * The logical half of many-device writes: record each local transaction's change
 * ({@link ChangeRecorder}) and re-apply it on another state with conflict rules
 * ({@link applyLocalChange}). Runtime-neutral.
 * @module
 */
export { type ApplyOutcome, applyLocalChange, type ConflictHandler } from './apply.js';
export { ChangeRecorder, type LocalChange, type RecorderOptions } from './changes.js';
export { type ChangeOp, type RowChange, readChangeset } from './changeset.js';
export { type Conflict, type ConflictChoice, type ConflictKind, defaultChoice } from './conflicts.js';
