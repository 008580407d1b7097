/** Errors of the journal format layer. */

/**
 * A journal (or snapshot) does not match format v1: bad magic, bad version, a checksum that does not
 * match, a body that does not parse. `offset` is the byte offset in the journal where the problem was
 * found, `txid` the snapshot expected there (when known).
 */
export class JournalFormatError extends Error {
  readonly offset: number;
  readonly txid: bigint | undefined;
  constructor(message: string, offset: number, txid?: bigint, options?: { cause?: unknown }) {
    const where = txid === undefined ? `at byte ${offset}` : `at byte ${offset} (snapshot ${txid})`;
    super(`${message} ${where}`, options);
    this.name = 'JournalFormatError';
    this.offset = offset;
    this.txid = txid;
  }
}

/** A database (or a snapshot's base) is not at the position a snapshot expects. */
export class PositionMismatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PositionMismatchError';
  }
}
