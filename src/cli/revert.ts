/** `mycelite revert DB (--txid N | --at ISO-8601)`: take a database back to an earlier point as a new snapshot. */
import { type Command, Option } from 'commander';
import { open } from '../node/index.js';
import type { ViewTarget } from '../timetravel/page-index.js';
import type { RevertResult } from '../writer/open.js';
import { asUsage, isoTime, parseIsoTime, parseTxid, requireParentDirectory, writeOut } from './common.js';

interface RevertOptions {
  txid?: bigint;
  at?: number;
}

export function registerRevert(program: Command): void {
  program
    .command('revert')
    .description('take a database back to an earlier point of its history, as a new snapshot')
    .argument('<DB>', 'database file, opened for writing (no other writer may have it open)')
    .addOption(
      new Option('--txid <N>', 'go back to the state right after snapshot N (see mycelite log)')
        .argParser(asUsage(parseTxid))
        .conflicts('at'),
    )
    .addOption(
      new Option(
        '--at <ISO-8601>',
        'go back to the last snapshot committed at or before this time',
      ).argParser(asUsage(parseIsoTime)),
    )
    .addHelpText(
      'after',
      `
The database's content becomes what it was at that point, byte for byte, written as ONE new snapshot:
nothing is removed from the history (the transactions after the point stay restorable), the hub and
replicas receive the revert like any transaction (push it with mycelite push), and it can itself be
reverted. \`mycelite restore DB --output DB --force\` does the same.

Examples:
  $ mycelite revert app.db --txid 2
  $ mycelite revert app.db --at 2025-03-01T12:30:00Z`,
    )
    .action(async (db: string, options: RevertOptions, cmd: Command) => {
      if (options.txid === undefined && options.at === undefined) {
        cmd.error('revert needs --txid N or --at ISO-8601 (mycelite log lists the points)', { exitCode: 2 });
      }
      const result = await revertCommand(db, options.txid ?? new Date(options.at!));
      writeOut(`${describeRevert(db, result)}\n`);
    });
}

/** Reverts `dbPath` to `at` through a writer connection (recovering it first, as open() does). */
export async function revertCommand(dbPath: string, at: ViewTarget): Promise<RevertResult> {
  requireParentDirectory(dbPath);
  const db = await open(dbPath);
  try {
    return db.revert(at);
  } finally {
    db.close();
  }
}

/** One line saying what a revert did. */
export function describeRevert(db: string, r: RevertResult): string {
  const point = `txid ${r.target.txid} (${isoTime(r.target.timestamp)})`;
  return r.snapshot
    ? `reverted ${db} to ${point} as snapshot ${r.snapshot.txid} (the history after it is kept)`
    : `${db} already is at the state of ${point}: nothing to do`;
}
