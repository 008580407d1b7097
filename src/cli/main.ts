/**
 * The `mycelite` command line: exec, log, restore, verify. `bin/mycelite.js` calls main() and uses its
 * result as the exit code: 0 ok, 1 error, 2 usage error.
 */
import * as fs from 'node:fs';
import { Command, CommanderError } from 'commander';
import { CliExit, describeError, describeStack, UsageError, writeErr, writeOut } from './common.js';

type Register = (program: Command) => void;

/**
 * Each command's module, loaded when needed: `mycelite exec` need not load the hub, NATS and metrics
 * modules (they were most of its start-up time). In the order of `--help`.
 */
const COMMANDS: Record<string, () => Promise<Register>> = {
  compact: async () => (await import('./compact.js')).registerCompact,
  exec: async () => (await import('./exec.js')).registerExec,
  follow: async () => (await import('./follow.js')).registerFollow,
  log: async () => (await import('./log.js')).registerLog,
  push: async () => (await import('./push.js')).registerPush,
  query: async () => (await import('./query.js')).registerQuery,
  replicate: async () => (await import('./replicate.js')).registerReplicate,
  restore: async () => (await import('./restore.js')).registerRestore,
  revert: async () => (await import('./revert.js')).registerRevert,
  serve: async () => (await import('./serve.js')).registerServe,
  sync: async () => (await import('./sync.js')).registerSync,
  token: async () => (await import('./token.js')).registerToken,
  verify: async () => (await import('./verify.js')).registerVerify,
};

export const EXIT_OK = 0;
export const EXIT_ERROR = 1;
export const EXIT_USAGE = 2;

function packageVersion(): string {
  try {
    const pkg = JSON.parse(fs.readFileSync(new URL('../../../package.json', import.meta.url), 'utf8'));
    return String(pkg.version);
  } catch {
    return 'unknown';
  }
}

/**
 * Builds the command tree. Commander errors are thrown (exitOverride), never process.exit. Given the
 * arguments, and their first one names a command, only that command is registered (the others' modules
 * are not loaded); otherwise (help, version, a typo) all are.
 */
export async function buildProgram(argv: string[] = []): Promise<Command> {
  const program = new Command('mycelite');
  program
    .description('Physical, single-writer replication for SQLite: every committed transaction is a snapshot')
    .version(packageVersion(), '-V, --version', 'print the version')
    .helpOption('-h, --help', 'print help')
    .helpCommand('help [command]', 'print help for a command')
    .exitOverride()
    .configureOutput({
      writeOut,
      writeErr,
      outputError: usageError('mycelite --help'),
    })
    .addHelpText(
      'after',
      `
Examples:
  $ mycelite exec app.db "create table t(a); insert into t values (random())"
  $ mycelite query replica.db "select count(*) from t"
  $ mycelite log app.db --json
  $ mycelite restore app.db --output then.db --txid 2
  $ mycelite verify app.db
  $ mycelite serve --data hubdata --port 8080
  $ WT=$(mycelite token --data hubdata --db app --role writer)
  $ mycelite push app.db --hub http://127.0.0.1:8080 --db app --token "$WT"
  $ mycelite follow http://127.0.0.1:8080 replica.db --db app --token "$RT" --once
  $ mycelite replicate app.db      # beside an application that writes app.db itself in WAL mode

Set MYCELITE_DEBUG=1 to see stack traces of errors.`,
    );
  const first = argv[0];
  // A command: its module alone; `--version`: none; anything else (help, a mistyped command): all of them.
  const names =
    first !== undefined && Object.hasOwn(COMMANDS, first)
      ? [first]
      : argv.length === 1 && (first === '-V' || first === '--version')
        ? []
        : Object.keys(COMMANDS);
  const registers = await Promise.all(names.map((name) => COMMANDS[name]!()));
  for (const register of registers) register(program);
  for (const cmd of program.commands) {
    cmd.configureOutput({ writeOut, writeErr, outputError: usageError(`mycelite ${cmd.name()} --help`) });
  }
  return program;
}

/** A usage error on one line, with where to read more: `mycelite: MESSAGE (see HELP)`. */
function usageError(help: string): (message: string, write: (text: string) => void) => void {
  return (message, write) =>
    write(
      `mycelite: ${message
        .replace(/^error: /, '')
        .trim()
        .replace(/\s*\n\s*/g, ' ')} (see ${help})\n`,
    );
}

/** Runs the CLI with `argv` (the arguments after the script name); resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    // `mycelite log app.db | head`: the reader went away; that is not an error.
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
  const program = await buildProgram(argv);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return EXIT_OK;
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version end with exit code 0; `mycelite` alone prints help as an error.
      if (e.exitCode === 0) return EXIT_OK;
      return EXIT_USAGE;
    }
    if (e instanceof CliExit) return e.code;
    if (e instanceof UsageError) {
      writeErr(`mycelite: ${e.message}\n`);
      return EXIT_USAGE;
    }
    writeErr(`mycelite: ${describeError(e)}\n`);
    if (process.env['MYCELITE_DEBUG'] === '1') writeErr(`${describeStack(e)}\n`);
    return EXIT_ERROR;
  }
}
