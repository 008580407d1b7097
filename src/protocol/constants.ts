/** Names and defaults of the hub protocol (docs/PROTOCOL.md). */

export const API_PREFIX = '/v1';
export const HEADER_JOURNAL = 'mycelite-journal';
export const HEADER_BASE = 'mycelite-base';
export const HEADER_EPOCH = 'mycelite-epoch';
/** A push's mode (`single` or `shared`, src/protocol/mode.ts); absent means `single`. */
export const HEADER_MODE = 'mycelite-mode';
export const CONTENT_TYPE_SNAPSHOTS = 'application/vnd.mycelite.snapshots';
export const CONTENT_TYPE_STREAM = 'application/vnd.mycelite.stream';

/** Default largest push body the hub accepts (bytes). */
export const DEFAULT_MAX_BODY = 64 * 1024 * 1024;
/** A live stream sends a beat after this long without other bytes (ms). */
export const BEAT_INTERVAL_MS = 10_000;
/** A reader that gets no byte for this long reconnects (ms). */
export const DEAD_STREAM_MS = 30_000;
/** Default write lease time-to-live (ms), and its bounds. */
export const DEFAULT_LEASE_TTL_MS = 30_000;
export const MIN_LEASE_TTL_MS = 1_000;
export const MAX_LEASE_TTL_MS = 600_000;

/** ASCII `BEAT` as a little-endian u32, and the whole 8-byte beat. */
export const BEAT_MAGIC = 0x54414542;
export const BEAT_SIZE = 8;
export const BEAT_BYTES = new Uint8Array([0x42, 0x45, 0x41, 0x54, 0, 0, 0, 0]);
