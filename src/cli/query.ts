/**
 * `mycelite query DB SQL [--json] [--at WHEN]`: read-only SQL on any SQLite file — a plain or restored
 * file, a replica while it follows, a writer's database while the writer runs — printed as `exec` prints.
 * Nothing is created or written.
 */
import * as fs from 'node:fs';
import type { Command } from 'commander';
import type { Database } from '../engine/database.js';
import { openAt, openReadonly } from '../node/index.js';
import { parseAt, runAndPrint } from './exec.js';

interface QueryOptions {
  json?: boolean;
  at?: string;
}

export function registerQuery(program: Command): void {
  program
    .command('query')
    .description(
      "run read-only SQL on any SQLite file (a replica, a running writer's database) and print the rows",
    )
    .argument('<DB>', 'an SQLite database file (it must exist; nothing is created)')
    .argument('<SQL>', 'one or more SQL statements separated by ";"; writing is refused')
    .option('--json', 'print one JSON object per row and line instead of a tab-separated table')
    .option('--at <WHEN>', 'query the database as of a txid (digits) or an ISO-8601 time, from its journal')
    .addHelpText(
      'after',
      `
Opens DB read-only through Mycelite's file layer (SQLite's locks, so it reads whole transactions while a
writer or a replica's follower changes the file) and prints the last statement's rows as exec does. A
statement that writes fails with "attempt to write a readonly database". Without --at, DB needs no
journal: any SQLite file in rollback-journal mode works (WAL is refused).

Examples:
  $ mycelite query replica.db "select count(*) from t"
  $ mycelite query app.db "select * from t" --json
  $ mycelite query app.db --at 2026-11-27T09:00:00Z "select count(*) from t"`,
    )
    .action(async (db: string, sql: string, options: QueryOptions) => {
      await queryCommand(db, sql, options);
    });
}

export async function queryCommand(dbPath: string, sql: string, options: QueryOptions): Promise<void> {
  const at = options.at === undefined ? undefined : parseAt(options.at);
  if (!fs.existsSync(dbPath) && at === undefined) throw new Error(`${dbPath} does not exist`);
  const db: Database = at === undefined ? await openReadonly(dbPath) : await openAt(dbPath, at);
  try {
    runAndPrint(db, sql, options);
  } finally {
    db.close();
  }
}
