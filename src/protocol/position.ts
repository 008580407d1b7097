/** Positions and ids as they travel in headers, query strings and JSON (docs/PROTOCOL.md). */
import { hex64, type Position } from '../format/index.js';

/** `{txid, checksum}` as JSON: decimal and 16 hex digits. */
export interface JsonPosition {
  txid: string;
  checksum: string;
}

export const EMPTY_POSITION: Position = { txid: 0n, checksum: 0n };

/** `TXID:CHECKSUM`, e.g. `42:9f86d081884c7d65`. */
export function formatPosition(p: Position): string {
  return `${p.txid}:${hex64(p.checksum)}`;
}

/** Parses `TXID:CHECKSUM`; undefined when malformed. */
export function parsePosition(s: string | null | undefined): Position | undefined {
  const m = /^(\d{1,20}):([0-9a-f]{16})$/.exec(s ?? '');
  if (!m) return undefined;
  const txid = BigInt(m[1]!);
  if (txid >= 1n << 64n) return undefined;
  return { txid, checksum: BigInt(`0x${m[2]}`) };
}

export function toJsonPosition(p: Position): JsonPosition {
  return { txid: p.txid.toString(), checksum: hex64(p.checksum) };
}

/** Parses a JSON position; undefined when malformed. */
export function fromJsonPosition(j: unknown): Position | undefined {
  if (typeof j !== 'object' || j === null) return undefined;
  const { txid, checksum } = j as Record<string, unknown>;
  if (typeof txid !== 'string' || typeof checksum !== 'string') return undefined;
  return parsePosition(`${txid}:${checksum}`);
}

/** Parses a journal id (32 hex digits); undefined when malformed. */
export function parseJournalId(s: string | null | undefined): Uint8Array | undefined {
  if (!s || !/^[0-9a-f]{32}$/.test(s)) return undefined;
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = Number.parseInt(s.slice(i * 2, i * 2 + 2), 16);
  return out;
}
