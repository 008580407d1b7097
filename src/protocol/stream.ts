/**
 * Incremental parser of what travels on the wire (docs/PROTOCOL.md): a push body (snapshots) or a read
 * stream (journal file header, snapshots, beats). Feed it chunks as they arrive; it hands back each whole
 * item once it is complete and valid. Every snapshot is fully checked (header, trailer checksum, patch
 * structure, chain) before it is handed out, so nothing partial or damaged is ever applied or stored.
 */
import {
  BODY_CODEC_FLAGS,
  checkSnapshotChecksum,
  decodeFileHeader,
  decodeSnapshotHeader,
  FILE_HEADER_SIZE,
  type FileHeader,
  FLAG_COMPRESSED,
  FLAG_MERGED,
  inflateBody,
  JournalFormatError,
  maxBodyLength,
  memorySource,
  type Position,
  SNAPSHOT_HEADER_SIZE,
  SNAPSHOT_TRAILER_SIZE,
  type SnapshotHeader,
  walkPatches,
} from '../format/index.js';
import { BEAT_MAGIC, BEAT_SIZE } from './constants.js';

const SNAP_MAGIC = 0x50414e53; // 'SNAP' little-endian

/** One complete item of a stream. */
export type StreamItem =
  | { kind: 'header'; header: FileHeader; bytes: Uint8Array }
  | {
      kind: 'snapshot';
      header: SnapshotHeader;
      bytes: Uint8Array;
      /** With `keepInflated`, a compressed snapshot's body as checked, inflated (see `unpackSnapshot`). */
      raw?: UnpackedSnapshot;
    }
  | { kind: 'beat' };

export interface StreamParserOptions {
  /** True for a read stream (starts with a file header, may hold beats); false for a push body. */
  stream: boolean;
  /** For a push body: the position before its first snapshot. A stream takes it from its file header. */
  base?: Position;
  /** Largest snapshot accepted (bytes); larger is an error. Default: unlimited. */
  maxSnapshot?: number;
  /** Hand out the inflated body of each compressed snapshot (`raw`), so a replica inflates it once. */
  keepInflated?: boolean;
}

/** A validated, encoded snapshot (its bytes exactly as in a journal) and its decoded header. */
export interface EncodedSnapshot {
  bytes: Uint8Array;
  header: SnapshotHeader;
  /** The same snapshot with its body inflated, when the stream parser kept it (`keepInflated`). */
  raw?: UnpackedSnapshot;
}

/** A snapshot with its body uncompressed: for walking its patches, never for storing. */
export interface UnpackedSnapshot {
  bytes: Uint8Array;
  header: SnapshotHeader;
}

/**
 * The snapshot with its body inflated, for walking it several times: same header but for the compressed
 * flag and the length; its trailer is not a checksum any more. Throws what inflating throws.
 */
export function unpackSnapshot(bytes: Uint8Array, h: SnapshotHeader): UnpackedSnapshot {
  if ((h.flags & FLAG_COMPRESSED) === 0) return { bytes, header: h };
  const stored = bytes.subarray(SNAPSHOT_HEADER_SIZE, h.length - SNAPSHOT_TRAILER_SIZE);
  const body = inflateBody(stored, maxBodyLength(h), h.flags);
  const length = SNAPSHOT_HEADER_SIZE + body.length + SNAPSHOT_TRAILER_SIZE;
  const out = new Uint8Array(length);
  out.set(body, SNAPSHOT_HEADER_SIZE);
  return { bytes: out, header: { ...h, flags: h.flags & ~BODY_CODEC_FLAGS, length } };
}

/** Parses a push body or a read stream chunk by chunk. Throws JournalFormatError at the first problem. */
export class StreamParser {
  private chunks: Uint8Array[] = [];
  private buffered = 0;
  /** Stream offset of the first buffered byte. */
  private offset = 0;
  private sawHeader: boolean;
  /** The position after the last item handed out. */
  position: Position | undefined;
  private lastTime = Number.NEGATIVE_INFINITY;

  constructor(private readonly options: StreamParserOptions) {
    this.sawHeader = !options.stream;
    this.position = options.base;
  }

  /** Bytes received but not yet part of a complete item. */
  get pending(): number {
    return this.buffered;
  }

  /** Adds a chunk; returns the items it completed. */
  push(chunk: Uint8Array): StreamItem[] {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const items: StreamItem[] = [];
    for (;;) {
      const item = this.next();
      if (!item) return items;
      items.push(item);
    }
  }

  /** Call at the end of input: throws when a partial item is left (a cut connection or truncated body). */
  end(): void {
    if (this.buffered > 0) {
      throw new JournalFormatError(
        `input ends inside an item (${this.buffered} bytes left over)`,
        this.offset,
      );
    }
    if (!this.sawHeader) throw new JournalFormatError('input ends before the journal header', this.offset);
  }

  private next(): StreamItem | undefined {
    if (!this.sawHeader) {
      if (this.buffered < FILE_HEADER_SIZE) return undefined;
      const bytes = this.take(FILE_HEADER_SIZE);
      let header: FileHeader;
      try {
        header = decodeFileHeader(bytes);
      } catch (e) {
        throw new JournalFormatError((e as Error).message, 0);
      }
      this.sawHeader = true;
      this.position = { txid: header.baseTxid, checksum: header.baseChecksum };
      return { kind: 'header', header, bytes };
    }
    if (this.buffered < 8) return undefined;
    const head = this.peek(8);
    const v = new DataView(head.buffer, head.byteOffset, 8);
    const magic = v.getUint32(0, true);
    if (this.options.stream && magic === BEAT_MAGIC) {
      if (v.getUint32(4, true) !== 0) throw new JournalFormatError('malformed beat', this.offset);
      this.take(BEAT_SIZE);
      return { kind: 'beat' };
    }
    if (magic !== SNAP_MAGIC) throw new JournalFormatError('expected a snapshot', this.offset);
    const length = v.getUint32(4, true);
    const max = this.options.maxSnapshot ?? Number.POSITIVE_INFINITY;
    if (length > max) {
      throw new JournalFormatError(`snapshot of ${length} bytes is over the limit of ${max}`, this.offset);
    }
    if (this.buffered < Math.max(length, SNAPSHOT_HEADER_SIZE)) return undefined;
    const at = this.offset;
    const decoded = decodeSnapshotHeader(this.peek(SNAPSHOT_HEADER_SIZE));
    if (decoded === undefined) throw new JournalFormatError('damaged snapshot header', at);
    if (typeof decoded === 'string') throw new JournalFormatError(decoded, at);
    const bytes = this.take(decoded.length);
    const raw = this.check(decoded, bytes, at);
    return raw
      ? { kind: 'snapshot', header: decoded, bytes, raw }
      : { kind: 'snapshot', header: decoded, bytes };
  }

  /** Checks a snapshot; with `keepInflated`, returns its inflated form when it is compressed. */
  private check(h: SnapshotHeader, bytes: Uint8Array, at: number): UnpackedSnapshot | undefined {
    const expect = this.position ? this.position.txid + 1n : h.txid;
    const src = memorySource(bytes);
    if (!checkSnapshotChecksum(src, 0, h))
      throw new JournalFormatError('snapshot checksum mismatch', at, h.txid);
    let raw: UnpackedSnapshot | undefined;
    try {
      if (this.options.keepInflated && (h.flags & FLAG_COMPRESSED) !== 0) {
        try {
          raw = unpackSnapshot(bytes, h);
        } catch (e) {
          throw new Error(`bad snapshot body: compressed body does not inflate (${(e as Error).message})`);
        }
        walkPatches(memorySource(raw.bytes), 0, raw.header);
      } else {
        walkPatches(src, 0, h);
      }
    } catch (e) {
      throw new JournalFormatError((e as Error).message, at, h.txid);
    }
    if ((h.flags & FLAG_MERGED) !== 0)
      throw new JournalFormatError(
        'merged snapshot (compacted history) is not sent between peers',
        at,
        h.txid,
      );
    if (h.txid !== expect)
      throw new JournalFormatError(`snapshot has txid ${h.txid}, expected ${expect}`, at, expect);
    if (this.position && h.preChecksum !== this.position.checksum) {
      throw new JournalFormatError("snapshot's base checksum is not the previous state", at, h.txid);
    }
    if (h.timestamp < this.lastTime)
      throw new JournalFormatError('snapshot timestamp goes backwards', at, h.txid);
    this.lastTime = h.timestamp;
    this.position = { txid: h.txid, checksum: h.postChecksum };
    return raw;
  }

  private peek(n: number): Uint8Array {
    const first = this.chunks[0]!;
    if (first.length >= n) return first.subarray(0, n);
    const out = this.gather(n);
    // The joined chunks replace the ones they were made of.
    this.chunks = [out, ...this.chunks.slice(this.countCovering(n))];
    return out.subarray(0, n);
  }

  private take(n: number): Uint8Array {
    const first = this.chunks[0]!;
    let out: Uint8Array;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = new Uint8Array(n);
      let filled = 0;
      while (filled < n) {
        const c = this.chunks[0]!;
        const k = Math.min(c.length, n - filled);
        out.set(c.subarray(0, k), filled);
        filled += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.buffered -= n;
    this.offset += n;
    return out;
  }

  /** Concatenates the whole chunks that cover the first `n` bytes (they are replaced by the result). */
  private gather(n: number): Uint8Array {
    const k = this.countCovering(n);
    let len = 0;
    for (let i = 0; i < k; i++) len += this.chunks[i]!.length;
    const out = new Uint8Array(len);
    let p = 0;
    for (let i = 0; i < k; i++) {
      out.set(this.chunks[i]!, p);
      p += this.chunks[i]!.length;
    }
    return out;
  }

  private countCovering(n: number): number {
    let len = 0;
    let k = 0;
    while (len < n) len += this.chunks[k++]!.length;
    return k;
  }
}
