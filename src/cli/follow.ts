/**
 * `mycelite follow URL REPLICA_DB --db NAME [--token T] [--once] [--reset]`: keep a replica of a hub
 * database. --once catches up to the hub's head and exits; otherwise it follows live until Ctrl-C.
 * --reset adopts the hub's history when it is another one than the replica's.
 */

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { HubUnreachableError } from '../client/hub-client.js';
import { toHex } from '../format/index.js';
import { journalPaths } from '../journal/paths.js';
import { asFound } from '../node/as-found.js';
import { nodeRuntime } from '../node/runtime.js';
import { checkDbName, HubError } from '../protocol/index.js';
import { Follower, OtherHistoryError, type ReplicaStatus } from '../replica/follower.js';
import { type ReplicaReset, ReplicaStore } from '../replica/replica.js';
import { hubUrlsOf, UsageError, unreachableHub, writeErr, writeOut } from './common.js';

interface FollowCliOptions {
  db: string;
  token?: string;
  once?: boolean;
  reset?: boolean;
}

export function registerFollow(program: Command): void {
  program
    .command('follow')
    .description('keep a read-only replica of a hub database, applying each snapshot as it arrives')
    .argument(
      '<URL>',
      'hub base URL, e.g. http://127.0.0.1:8080; several hubs of one cluster separated by commas (the next is used when one fails)',
    )
    .argument(
      '<REPLICA_DB>',
      'the replica database file (created if missing; its journal is REPLICA_DB-mycelite/)',
    )
    .requiredOption('--db <NAME>', 'database name on the hub')
    .option('--token <TOKEN>', 'a reader (or writer) token for NAME (default: $MYCELITE_TOKEN)')
    .option('--once', "catch up to the hub's head, print the txid reached and exit")
    .option(
      '--reset',
      "follow the hub even if it now holds another history than the replica's (its database was replaced): " +
        'start from its image, keeping the old database and journal as REPLICA_DB.replaced-…',
    )
    .addHelpText(
      'after',
      `
A new replica starts from the hub's full image; an existing one continues from its own position. Each
snapshot is checked (its checksum, and the database checksum before and after) and applied in one SQLite
transaction: other processes can read REPLICA_DB with SQLite at any time and see whole snapshots only.
Without --once it prints one line per applied batch (txid and lag behind the writer's commit),
reconnects after network drops, and stops cleanly on Ctrl-C. Restarting it resumes where it stopped.

A replica follows one history (the journal id it started with). When its position is no longer on the
hub (the hub compacted it away, or was restored from an older copy), it starts again from the hub's
image and keeps its old journal in REPLICA_DB.replaced-…-mycelite/. A hub whose database is another
history is refused, leaving the replica as it is, unless --reset is given.

Examples:
  $ mycelite follow http://127.0.0.1:8080 replica.db --db app --token "$RT" --once
  $ MYCELITE_TOKEN="$RT" mycelite follow http://127.0.0.1:8080 replica.db --db app`,
    )
    .action(async (url: string, replica: string, options: FollowCliOptions) => {
      await followCommand(url, replica, options);
    });
}

/** The command; when it fails, a replica or database it created is removed (left as it was found). */
export function followCommand(hub: string, replica: string, options: FollowCliOptions): Promise<void> {
  return asFound(replica, () => followRun(hub, replica, options));
}

async function followRun(hub: string, replica: string, options: FollowCliOptions): Promise<void> {
  const urls = hubUrlsOf(hub);
  const url = urls.join(',');
  const token = options.token ?? process.env['MYCELITE_TOKEN'];
  if (!token) {
    throw new UsageError(
      `no token: pass --token or set MYCELITE_TOKEN (a reader token: mycelite token --db ${options.db} --role reader)`,
    );
  }
  const bad = checkDbName(options.db);
  if (bad) throw new UsageError(bad);
  // A replica this command creates and never gives a snapshot (a hub that refuses, a failed --once) is
  // removed again: nothing is left behind.
  const file = path.resolve(replica);
  const paths = journalPaths(file);
  const created = !fs.existsSync(file) && !fs.existsSync(paths.dir);
  const store = await ReplicaStore.open(nodeRuntime, replica);
  const follower = new Follower(store, { hub: { url: urls, db: options.db, token }, reset: options.reset });
  follower.events.on('reset', (r) => writeErr(`mycelite: ${describeReset(r)}\n`));
  const where = { url, db: options.db, replica };
  try {
    if (options.once) {
      const txid = await follower.catchUp().catch((e: unknown) => {
        throw explain(e, where);
      });
      writeOut(`caught up: ${replica} is at txid ${txid}\n`);
      return;
    }
    await followLive(follower, where);
  } finally {
    await follower.close();
    const empty = store.position === undefined;
    store.close();
    if (created && empty) {
      fs.rmSync(paths.dir, { recursive: true, force: true });
      fs.rmSync(file, { force: true });
    }
  }
}

/** Follows until SIGINT/SIGTERM (resolves) or an error waiting cannot fix (rejects). */
async function followLive(follower: Follower, where: Where): Promise<void> {
  const { url, db } = where;
  let batch = 0;
  let last: { txid: bigint; lagMs: number } | undefined;
  let flushing = false;
  follower.events.on('snapshot', (s) => {
    batch++;
    last = { txid: s.txid, lagMs: s.lagMs };
    if (flushing) return;
    flushing = true;
    setImmediate(() => {
      flushing = false;
      if (!last) return;
      const more = batch > 1 ? ` (${batch} snapshots)` : '';
      writeOut(`txid ${last.txid}  lag ${last.lagMs} ms${more}\n`);
      batch = 0;
    });
  });
  follower.events.on('status', (s) => describeStatus(s, url, db));
  const stopped = new Promise<void>((resolve, reject) => {
    const onSignal = (): void => resolve();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    follower.events.on('status', (s) => {
      if (s.state === 'error') reject(explain(follower.failure ?? new Error(s.lastError), where));
    });
  });
  follower.start();
  await stopped;
}

function describeStatus(s: ReplicaStatus, url: string, db: string): void {
  if (s.state === 'live') writeErr(`mycelite: live at txid ${s.txid}\n`);
  else if (s.state === 'offline')
    writeErr(`mycelite: offline (${s.lastError ?? 'no connection'}); retrying\n`);
  else if (s.state === 'storage-unavailable')
    writeErr(`mycelite: storage unavailable (${s.lastError ?? ''}); retrying\n`);
  else if (s.state === 'connecting' && s.lastError && /no database|not_found|not found/i.test(s.lastError)) {
    writeErr(`mycelite: ${url} has no database ${db} yet; waiting for a writer to push it\n`);
  }
}

/** One line on what a reset did, and where the old history is kept. */
function describeReset(r: ReplicaReset): string {
  const to = `txid ${r.to.txid}`;
  if (!r.from) return `new replica: started from the hub's image at ${to}`;
  const kept = r.keptAt ? `${r.keptAt}-mycelite/journal` : 'nowhere';
  if (r.otherHistory) {
    return (
      `the hub holds another history than the replica's (which was at txid ${r.from.txid}); as asked ` +
      `(--reset), started from the hub's image at ${to}. The previous database is kept as ${r.keptAt}, its journal as ${kept}`
    );
  }
  return (
    `the replica's history (at txid ${r.from.txid}) is no longer on the hub: started again from the ` +
    `hub's image at ${to}; the previous journal is kept as ${kept}`
  );
}

interface Where {
  url: string;
  db: string;
  replica: string;
}

/** An error that says what to do. */
function explain(e: unknown, { url, db, replica }: Where): Error {
  if (e instanceof OtherHistoryError) {
    return new Error(
      `the hub at ${url} holds another history of ${db} than ${replica} follows (the hub's database was ` +
        `replaced or recreated: journal ${toHex(e.hub.journalId).slice(0, 8)}… at txid ${e.hub.txid}, the ` +
        `replica's ${toHex(e.replica.journalId).slice(0, 8)}… at txid ${e.replica.txid}); nothing was changed. ` +
        `To follow the new history, run \`mycelite follow ${url} ${replica} --db ${db} --reset\` ` +
        '(it keeps the current database and journal aside)',
    );
  }
  const code = e instanceof HubError ? e.code : undefined;
  const text = (e as Error).message ?? String(e);
  const has = (re: RegExp): boolean => re.test(text);
  if (code === 'unauthorized' || has(/\bunauthorized\b|\b401\b/i)) {
    return new Error(
      `the hub refused the token (${text}): it is expired, malformed or from another hub's key; mint a new one with \`mycelite token --db ${db} --role reader\``,
    );
  }
  if (code === 'forbidden' || has(/\bforbidden\b|\b403\b/i)) {
    return new Error(
      `the token is not valid for database ${db} (${text}): mint one for it with \`mycelite token --db ${db} --role reader\``,
    );
  }
  if (code === 'not_found') {
    return new Error(
      `${url} has no database ${db}: check --db, or push it first with \`mycelite push DB --hub ${url} --db ${db}\``,
    );
  }
  if (e instanceof HubUnreachableError) {
    return new Error(unreachableHub(url, text));
  }
  return e instanceof Error ? e : new Error(text);
}
