/**
 * `mycelite sync DB --hub URL --db NAME --shared [--token T] [--watch]`: sync a device of a shared
 * database with its hub (docs/ARCHITECTURE.md, "Shared databases").
 */
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { HubClient } from '../client/hub-client.js';
import { checkHubOptions } from '../client/writer-start.js';
import { journalPaths } from '../journal/paths.js';
import { asFound } from '../node/as-found.js';
import { open } from '../node/index.js';
import { CliExit, jsonInteger, requireParentDirectory, UsageError, writeErr, writeOut } from './common.js';

interface SyncOptions {
  hub: string;
  db: string;
  token?: string;
  shared?: boolean;
  watch?: boolean;
  timeout: string;
  json?: boolean;
}

export function registerSync(program: Command): void {
  program
    .command('sync')
    .description(
      "merge a device of a shared database with its hub: bring in everyone's changes, upload its own",
    )
    .argument('<DB>', "the device's database file (created if missing: a new device)")
    .requiredOption('--hub <URL>', 'hub base URL, e.g. http://127.0.0.1:8080')
    .requiredOption('--db <NAME>', 'database name on the hub')
    .option('--token <TOKEN>', 'a writer token for NAME (default: $MYCELITE_TOKEN)')
    .option('--shared', 'the database is shared by many devices (required: it is what sync is for)')
    .option('--watch', "keep running: merge every local change and take in others' as they come")
    .option('--timeout <SECONDS>', 'without --watch: give up when not merged by then', '60')
    .option('--json', 'print one JSON object per event')
    .addHelpText(
      'after',
      `
Every device of a shared database commits locally at once, online or not (mycelite exec DB SQL, or
open(path, { shared: true }) in an app). sync brings the device together with the hub: it takes the
hub's history in, applies the device's pending changes on top of it (each local transaction as one
transaction), uploads them, and prints what was merged, what lost a conflict and what was rejected.
It exits 0 when the device holds the hub's head with nothing pending. A new device starts with the same
command on a path that does not exist yet. If the hub has no such database, sync creates it from this
device.

Conflicts: the change that reaches the hub later wins per row (an update of a row another device
deleted is dropped); a local transaction that breaks a constraint on the hub's state (UNIQUE, CHECK,
FOREIGN KEY, or an INTEGER PRIMARY KEY another device took) is rejected as a whole. Each is printed.

Examples:
  $ mycelite sync budget.db --hub http://127.0.0.1:8080 --db budget --shared --token "$WT"
  $ MYCELITE_TOKEN="$WT" mycelite sync budget.db --hub http://127.0.0.1:8080 --db budget --shared --watch`,
    )
    .action(async (db: string, options: SyncOptions, cmd: Command) => {
      if (!options.shared) {
        cmd.error(
          'sync needs --shared: it merges devices of a shared database (a single writer uses mycelite push)',
          { exitCode: 2 },
        );
      }
      await syncCommand(db, options);
    });
}

/** The command; when it fails, a replica or database it created is removed (left as it was found). */
export function syncCommand(dbPath: string, options: SyncOptions): Promise<void> {
  return asFound(dbPath, () => syncRun(dbPath, options));
}

async function syncRun(dbPath: string, options: SyncOptions): Promise<void> {
  requireParentDirectory(dbPath);
  const token = options.token ?? process.env['MYCELITE_TOKEN'];
  if (!token) {
    throw new UsageError(
      `no token: pass --token or set MYCELITE_TOKEN (a writer token: mycelite token --db ${options.db} --role writer)`,
    );
  }
  const hub = { url: options.hub, db: options.db, token };
  const bad = checkHubOptions(hub);
  if (bad) throw new UsageError(bad);
  const seconds = Number(options.timeout);
  if (!Number.isFinite(seconds) || seconds <= 0)
    throw new UsageError(`--timeout ${options.timeout}: give a number of seconds`);
  await refuseSingleWriterHub(dbPath, hub, options.db);
  const db = await open(dbPath, { shared: true, hub });
  const say = (text: string, json: Record<string, unknown>): void => {
    if (options.json) writeOut(`${JSON.stringify(json)}\n`);
    else writeOut(`${text}\n`);
  };
  const sync = db.sync!;
  let pushed = 0;
  let received = 0;
  sync.on('pushed', (e) => {
    pushed += e.count;
    if (options.watch)
      say(`merged ${plural(e.count, 'local change')}: the hub is at txid ${e.hubTxid}`, {
        event: 'pushed',
        count: e.count,
        hubTxid: jsonInteger(e.hubTxid),
      });
  });
  sync.on('received', (e) => {
    received += e.count;
    if (options.watch)
      say(`took in ${plural(e.count, 'snapshot')} from the hub: at txid ${e.hubTxid}`, {
        event: 'received',
        count: e.count,
        hubTxid: jsonInteger(e.hubTxid),
      });
  });
  sync.on('conflict', (e) => {
    const c = e.conflict;
    const what =
      e.choice === 'hub'
        ? "dropped (the hub's row stays)"
        : e.choice === 'local'
          ? "applied over another device's change"
          : 'rejected';
    say(
      `conflict: local change ${e.seq} (${c.op} in ${c.table}, key ${JSON.stringify(c.key, jsonReplacer)}): ${c.kind}, ${what}`,
      {
        event: 'conflict',
        seq: jsonInteger(e.seq),
        kind: c.kind,
        table: c.table,
        op: c.op,
        choice: e.choice,
      },
    );
  });
  sync.on('rejected', (e) => {
    say(`rejected: local change ${e.seq}: ${e.reason}`, {
      event: 'rejected',
      seq: jsonInteger(e.seq),
      reason: e.reason,
    });
  });
  try {
    if (options.watch) {
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      return;
    }
    const timeout = new Promise<never>((_, reject) =>
      setTimeout(
        () =>
          reject(
            new Error(
              `not merged after ${seconds} s (${sync.status().lastError ?? sync.status().state}): run it again when the hub can be reached`,
            ),
          ),
        seconds * 1000,
      ).unref(),
    );
    await Promise.race([(sync as unknown as { whenIdle(): Promise<void> }).whenIdle(), timeout]);
    const s = sync.status();
    say(
      `synced ${dbPath} with ${options.db} on ${options.hub}: merged ${plural(pushed, 'local change')}, took in ${plural(received, 'snapshot')} from the hub; at txid ${s.hubTxid}`,
      { event: 'synced', pushed, received, hubTxid: jsonInteger(s.hubTxid ?? 0n) },
    );
  } catch (e) {
    writeErr(`mycelite: ${(e as Error).message}\n`);
    throw new CliExit(1);
  } finally {
    await sync.close();
    db.close();
  }
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function jsonReplacer(_k: string, v: unknown): unknown {
  return typeof v === 'bigint' ? v.toString() : v;
}

/**
 * A database that is not a shared device yet becomes one at open, for good; not when the hub holds this
 * name as a single writer's database, where the device could never push (one mistaken `sync` left it
 * unable to push anywhere). Asked only when the hub answers; offline, the sync says so once it does.
 */
async function refuseSingleWriterHub(
  dbPath: string,
  hub: { url: string; db: string; token: string },
  name: string,
): Promise<void> {
  if (!fs.existsSync(dbPath) || fs.existsSync(journalPaths(dbPath).shared)) return;
  const state = await new HubClient(hub).state().catch(() => undefined);
  if (state?.mode !== 'single') return;
  throw new Error(
    `${name} on ${hub.url} is a single-writer database: a shared device cannot write to it, so ${dbPath} was not made one (nothing changed). Push it with mycelite push, or sync under another --db name`,
  );
}
