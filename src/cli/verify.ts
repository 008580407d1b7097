/** `mycelite verify DB [--json]`: check a journal and that its replay equals the database. */
import type { Command } from 'commander';
import { nodeRuntime } from '../node/index.js';
import { verifyDatabase } from '../restore/restore.js';
import { CliExit, describeError, journalErrorLocation, jsonInteger, writeErr, writeOut } from './common.js';

interface VerifyOptions {
  json?: boolean;
}

export function registerVerify(program: Command): void {
  program
    .command('verify')
    .description(
      'check every snapshot of the journal and that replaying it gives the database, byte for byte',
    )
    .argument('<DB>', 'database file to check against its journal (DB-mycelite/journal)')
    .option('--json', 'print the result as one JSON object')
    .addHelpText(
      'after',
      `
Prints "ok: N snapshots, last txid T" and exits 0, or names the problem (for a damaged journal, the byte
offset and the txid expected there) and exits 1. After a crash the database file may lag a whole journal
until the next open for writing redoes the last commits: that is not damage; verify checks that the redo
gives the journal's state and says "recovery pending" (exit 0). With --json: {"ok":true,"snapshots":N,
"lastTxid":T,"tornBytes":B[,"pending":"..."]} or {"ok":false,"problem":"...","offset":O,"txid":T}
(offset and txid when the journal itself is damaged). Nothing is written.

Examples:
  $ mycelite verify app.db
  $ mycelite verify app.db --json`,
    )
    .action(async (db: string, options: VerifyOptions) => {
      await verifyCommand(db, options);
    });
}

export async function verifyCommand(dbPath: string, options: VerifyOptions): Promise<void> {
  let result: Awaited<ReturnType<typeof verifyDatabase>> | undefined;
  let problem: string | undefined;
  let where: ReturnType<typeof journalErrorLocation>;
  try {
    result = await verifyDatabase(nodeRuntime.fs, dbPath, nodeRuntime.tempPath());
    problem = result.ok ? undefined : (result.problem ?? 'the database does not match its journal');
    if (result.offset !== undefined) where = { offset: result.offset, txid: result.txid?.toString() };
  } catch (e) {
    problem = describeError(e);
    where = journalErrorLocation(e);
  }
  if (options.json) {
    const obj =
      problem === undefined && result
        ? {
            ok: true,
            snapshots: result.snapshots,
            lastTxid: jsonInteger(result.lastTxid),
            tornBytes: result.tornBytes,
            ...(result.pending ? { pending: result.pending } : {}),
          }
        : {
            ok: false,
            problem,
            ...(result ? { snapshots: result.snapshots, lastTxid: jsonInteger(result.lastTxid) } : {}),
            ...(where
              ? {
                  offset: where.offset,
                  txid: where.txid === undefined ? undefined : jsonInteger(BigInt(where.txid)),
                }
              : {}),
          };
    writeOut(`${JSON.stringify(obj)}\n`);
  } else if (problem === undefined && result) {
    const torn = result.tornBytes > 0 ? ` (${result.tornBytes} bytes of torn tail ignored)` : '';
    const pending = result.pending ? `; ${result.pending}` : '';
    writeOut(`ok: ${result.snapshots} snapshots, last txid ${result.lastTxid}${torn}${pending}\n`);
  } else {
    writeErr(`mycelite: verify failed: ${problem}\n`);
  }
  if (problem !== undefined) throw new CliExit(1);
}
