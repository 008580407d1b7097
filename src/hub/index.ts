/** The Mycelite hub (docs/PROTOCOL.md): HTTP server, storage, auth. Node only. */

export type { EncodedSnapshot } from '../protocol/index.js';
export {
  KEY_ENV,
  loadOrCreateKey,
  mintToken,
  parseTtl,
  type Role,
  type TokenClaims,
  verifyToken,
} from './auth.js';
export { FsStorage } from './fs-storage.js';
export { NatsStorage, type NatsStorageOptions, openNatsStorage } from './nats-storage.js';
export { type Hub, type HubOptions, startHub } from './server.js';
export type { AppendResult, DbState, HubStorage, StoredLease } from './storage.js';
