/** Positions and ids as they travel in headers, query strings and JSON (docs/PROTOCOL.md). */

/** A database state in one history: the last txid and the database checksum after it. */
export interface WirePosition {
  txid: bigint;
  checksum: bigint;
}

/** `{txid, checksum}` as JSON: decimal and 16 hex digits. */
export interface JsonPosition {
  txid: string;
  checksum: string;
}

export const EMPTY_POSITION: WirePosition = { txid: 0n, checksum: 0n };

/** `TXID:CHECKSUM`, e.g. `42:9f86d081884c7d65`. */
export function formatPosition(p: WirePosition): string {
  return `${p.txid}:${hex64(p.checksum)}`;
}

/** Parses `TXID:CHECKSUM`; undefined when malformed. */
export function parsePosition(s: string | null | undefined): WirePosition | undefined {
  const m = /^(\d{1,20}):([0-9a-f]{16})$/.exec(s ?? '');
  if (!m) return undefined;
  const txid = BigInt(m[1]!);
  if (txid >= 1n << 64n) return undefined;
  return { txid, checksum: BigInt(`0x${m[2]}`) };
}

export function toJsonPosition(p: WirePosition): JsonPosition {
  return { txid: p.txid.toString(), checksum: hex64(p.checksum) };
}

/** Parses a JSON position; undefined when malformed. */
export function fromJsonPosition(j: unknown): WirePosition | undefined {
  if (typeof j !== 'object' || j === null) return undefined;
  const { txid, checksum } = j as Record<string, unknown>;
  if (typeof txid !== 'string' || typeof checksum !== 'string') return undefined;
  return parsePosition(`${txid}:${checksum}`);
}

export function samePosition(a: WirePosition, b: WirePosition): boolean {
  return a.txid === b.txid && a.checksum === b.checksum;
}

/** A u64 as 16 lowercase hex digits. */
export function hex64(n: bigint): string {
  return n.toString(16).padStart(16, '0');
}

/** Bytes as lowercase hex (journal ids: 32 digits). */
export function toHex(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

/** Parses a journal id (32 hex digits); undefined when malformed. */
export function parseJournalId(s: string | null | undefined): Uint8Array | undefined {
  if (!s || !/^[0-9a-f]{32}$/.test(s)) return undefined;
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = Number.parseInt(s.slice(i * 2, i * 2 + 2), 16);
  return out;
}
