/**
 * `mycelite replicate DB [--hub URL --db NAME --token T]`: the sidecar for a database that other
 * processes write with native SQLite in WAL mode (src/sidecar/). Runs until SIGINT/SIGTERM.
 * `mycelite replicate --config FILE`: many databases in one process (src/sidecar/daemon.ts).
 */
import type { Command } from 'commander';
import type { HubOptions } from '../client/writer-start.js';
import { pushStopped, runDaemon } from '../sidecar/daemon.js';
import { type Replicator, replicate } from '../sidecar/replicate.js';
import { writeErr } from './common.js';

interface ReplicateCliOptions {
  hub?: string;
  db?: string;
  token?: string;
  config?: string;
  metrics?: string;
}

export function registerReplicate(program: Command): void {
  program
    .command('replicate')
    .description('capture every transaction of a WAL database that native SQLite writes (a sidecar)')
    .argument('[DB]', 'database file an application writes in WAL mode')
    .option('--hub <URL>', 'also push every snapshot to this hub')
    .option('--db <NAME>', 'database name on the hub')
    .option('--token <TOKEN>', 'a writer token for NAME (default: $MYCELITE_TOKEN)')
    .option('--config <FILE>', 'replicate every database a JSON file lists (instead of DB)')
    .option('--metrics <HOST:PORT>', 'with --config: serve Prometheus metrics at /metrics')
    .addHelpText(
      'after',
      `
The application keeps its own SQLite (Python, Go, Rails, better-sqlite3...) in WAL mode; replicate runs
beside it and appends one snapshot per committed transaction to DB-mycelite/journal, so restore, log,
verify, time travel and replicas work as for a database written through Mycelite. It holds a read
transaction on DB (SQLite then never overwrites WAL frames it has not copied) and runs the checkpoints
itself; the database file is written only by SQLite's own checkpoints. Stop it with Ctrl-C; after a
crash it resumes where its journal ends.

--config FILE (JSON): {"databases": [{"path": "app.db", "hub": {"url": "...", "db": "app",
"token": "..."}}]}; a relative path is relative to FILE. SIGHUP reloads it. Each database logs its own
lines on stderr, prefixed with its path.

Exit codes: 0 stopped by a signal, 1 error (not a WAL database, journal held by another process...),
2 usage error.

Examples:
  $ mycelite replicate app.db
  $ MYCELITE_TOKEN="$WT" mycelite replicate app.db --hub http://127.0.0.1:8080 --db app
  $ mycelite replicate --config mycelite.json --metrics 127.0.0.1:9090`,
    )
    .action(async (db: string | undefined, options: ReplicateCliOptions, cmd: Command) => {
      if (options.config !== undefined) {
        if (db !== undefined || options.hub !== undefined || options.db !== undefined) {
          cmd.error('replicate: give either DB (with --hub, --db) or --config FILE, not both', {
            exitCode: 2,
          });
        }
        await runDaemon(options.config, { metrics: options.metrics });
        return;
      }
      if (db === undefined) cmd.error('replicate needs DB or --config FILE', { exitCode: 2 });
      if (options.metrics !== undefined) cmd.error('--metrics goes with --config', { exitCode: 2 });
      if ((options.hub === undefined) !== (options.db === undefined)) {
        cmd.error('--hub and --db go together', { exitCode: 2 });
      }
      let hub: HubOptions | undefined;
      if (options.hub !== undefined) {
        const token = options.token ?? process.env['MYCELITE_TOKEN'];
        if (!token) {
          throw new Error(
            `no token: pass --token or set MYCELITE_TOKEN (a writer token: mycelite token --db ${options.db} --role writer)`,
          );
        }
        hub = { url: options.hub, db: options.db!, token };
      }
      await runOne(db!, hub);
    });
}

/** Replicates one database until SIGINT/SIGTERM; rejects with the error that stopped it. */
async function runOne(db: string, hub: HubOptions | undefined): Promise<void> {
  const r: Replicator = await replicate(db, { hub, onMessage: (line) => writeErr(`${line}\n`) });
  const failure = new Promise<Error | undefined>((resolve) => {
    const onSignal = (): void => resolve(undefined);
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    r.on('error', (e) => resolve(e));
  });
  writeErr(
    `replicating ${r.dbPath} at txid ${r.position().txid}${hub ? `, pushing to ${hub.db} on ${hub.url}` : ''} (Ctrl-C to stop)\n`,
  );
  let lastState = r.sync?.status().state;
  r.sync?.on('status', (s) => {
    if (s.state === lastState) return;
    lastState = s.state;
    if (s.state === 'offline') writeErr(`hub unreachable, retrying: ${s.lastError}\n`);
    if (s.state === 'error') writeErr(`${pushStopped(s.lastError, 'restart replicate to push again')}\n`);
  });
  const error = await failure;
  await r.close();
  if (error) throw error;
  writeErr(`stopped at txid ${r.position().txid}\n`);
}
