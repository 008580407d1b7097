/** A position in a history (docs/FORMAT.md, docs/PROTOCOL.md): what a journal, a hub and a replica compare. */

/** A database state in one history: the last txid and the database checksum after it. */
export interface Position {
  txid: bigint;
  checksum: bigint;
}

/** True when `a` and `b` name the same state (same txid, same database checksum). */
export function samePosition(a: Position, b: Position): boolean {
  return a.txid === b.txid && a.checksum === b.checksum;
}
