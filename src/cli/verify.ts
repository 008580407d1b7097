/** `mycelite verify DB [--json]`: check a journal and that its replay equals the database. */
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { nodeRuntime } from '../node/runtime.js';
import { verifyDatabase } from '../restore/restore.js';
import { WalFile, walIndexEnd } from '../sidecar/wal-file.js';
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
    const pending = walFrames(dbPath);
    if (pending > 0) {
      // A WAL database (mycelite replicate): the file alone is not the database while its WAL holds frames.
      throw new Error(
        `${dbPath} is in WAL mode and ${dbPath}-wal holds ${pending} frames not yet in the file: verify compares the file, so checkpoint first (PRAGMA wal_checkpoint(TRUNCATE) in the application) or stop it`,
      );
    }
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

/** Frames in `DB-wal` of a WAL-format database (0 for other databases, or an empty or missing WAL). */
function walFrames(dbPath: string): number {
  const head = Buffer.alloc(100);
  try {
    const fd = fs.openSync(dbPath, 'r');
    try {
      fs.readSync(fd, head, 0, 100, 0);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return 0;
  }
  if (head[18] !== 2) return 0;
  const wal = new WalFile(`${dbPath}-wal`);
  try {
    const h = wal.header();
    if (!h) return 0;
    let frames = 0;
    for (const t of wal.transactions(h, 0, [h.ck0, h.ck1], 2 ** 31)) frames = t.commitFrame;
    // Frames a checkpoint already copied into the file (the wal-index's nBackfill) do not count.
    let fd: number | undefined;
    try {
      fd = fs.openSync(`${dbPath}-shm`, 'r');
      const end = walIndexEnd(fd, h);
      const info = Buffer.alloc(4);
      fs.readSync(fd, info, 0, 4, 96);
      if (end !== undefined) return Math.max(0, end - info.readUInt32LE(0));
    } catch {
      // no wal-index: every frame counts
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
    return frames;
  } finally {
    wal.close();
  }
}
