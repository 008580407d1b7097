/** `mycelite compact DB [--retain POLICY] [--dry-run]`: keep only the history a retention policy names. */
import { type Command, Option } from 'commander';
import {
  DEFAULT_RETENTION,
  describeRetention,
  parseRetention,
  type RetentionPolicy,
} from '../history/policy.js';
import { nodeRuntime } from '../node/runtime.js';
import { compactDatabase } from '../restore/compact-database.js';
import { asUsage, jsonInteger, parseIsoTime, progressLine, writeOut } from './common.js';

interface CompactOptions {
  retain: RetentionPolicy;
  checkpointRatio?: number;
  dryRun?: boolean;
  json?: boolean;
  now?: number;
}

function parseRatio(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`"${value}" is not a positive number (e.g. 0.5)`);
  return n;
}

export function registerCompact(program: Command): void {
  program
    .command('compact')
    .description(
      "compact a database's history: keep the points in time a retention policy names, with checkpoints",
    )
    .argument('<DB>', 'database file whose history (DB-mycelite/journal and DB-mycelite/history) to compact')
    .addOption(
      new Option('--retain <POLICY>', 'which points in time to keep: AGE:EVERY tiers, youngest first')
        .default(parseRetention(DEFAULT_RETENTION), DEFAULT_RETENTION)
        .argParser(asUsage(parseRetention)),
    )
    .addOption(
      new Option(
        '--checkpoint-ratio <R>',
        'write a checkpoint (full image) whenever the history since the last one passes R × the database size',
      )
        .default(0.5)
        .argParser(asUsage(parseRatio)),
    )
    .option('-n, --dry-run', 'say what would be kept and dropped; change nothing')
    .option('--json', 'print the result as one JSON object')
    .addOption(
      new Option('--now <ISO-8601>', 'measure ages from this time instead of now')
        .argParser(asUsage(parseIsoTime))
        .hideHelp(),
    )
    .addHelpText(
      'after',
      `
POLICY is a list of tiers AGE:EVERY, youngest first: points younger than AGE keep one point per EVERY
(the last transaction of each interval), or every transaction with "all"; points older than the last
tier are dropped ("forever" keeps the last tier for ever). Durations: 90s, 15m, 24h, 30d, 2w, 1y.
The default, ${DEFAULT_RETENTION}, keeps ${describeRetention(parseRetention(DEFAULT_RETENTION))}.

What compaction does: transactions between two kept points are merged into one snapshot (the newest
version of each page wins); history before the oldest kept point becomes one full image; checkpoints
(full images) are written so that a restore or a time-travel view never replays more than about
R × the database size. The live journal keeps the latest transaction. Everything is written to
temporary files, fsynced and renamed into place: a crash at any point leaves the old or the new history,
both complete. Restoring a point that was merged away fails with the nearest points that remain.

The database may be open for writing meanwhile: then only the history file is rewritten, and the writer
trims its journal at its own next compaction (writers compact automatically once their journal passes
64 MiB; see the history option of open()). Replicas are compacted by their hub (mycelite serve --retain).

Examples:
  $ mycelite compact app.db --dry-run
  $ mycelite compact app.db --retain 24h:all,30d:1h,forever:1d
  $ mycelite compact app.db --retain 7d:all,90d:1d      # nothing older than 90 days
  $ mycelite log app.db                                  # the points that remain`,
    )
    .action(async (db: string, options: CompactOptions) => {
      await compactCommand(db, options);
    });
}

export async function compactCommand(dbPath: string, options: CompactOptions): Promise<void> {
  const progress = progressLine('compacting: snapshots merged', options.json === true);
  let r: Awaited<ReturnType<typeof compactDatabase>>;
  try {
    r = await compactDatabase(nodeRuntime.fs, dbPath, {
      policy: options.retain,
      checkpointRatio: options.checkpointRatio,
      dryRun: options.dryRun === true,
      now: options.now,
      onProgress: progress.update,
    });
  } finally {
    progress.end();
  }
  if (options.json) {
    writeOut(
      `${JSON.stringify({
        dryRun: options.dryRun === true,
        changed: !r.unchanged,
        pointsBefore: r.pointsBefore,
        pointsAfter: r.pointsAfter,
        pointsDropped: r.pointsDropped,
        oldestPoint: r.first === undefined ? null : jsonInteger(r.first),
        historyUpTo: r.upTo === undefined ? null : jsonInteger(r.upTo),
        checkpoints: r.checkpoints,
        bytesBefore: r.bytesBefore,
        bytesAfter: options.dryRun || (r.unchanged && !r.journalRewritten) ? null : r.bytesAfter,
        journalRewritten: r.journalRewritten,
      })}\n`,
    );
    return;
  }
  if (r.unchanged) {
    if (r.journalRewritten) {
      writeOut(
        `finished an interrupted compaction: the journal now starts after the history (${mib(r.bytesBefore)} → ${mib(r.bytesAfter)})\n`,
      );
      return;
    }
    writeOut(`nothing to compact: ${r.pointsBefore} restorable points, all kept by the policy\n`);
    return;
  }
  const points = `${r.pointsBefore} restorable points → ${r.pointsAfter} (${r.pointsDropped} merged or dropped)`;
  if (options.dryRun) {
    writeOut(`would compact: ${points}; oldest point would be txid ${r.first}; nothing was changed\n`);
    return;
  }
  writeOut(
    `compacted: ${points}; oldest point txid ${r.first}; ${r.checkpoints} checkpoint${r.checkpoints === 1 ? '' : 's'}; ` +
      `${mib(r.bytesBefore)} → ${mib(r.bytesAfter)}\n`,
  );
  if (!r.journalRewritten) {
    writeOut('the database is open for writing: its writer trims the journal at its next compaction\n');
  }
}

function mib(n: number): string {
  return n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`;
}
