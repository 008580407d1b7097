/** `mycelite log DB [--json]`: list the snapshots of a database's journal. */
import type { Command } from 'commander';
import { nodeRuntime } from '../node/runtime.js';
import { logDatabase } from '../restore/restore.js';
import { isoTime, jsonInteger, writeOut } from './common.js';

interface LogOptions {
  json?: boolean;
}

export function registerLog(program: Command): void {
  program
    .command('log')
    .description(
      "list a database's restorable points: its journal's snapshots, one per transaction, and its compacted history",
    )
    .argument('<DB>', 'database file whose journal (DB-mycelite/journal) to read')
    .option('--json', 'print one JSON object per snapshot and line')
    .addHelpText(
      'after',
      `
Each line is a restorable point (mycelite restore --txid, exec --at): the txid, when it was committed
(ISO-8601, UTC), the pages it wrote, the bytes it takes and the database size in pages after it. After a
compaction (mycelite compact) older points come from the compacted history: "(merged: txids A..B)" marks
a point that stands for several transactions (those before B in it are no longer restorable on their
own) and "checkpoint" a full image restores start from. "outside change" marks a change another program
made to the database (or that a damaged journal had lost), recorded when Mycelite noticed it. With
--json each line is an object with txid, timestamp, pages, bytes, dbPages, pageSize, checksum (the
database checksum after the snapshot), mergedFrom (null unless merged), checkpoint, in ("history" or
"journal") and outside.
The journal is only read; the database may be open for writing meanwhile.

Examples:
  $ mycelite log app.db
  $ mycelite log app.db --json`,
    )
    .action(async (db: string, options: LogOptions) => {
      await logCommand(db, options);
    });
}

export async function logCommand(dbPath: string, options: LogOptions): Promise<void> {
  let text = '';
  const flush = (): void => {
    if (text !== '') writeOut(text);
    text = '';
  };
  try {
    for await (const e of logDatabase(nodeRuntime.fs, dbPath)) {
      if (options.json) {
        text += `${JSON.stringify({
          txid: jsonInteger(e.txid),
          timestamp: isoTime(e.timestamp),
          pages: e.pages,
          bytes: e.bytes,
          dbPages: e.dbPages,
          pageSize: e.pageSize,
          checksum: e.checksum,
          mergedFrom: e.mergedFrom === undefined ? null : jsonInteger(e.mergedFrom),
          checkpoint: e.checkpoint,
          in: e.in,
          outside: e.outside,
        })}\n`;
      } else {
        text +=
          `txid ${e.txid}  ${isoTime(e.timestamp)}  ${plural(e.pages, 'page')} written  ` +
          `${plural(e.bytes, 'byte')}  database ${plural(e.dbPages, 'page')}` +
          `${e.mergedFrom !== undefined ? `  (merged: txids ${e.mergedFrom}..${e.txid})` : ''}` +
          `${e.checkpoint && e.in === 'history' ? '  checkpoint' : ''}` +
          `${e.outside ? '  outside change' : ''}\n`;
      }
      if (text.length > 1 << 16) flush();
    }
  } finally {
    // The snapshots before a corrupt one are still worth seeing.
    flush();
  }
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}
