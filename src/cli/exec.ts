/**
 * `mycelite exec DB SQL [--json]`: run SQL on a database through Mycelite (every committed transaction
 * becomes a snapshot) and print the rows of the last statement.
 */
import type { Command } from 'commander';
import type { Database } from '../engine/database.js';
import type { Sqlite3 } from '../engine/sqlite.js';
import type { SqlValue } from '../engine/statement.js';
import { asFound } from '../node/as-found.js';
import { open, openAt } from '../node/index.js';
import type { ViewTarget } from '../timetravel/view.js';
import { jsonInteger, parseIsoTime, requireParentDirectory, toHex, UsageError, writeOut } from './common.js';

interface ExecOptions {
  json?: boolean;
  at?: string;
}

export function registerExec(program: Command): void {
  program
    .command('exec')
    .description('run SQL on a database through Mycelite and print the rows of the last statement')
    .argument('<DB>', 'database file (created, with its journal, if missing)')
    .argument('<SQL>', 'one or more SQL statements separated by ";"')
    .option('--json', 'print one JSON object per row and line instead of a tab-separated table')
    .option('--at <WHEN>', 'read-only: query the database as of a txid (digits) or an ISO-8601 time')
    .addHelpText(
      'after',
      `
Every statement runs in order; each transaction it commits becomes one snapshot in DB-mycelite/journal.
Only the last statement's rows are printed. The table has a header row and tab-separated columns; NULL
is printed as an empty field, and a tab, newline, carriage return or backslash inside a value as \\t, \\n,
\\r or \\\\ (one line per row). With --json, integers outside JavaScript's safe range are printed as
strings, blobs (in both formats) as lowercase hex.

With --at, nothing is written: the SQL runs on a read-only view of the database as it was after the
snapshot with that txid, or after the last snapshot at or before that time, read from the journal.

Examples:
  $ mycelite exec app.db "create table t(a); insert into t values (random())"
  $ mycelite exec app.db "select rowid, a from t" --json
  $ mycelite exec app.db --at 2026-11-27T09:00:00Z "select count(*) from t"`,
    )
    .action(async (db: string, sql: string, options: ExecOptions) => {
      await execCommand(db, sql, options);
    });
}

export async function execCommand(dbPath: string, sql: string, options: ExecOptions): Promise<void> {
  requireParentDirectory(dbPath);
  if (options.at !== undefined) {
    const view = await openAt(dbPath, parseAt(options.at));
    try {
      runAndPrint(view, sql, options);
    } finally {
      view.close();
    }
    return;
  }
  // A database this command created and failed on before anything was committed is removed again, with
  // its journal (as open() does when it fails): a typo in the SQL leaves no empty database behind.
  await asFound(dbPath, async () => {
    const db = await open(dbPath);
    try {
      runAndPrint(db, sql, options);
    } finally {
      // A writer checks the snapshots it had not checked yet (a few after the first run): let it finish.
      await db.historyCheck;
      db.close();
    }
  });
}

/** Runs every statement of `sql` on `db` and prints the last one's rows (a table, or JSON lines). */
export function runAndPrint(db: Database, sql: string, options: { json?: boolean }): void {
  const { before, last } = splitLastStatement(db.sqlite3, sql);
  if (before.trim() !== '') db.exec(before);
  if (last === undefined) return;
  const stmt = db.prepare(last);
  if (!stmt.reader) {
    stmt.run();
    return;
  }
  const names = stmt.columns().map((c) => c.name);
  const rows = stmt.raw(true).safeIntegers(true).iterate<SqlValue[]>();
  const out = new Output();
  if (options.json) {
    for (const row of rows) {
      const obj: Record<string, unknown> = {};
      for (let i = 0; i < names.length; i++) obj[names[i]!] = jsonValue(row[i]!);
      out.line(JSON.stringify(obj));
    }
  } else {
    let header = false;
    for (const row of rows) {
      if (!header) {
        out.line(names.map(cell).join('\t'));
        header = true;
      }
      out.line(row.map(textValue).join('\t'));
    }
  }
  out.flush();
}

/** Reads --at: digits are a txid, anything else an ISO-8601 time (read as `restore --at` reads it). */
export function parseAt(text: string): ViewTarget {
  if (/^\d+$/.test(text.trim())) return BigInt(text.trim());
  try {
    return new Date(parseIsoTime(text));
  } catch {
    throw new UsageError(
      `--at ${text}: give a txid (digits) or an ISO-8601 time such as 2026-11-27T09:00:00Z`,
    );
  }
}

/** Buffers output lines and writes them in large chunks. */
class Output {
  private text = '';
  line(s: string): void {
    this.text += `${s}\n`;
    if (this.text.length > 1 << 16) this.flush();
  }
  flush(): void {
    if (this.text !== '') writeOut(this.text);
    this.text = '';
  }
}

function jsonValue(v: SqlValue): unknown {
  if (typeof v === 'bigint') return jsonInteger(v);
  if (v instanceof Uint8Array) return toHex(v);
  if (typeof v === 'number' && !Number.isFinite(v)) return v > 0 ? 'Inf' : '-Inf';
  return v;
}

function textValue(v: SqlValue): string {
  if (v === null) return '';
  if (typeof v === 'number') return formatReal(v);
  if (v instanceof Uint8Array) return toHex(v);
  return cell(String(v));
}

/** A table cell: a tab, newline, carriage return or backslash escaped, so each row is one line. */
function cell(s: string): string {
  return s.replace(/[\\\t\n\r]/g, (c) => ESCAPES[c]!);
}

/** What a table cell shows for the characters that would break its row or column. */
const ESCAPES: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r' };

/** A REAL as the sqlite3 shell prints it (`%!.15g`): 15 significant digits, always with a '.'. */
export function formatReal(v: number): string {
  if (!Number.isFinite(v)) return v > 0 ? 'Inf' : v < 0 ? '-Inf' : 'NaN';
  if (v === 0) return Object.is(v, -0) ? '-0.0' : '0.0';
  const [mantissa, expText] = v.toExponential(14).split('e') as [string, string];
  const exp = Number(expText);
  if (exp < -4 || exp >= 15) {
    const m = trimZeros(mantissa);
    const e = Math.abs(exp).toString().padStart(2, '0');
    return `${m}e${exp < 0 ? '-' : '+'}${e}`;
  }
  return trimZeros(v.toFixed(14 - exp));
}

function trimZeros(s: string): string {
  if (!s.includes('.')) return `${s}.0`;
  const t = s.replace(/0+$/, '');
  return t.endsWith('.') ? `${t}0` : t;
}

/**
 * Splits `sql` into the text before its last statement and the last statement (undefined if it holds
 * none). Statement ends are found with sqlite3_complete(), which knows about string literals, quoted
 * names, comments and the `;` inside CREATE TRIGGER ... END, so splitting is exactly SQLite's.
 */
export function splitLastStatement(sqlite3: Sqlite3, sql: string): { before: string; last?: string } {
  const starts: number[] = [];
  let start = 0;
  for (let i = sql.indexOf(';'); i !== -1; i = sql.indexOf(';', i + 1)) {
    const chunk = sql.slice(start, i + 1);
    if (sqlite3.capi.sqlite3_complete(chunk) === 1) {
      if (!isTrivia(chunk)) starts.push(start);
      start = i + 1;
    }
  }
  if (!isTrivia(sql.slice(start))) starts.push(start);
  const last = starts.at(-1);
  if (last === undefined) return { before: sql };
  return { before: sql.slice(0, last), last: sql.slice(last) };
}

/** Whether `s` holds only whitespace, semicolons and comments. */
export function isTrivia(s: string): boolean {
  let i = 0;
  while (i < s.length) {
    const c = s[i]!;
    if (c === ';' || /\s/.test(c)) i++;
    else if (s.startsWith('--', i)) {
      const nl = s.indexOf('\n', i);
      i = nl === -1 ? s.length : nl + 1;
    } else if (s.startsWith('/*', i)) {
      const end = s.indexOf('*/', i + 2);
      i = end === -1 ? s.length : end + 2;
    } else return false;
  }
  return true;
}
