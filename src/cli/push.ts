/**
 * `mycelite push DB --hub URL --db NAME [--token T] [--watch]`: push a database's snapshots to a hub. Once:
 * opens DB as its writer (recovering it), pushes the backlog and exits. With --watch (or when another
 * process is DB's writer): reads the journal without being the writer and pushes each snapshot once it
 * is certainly committed (src/client/journal-tail.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { HubClient, type HubTarget } from '../client/hub-client.js';
import { describeHubUrls } from '../client/hub-urls.js';
import { CommittedTail } from '../client/journal-tail.js';
import { Pusher, type SyncStatus, type WriterSync } from '../client/pusher.js';
import { checkHubOptions } from '../client/writer-start.js';
import { loadHash } from '../format/index.js';
import { journalPaths } from '../journal/paths.js';
import { nodeRuntime, open } from '../node/index.js';
import { hubUrlsOf, UsageError, unreachableHub, writeErr, writeOut } from './common.js';

interface PushOptions {
  hub: string;
  db: string;
  token?: string;
  watch?: boolean;
  timeout: string;
  json?: boolean;
}

/** How often --watch looks at the journal even without a file-change event (ms). */
const SAFETY_CHECK_MS = 1_000;
/** How soon --watch looks again while the writer is committing (ms). */
const BUSY_RETRY_MS = 10;

export function registerPush(program: Command): void {
  program
    .command('push')
    .description("push a database's snapshots to a hub (once, or --watch to keep pushing)")
    .argument('<DB>', 'database file (its journal is DB-mycelite/journal)')
    .requiredOption(
      '--hub <URL>',
      'hub base URL, e.g. http://127.0.0.1:8080; several hubs of one cluster separated by commas (the next is used when one fails)',
    )
    .requiredOption('--db <NAME>', 'database name on the hub')
    .option('--token <TOKEN>', 'a writer token for NAME (default: $MYCELITE_TOKEN)')
    .option('--watch', 'keep running and push every snapshot as soon as it is committed, by any process')
    .option(
      '--timeout <SECONDS>',
      'without --watch: give up when the hub has taken nothing for this long (a long backlog goes on while it moves)',
      '60',
    )
    .option('--json', 'print the result as JSON lines')
    .addHelpText(
      'after',
      `
Without --watch, push opens DB as its writer (so it finishes any crashed transaction first), sends every
snapshot the hub does not have yet, prints how many and the hub's txid, and exits 0. If another process
has DB open for writing, it reads the journal instead, like --watch does, and pushes what is committed.

With --watch, push does not become DB's writer: an application keeps writing DB through Mycelite (it
must not push to the same hub database itself), and push sends each new snapshot as soon as it is
committed. It reads like any SQLite reader: a SHARED lock, held for a moment after each commit (give
the writer a busy_timeout). Stop it with Ctrl-C. It holds the hub's write lease while it runs.

Errors name the cause: a reader token, another writer holding the lease, another history on the hub,
a hub that cannot be reached.

Examples:
  $ mycelite push app.db --hub http://127.0.0.1:8080 --db app --token "$WT"
  $ MYCELITE_TOKEN="$WT" mycelite push app.db --hub http://127.0.0.1:8080 --db app --watch`,
    )
    .action(async (db: string, options: PushOptions) => {
      await pushCommand(db, options);
    });
}

export async function pushCommand(dbPath: string, options: PushOptions): Promise<void> {
  const token = options.token ?? process.env['MYCELITE_TOKEN'];
  if (!token) {
    throw new UsageError(
      `no token: pass --token or set MYCELITE_TOKEN (a writer token: mycelite token --db ${options.db} --role writer)`,
    );
  }
  const target: HubTarget = { url: hubUrlsOf(options.hub), db: options.db, token };
  const bad = checkHubOptions(target);
  if (bad) throw new UsageError(bad);
  const timeoutMs = Number(options.timeout) * 1000;
  if (!(timeoutMs > 0)) throw new UsageError(`--timeout ${options.timeout} is not a number of seconds`);
  const file = path.resolve(dbPath);
  if (!fs.existsSync(file)) throw new Error(`${dbPath} does not exist`);
  const paths = journalPaths(file);
  // A device merges with its hub (it takes in others' changes, which changes the file): not what push does.
  if (fs.existsSync(paths.shared)) {
    throw new Error(
      `${dbPath} is a device of a shared database (its changes merge with everyone's): sync it with \`mycelite sync ${dbPath} --shared --hub ${options.hub} --db ${options.db}\`; push sends single-writer databases`,
    );
  }
  if (options.watch) return watch(file, paths.journal, target, !!options.json);
  // Another process is the writer, or the database is a WAL database `mycelite replicate` captures (our
  // engine does not open those as a writer): push what the journal holds, as --watch does.
  if (fs.existsSync(paths.dir) && (!writerLockFree(paths.lock) || isWalFormat(file))) {
    const tail = await openTail(file, paths.journal);
    const pusher = tailPusher(tail, target);
    await pusher.start();
    return report(pusher, target, timeoutMs, !!options.json);
  }
  const db = await open(file, { hub: target });
  try {
    await report(db.sync!, target, timeoutMs, !!options.json);
  } finally {
    await db.sync!.close();
    db.close();
  }
}

/** Waits until the hub holds everything, then prints what was pushed. */
async function report(sync: WriterSync, target: HubTarget, timeoutMs: number, json: boolean): Promise<void> {
  let count = 0;
  sync.on('pushed', (e) => {
    count += e.count;
  });
  try {
    const s = sync.status();
    if (s.state === 'offline') throw new Error(`${waiting(target, s.lastError)}`);
    if (s.state === 'storage-unavailable')
      throw new Error(
        `the hub at ${describeHubUrls(target.url)} answers but its storage does not: ${s.lastError}`,
      );
    // The timeout is for a hub that stopped taking snapshots: a long backlog goes on while it moves.
    for (;;) {
      const before = count;
      try {
        await sync.flush(timeoutMs);
        break;
      } catch (e) {
        if (count === before) throw e;
      }
    }
    const hubTxid = sync.status().hubTxid ?? 0n;
    if (json) writeOut(`${JSON.stringify({ pushed: count, hubTxid: hubTxid.toString(), db: target.db })}\n`);
    else if (count === 0)
      writeOut(`nothing to push: ${target.db} on ${describeHubUrls(target.url)} is at txid ${hubTxid}\n`);
    else
      writeOut(
        `pushed ${plural(count)} to ${target.db} on ${describeHubUrls(target.url)}: the hub is at txid ${hubTxid}\n`,
      );
  } finally {
    await sync.close();
  }
}

/** Pushes every committed snapshot as it appears, until SIGINT/SIGTERM or an error. */
async function watch(file: string, journalPath: string, target: HubTarget, json: boolean): Promise<void> {
  let tail = await openTail(file, journalPath);
  const pusher = tailPusher(tail, target);
  await pusher.start();
  const where = `${target.db} on ${describeHubUrls(target.url)}`;
  writeErr(`watching ${file}: pushing to ${where} (Ctrl-C to stop)\n`);
  pusher.on('pushed', (e) => {
    if (json) writeOut(`${JSON.stringify({ pushed: e.count, hubTxid: e.hubTxid.toString() })}\n`);
    else writeOut(`pushed ${plural(e.count)}: the hub is at txid ${e.hubTxid}\n`);
  });
  // What stops pushing, and when it goes on: one line each (a hub down at the start too).
  let said: string | undefined;
  const say = (s: SyncStatus): void => {
    let line: string | undefined;
    if (s.state === 'offline') line = `${waiting(target, s.lastError)}; retrying`;
    else if (s.state === 'storage-unavailable')
      line = `the hub at ${describeHubUrls(target.url)} answers but its storage does not: ${s.lastError}; retrying`;
    else if ((s.state === 'synced' || s.state === 'pushing') && said !== undefined)
      line = 'the hub answers again';
    if (line === undefined || line === said) return;
    said = s.state === 'offline' || s.state === 'storage-unavailable' ? line : undefined;
    writeErr(`mycelite: ${line}\n`);
  };
  say(pusher.status());
  pusher.on('status', say);

  let timer: ReturnType<typeof setTimeout> | undefined;
  let failure: unknown;
  let finish: () => void = () => {};
  const done = new Promise<void>((resolve) => {
    finish = resolve;
  });
  const check = (): void => {
    clearTimeout(timer);
    timer = undefined;
    try {
      for (;;) {
        const r = tail.poll();
        for (const s of r.snapshots) pusher.noteSnapshot(s);
        if (r.snapshots.length === 0 && !r.busy && tail.rebased()) {
          // The writer compacted: its journal now starts later. Follow the new file; the hub must already
          // hold what moved into the history (otherwise the pusher stops with an error saying so).
          void reopen();
          return;
        }
        if (!r.busy) return;
        if (r.snapshots.length > 0) continue;
        timer = setTimeout(check, BUSY_RETRY_MS);
        return;
      }
    } catch (e) {
      failure = e;
      finish();
    }
  };
  let reopening = false;
  const reopen = async (): Promise<void> => {
    if (reopening) return;
    reopening = true;
    try {
      const next = await openTail(file, journalPath);
      pusher.rebase({
        journal: { read: (offset, length) => next.source.read(offset, length), close: () => next.close() },
        index: next.index,
      });
      tail = next;
      watcher.close();
      watcher = fs.watch(journalPath, onChange);
      check();
    } catch (e) {
      failure = e;
      finish();
    } finally {
      reopening = false;
    }
  };
  const onChange = (): void => {
    timer ??= setTimeout(check, 0);
  };
  let watcher = fs.watch(journalPath, onChange);
  const safety = setInterval(check, SAFETY_CHECK_MS);
  const onSignal = (): void => finish();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const off = pusher.on('status', (s) => {
    if (s.state === 'error') {
      failure = new Error(s.lastError);
      finish();
    }
  });
  check();
  await done;
  off();
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  watcher.close();
  clearInterval(safety);
  clearTimeout(timer);
  await pusher.close();
  if (failure) throw failure;
  writeErr(`stopped: the hub is at txid ${pusher.status().hubTxid ?? 'unknown'}\n`);
}

/** Opens DB's journal for reading and indexes the snapshots committed so far. */
async function openTail(file: string, journalPath: string): Promise<CommittedTail> {
  await loadHash();
  if (!fs.existsSync(journalPath)) {
    throw new Error(
      `${file} has no Mycelite journal (${journalPath}): write to it through Mycelite first (mycelite exec, or open() in your application)`,
    );
  }
  const tail = new CommittedTail(nodeRuntime.fs, file, journalPath);
  try {
    for (let tries = 0; ; ) {
      const r = tail.poll();
      for (const s of r.snapshots) tail.index.add(s);
      if (r.snapshots.length > 0) continue;
      if (!r.busy || ++tries > 500) break;
      await new Promise((resolve) => setTimeout(resolve, BUSY_RETRY_MS));
    }
  } catch (e) {
    tail.close();
    throw e;
  }
  return tail;
}

function tailPusher(tail: CommittedTail, target: HubTarget): Pusher {
  return new Pusher({
    client: new HubClient(target),
    journal: { read: (offset, length) => tail.source.read(offset, length), close: () => tail.close() },
    index: tail.index,
  });
}

/** True when no process holds DB's writer lock (it is taken and released at once). */
function writerLockFree(lockPath: string): boolean {
  const lock = nodeRuntime.fs.tryLockExclusive?.(lockPath);
  lock?.release();
  return lock !== undefined;
}

/** Why pushing waits: the hub cannot be reached, or it answers with a failure (a full disk, say). */
function waiting(target: HubTarget, lastError: string | undefined): string {
  const why = lastError ?? 'no answer';
  const at = describeHubUrls(target.url);
  if (why.includes('the hub failed')) return `the hub at ${at} fails: ${why}`;
  return unreachableHub(at, why);
}

/** True when the database file's header says WAL (bytes 18-19 are 2). */
function isWalFormat(file: string): boolean {
  const b = Buffer.alloc(2);
  const fd = fs.openSync(file, 'r');
  try {
    fs.readSync(fd, b, 0, 2, 18);
  } finally {
    fs.closeSync(fd);
  }
  return b[0] === 2 && b[1] === 2;
}

function plural(n: number): string {
  return n === 1 ? '1 snapshot' : `${n} snapshots`;
}
