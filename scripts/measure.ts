/** Shared pieces of the measuring scripts (lag.ts, scale.ts). */

/** The value at percentile `p` (0-100) of ascending `sorted`. */
export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

/** Finds the txid of each whole snapshot in a read stream (file header, snapshots, beats), unchecked. */
export class FrameScanner {
  private buf = new Uint8Array(0);
  private skip = 64; // the file header

  push(chunk: Uint8Array): bigint[] {
    const joined = new Uint8Array(this.buf.length + chunk.length);
    joined.set(this.buf);
    joined.set(chunk, this.buf.length);
    let at = 0;
    const out: bigint[] = [];
    for (;;) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, joined.length - at);
        at += n;
        this.skip -= n;
        if (this.skip > 0) break;
      }
      if (joined.length - at < 16) break;
      const v = new DataView(joined.buffer, joined.byteOffset + at, 16);
      if (v.getUint32(0, true) === 0x54414542) {
        this.skip = 8; // a beat
        continue;
      }
      out.push(v.getBigUint64(8, true));
      this.skip = v.getUint32(4, true);
    }
    this.buf = joined.slice(at);
    return out;
  }
}
