/** `mycelite restore DB --output FILE [--txid N | --at ISO-8601] [--force]`: rebuild a database from its journal. */
import * as path from 'node:path';
import { type Command, Option } from 'commander';
import { HubUnreachableError } from '../client/hub-client.js';
import { journalPaths } from '../journal/paths.js';
import { nodeRuntime } from '../node/runtime.js';
import type { Target } from '../restore/replay.js';
import { logDatabase, restoreDatabase } from '../restore/restore.js';
import {
  asUsage,
  isoTime,
  parseIsoTime,
  parseTxid,
  progressLine,
  requireParentDirectory,
  unreachableHub,
  writeOut,
} from './common.js';
import { restoreFromHub } from './hub-restore.js';
import { describeRevert, revertCommand } from './revert.js';

interface RestoreOptions {
  output: string;
  hub?: string;
  db?: string;
  token?: string;
  txid?: bigint;
  at?: number;
  force?: boolean;
}

export function registerRestore(program: Command): void {
  program
    .command('restore')
    .description('rebuild a database from its journal, as of the latest snapshot or an earlier one')
    .argument('[DB]', 'database file whose journal (DB-mycelite/journal) to replay (or --hub and --db)')
    .requiredOption('-o, --output <FILE>', 'file to write the restored database to')
    .addOption(
      new Option('--txid <N>', 'restore the state right after snapshot N (see mycelite log)')
        .argParser(asUsage(parseTxid))
        .conflicts('at'),
    )
    .addOption(
      new Option('--at <ISO-8601>', 'restore the last snapshot committed at or before this time').argParser(
        asUsage(parseIsoTime),
      ),
    )
    .option('-f, --force', 'replace FILE if it exists')
    .option('--hub <URL>', "instead of DB: restore from this hub's history (no local copy needed)")
    .option('--db <NAME>', 'with --hub: the database name on the hub')
    .option('--token <TOKEN>', 'with --hub: a reader token for NAME (default: $MYCELITE_TOKEN)')
    .addHelpText(
      'after',
      `
The journal is replayed into a temporary file beside FILE, checked against the snapshot's checksum, then
renamed to FILE: a failed restore leaves nothing behind. The journal is only read. On a terminal, a
progress line shows the snapshots applied.
A time without a zone (2025-03-01T12:30) is local time, and a date alone (2025-03-01) local midnight; add
Z or +02:00 to be exact.

Examples:
  $ mycelite restore app.db --output copy.db
  $ mycelite restore app.db --output then.db --txid 2
  $ mycelite restore app.db --output then.db --at 2025-03-01T12:30:00Z
  $ MYCELITE_TOKEN="$RT" mycelite restore --hub http://127.0.0.1:8080 --db app --txid 41 --output then.db`,
    )
    .action(async (db: string | undefined, options: RestoreOptions, cmd: Command) => {
      if (options.hub !== undefined || options.db !== undefined) {
        if (db !== undefined)
          cmd.error('restore: give either DB or --hub and --db, not both', { exitCode: 2 });
        if (options.hub === undefined || options.db === undefined) {
          cmd.error('restore: --hub and --db go together', { exitCode: 2 });
        }
        await hubRestoreCommand(options);
        return;
      }
      if (db === undefined) cmd.error('restore needs DB, or --hub URL --db NAME', { exitCode: 2 });
      await restoreCommand(db!, options);
    });
}

async function hubRestoreCommand(options: RestoreOptions): Promise<void> {
  requireParentDirectory(options.output);
  const token = options.token ?? process.env['MYCELITE_TOKEN'];
  if (!token) {
    throw new Error(
      `no token: pass --token or set MYCELITE_TOKEN (a reader token: mycelite token --db ${options.db} --role reader)`,
    );
  }
  const s = await restoreFromHub({ url: options.hub!, db: options.db!, token }, options.output, {
    target: targetOf(options),
    force: options.force === true,
  }).catch((e: unknown) => {
    throw e instanceof HubUnreachableError ? new Error(unreachableHub(options.hub!, e.message)) : e;
  });
  if (s === undefined) {
    writeOut(`restored an empty database (the hub holds no snapshots) to ${options.output}\n`);
  } else {
    writeOut(
      `restored txid ${s.txid} (${isoTime(s.timestamp)}) from ${options.db} on ${options.hub} to ${options.output} (${s.dbPages} page${s.dbPages === 1 ? '' : 's'})\n`,
    );
  }
}

function targetOf(options: RestoreOptions): Target {
  return options.txid !== undefined
    ? { txid: options.txid }
    : options.at !== undefined
      ? { at: options.at }
      : 'latest';
}

export async function restoreCommand(dbPath: string, options: RestoreOptions): Promise<void> {
  const output = options.output;
  requireParentDirectory(output);
  const target: Target =
    options.txid !== undefined
      ? { txid: options.txid }
      : options.at !== undefined
        ? { at: options.at }
        : 'latest';
  // Restoring over the database itself is a revert (a new snapshot; the history is kept), unless the
  // database is lost: then it is rebuilt from its journal.
  const overItself = path.resolve(output) === path.resolve(dbPath);
  if (overItself && nodeRuntime.fs.fileSize(path.resolve(dbPath)) > 0) {
    if (!options.force) {
      throw new Error(`${output} exists: choose another --output or pass --force to replace it`);
    }
    const at =
      target === 'latest' ? await lastTxid(dbPath) : 'txid' in target ? target.txid : new Date(target.at);
    const result = await revertCommand(dbPath, at);
    writeOut(
      `${describeRevert(dbPath, result)}: restoring over the database itself is \`mycelite revert\`\n`,
    );
    return;
  }
  // Restoring over the database itself: make sure no writer has it open meanwhile.
  let lock: { release(): void } | undefined;
  if (overItself) {
    const lockPath = journalPaths(path.resolve(dbPath)).lock;
    lock = nodeRuntime.fs.exists(lockPath) ? nodeRuntime.fs.tryLockExclusive?.(lockPath) : undefined;
    if (nodeRuntime.fs.exists(lockPath) && lock === undefined) {
      throw new Error(`${dbPath} is open for writing by another process; close it before restoring over it`);
    }
  }
  try {
    const progress = progressLine('restoring: snapshots applied');
    let s: Awaited<ReturnType<typeof restoreDatabase>>;
    try {
      s = await restoreDatabase(nodeRuntime.fs, dbPath, output, {
        target,
        force: options.force === true,
        onProgress: progress.update,
      });
    } finally {
      progress.end();
    }
    if (s === undefined) {
      writeOut(`restored an empty database (the journal holds no snapshots) to ${output}\n`);
    } else {
      writeOut(
        `restored txid ${s.txid} (${isoTime(s.timestamp)}) to ${output} (${s.dbPages} page${s.dbPages === 1 ? '' : 's'})\n`,
      );
    }
  } finally {
    lock?.release();
  }
}

/** The txid of the last snapshot of `dbPath`'s history (read before a writer may add one). */
async function lastTxid(dbPath: string): Promise<bigint> {
  let last = 0n;
  for await (const e of logDatabase(nodeRuntime.fs, dbPath)) last = e.txid;
  return last;
}
