/**
 * The `mycelite` command line, run as a user runs it: the real bin in a child process, in a temporary
 * directory, through the new-user flow (exec → log --json → restore --txid → verify) and its errors.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import BetterSqlite3 from 'better-sqlite3';
import { parseIsoTime } from '../src/cli/common.js';
import { formatReal, isTrivia, parseAt, splitLastStatement } from '../src/cli/exec.js';
import { loadSqlite } from '../src/engine/sqlite.js';
import { freePort } from './helpers/tcp-proxy.js';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/mycelite.js');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-cli-'));
}

function cli(cwd: string, ...args: string[]): Run {
  const env = { ...process.env };
  delete env['MYCELITE_DEBUG'];
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd, encoding: 'utf8', env, timeout: 60_000 });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs and expects exit code `code`, showing the output when it differs. */
function expect(code: number, cwd: string, ...args: string[]): Run {
  const r = cli(cwd, ...args);
  assert.equal(r.code, code, `mycelite ${args.join(' ')} exited ${r.code}\n${r.stdout}\n${r.stderr}`);
  return r;
}

const sha256 = (file: string): string => createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const lines = (s: string): string[] => s.split('\n').filter((l) => l !== '');

describe('new-user flow: exec → log --json → restore --txid → verify', () => {
  let dir: string;
  before(() => {
    dir = tempDir();
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('exec creates the database and its journal, running every statement', () => {
    const r = expect(
      0,
      dir,
      'exec',
      'app.db',
      'create table t(a); insert into t values (random()), (random())',
    );
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, '');
    assert.ok(fs.existsSync(path.join(dir, 'app.db')));
    assert.ok(fs.existsSync(path.join(dir, 'app.db-mycelite', 'journal')));
    for (let i = 0; i < 3; i++) expect(0, dir, 'exec', 'app.db', 'insert into t select random() from t');
    expect(0, dir, 'exec', 'app.db', 'delete from t where rowid % 2 = 0');
    expect(0, dir, 'exec', 'app.db', 'vacuum');
    const count = expect(0, dir, 'exec', 'app.db', 'select count(*) as n from t');
    assert.equal(count.stdout, 'n\n8\n');
  });

  test('verify: the journal replays into the database', () => {
    const r = expect(0, dir, 'verify', 'app.db');
    assert.match(r.stdout, /^ok: 7 snapshots, last txid 7\n$/);
    const j = JSON.parse(expect(0, dir, 'verify', 'app.db', '--json').stdout);
    assert.deepEqual(j, { ok: true, snapshots: 7, lastTxid: 7, tornBytes: 0 });
  });

  test('restore (latest) gives a byte-identical copy', () => {
    const r = expect(0, dir, 'restore', 'app.db', '--output', 'now.db');
    assert.match(r.stdout, /^restored txid 7 \(\d{4}-\d\d-\d\dT[\d:.]+Z\) to now\.db \(\d+ pages?\)\n$/);
    assert.equal(sha256(path.join(dir, 'now.db')), sha256(path.join(dir, 'app.db')));
  });

  test('log --json, then restore --txid of the 2nd snapshot: the rows of that moment', () => {
    const entries = lines(expect(0, dir, 'log', 'app.db', '--json').stdout).map((l) => JSON.parse(l));
    assert.equal(entries.length, 7);
    entries.forEach((e, i) => {
      assert.equal(e.txid, i + 1);
      assert.equal(typeof e.timestamp, 'string');
      assert.equal(new Date(e.timestamp).toISOString(), e.timestamp);
      for (const k of ['pages', 'bytes', 'dbPages', 'pageSize']) assert.equal(typeof e[k], 'number', k);
      assert.match(e.checksum, /^[0-9a-f]{16}$/);
    });
    const txid = entries[1].txid;
    const r = expect(0, dir, 'restore', 'app.db', '--txid', String(txid), '--output', 'then.db');
    assert.match(
      r.stdout,
      new RegExp(`^restored txid ${txid} \\(${entries[1].timestamp.replace('.', '\\.')}\\)`),
    );
    const count = expect(0, dir, 'exec', 'then.db', 'select count(*) from t');
    assert.equal(count.stdout, 'count(*)\n2\n');
    // Restoring by time: the last snapshot at or before the 2nd one's timestamp is the 2nd (or later
    // ones committed in the same millisecond).
    const at = expect(0, dir, 'restore', 'app.db', '--at', entries[1].timestamp, '--output', 'at.db');
    const atTxid = Number(/restored txid (\d+)/.exec(at.stdout)![1]);
    assert.equal(entries[atTxid - 1].timestamp, entries[1].timestamp);
  });

  test('plain log: one line per snapshot', () => {
    const out = lines(expect(0, dir, 'log', 'app.db').stdout);
    assert.equal(out.length, 7);
    assert.match(
      out[0]!,
      /^txid 1 {2}\d{4}-\d\d-\d\dT[\d:.]+Z {2}\d+ pages? written {2}\d+ bytes {2}database \d+ pages?$/,
    );
  });

  test('exec --json prints one parseable object per row', () => {
    const r = expect(
      0,
      dir,
      'exec',
      'app.db',
      'select rowid as id, a, 1.5 as r, null as n from t order by rowid',
      '--json',
    );
    const rows = lines(r.stdout).map((l) => JSON.parse(l));
    assert.equal(rows.length, 8);
    for (const row of rows) {
      assert.deepEqual(Object.keys(row), ['id', 'a', 'r', 'n']);
      assert.equal(typeof row.id, 'number');
      assert.equal(row.r, 1.5);
      assert.equal(row.n, null);
      // random() is usually beyond 2^53: then it is a decimal string, exact.
      assert.ok(typeof row.a === 'number' || /^-?\d+$/.test(row.a), String(row.a));
    }
  });

  test('restore refuses to overwrite without --force', () => {
    const before = sha256(path.join(dir, 'then.db'));
    const r = expect(1, dir, 'restore', 'app.db', '--output', 'then.db');
    assert.match(r.stderr, /^mycelite: .*then\.db exists.*--force/);
    assert.equal(sha256(path.join(dir, 'then.db')), before);
    expect(0, dir, 'restore', 'app.db', '--output', 'then.db', '--force');
    assert.equal(sha256(path.join(dir, 'then.db')), sha256(path.join(dir, 'app.db')));
  });

  test('restore of a txid the journal does not hold fails and leaves nothing behind', () => {
    const r = expect(1, dir, 'restore', 'app.db', '--txid', '99', '--output', 'nope.db');
    assert.match(r.stderr, /no snapshot with txid 99/);
    assert.deepEqual(
      fs.readdirSync(dir).filter((f) => f.startsWith('nope.db')),
      [],
    );
  });

  test('log, restore and verify do not take the writer lock (they work while a writer is open)', async () => {
    const { open } = await import('../src/node/index.js');
    const db = await open(path.join(dir, 'app.db'));
    try {
      expect(0, dir, 'log', 'app.db');
      expect(0, dir, 'verify', 'app.db');
      expect(0, dir, 'restore', 'app.db', '--output', 'live.db');
      const busy = expect(1, dir, 'exec', 'app.db', 'select 1');
      assert.match(busy.stderr, /already open for writing/);
    } finally {
      db.close();
    }
  });
});

describe('usage errors (exit 2) and help', () => {
  let dir: string;
  before(() => {
    dir = tempDir();
    expect(0, dir, 'exec', 'app.db', 'create table t(a)');
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('--txid together with --at', () => {
    const r = expect(
      2,
      dir,
      'restore',
      'app.db',
      '--output',
      'x.db',
      '--txid',
      '1',
      '--at',
      '2025-01-01T00:00:00Z',
    );
    assert.match(r.stderr, /^mycelite: .*--txid.*cannot be used with.*--at/);
    assert.match(r.stderr, /see mycelite restore --help/);
    assert.equal(fs.existsSync(path.join(dir, 'x.db')), false);
  });

  test('an invalid --at date or --txid', () => {
    for (const at of ['yesterday', '2025-02-30', '2025-13-01', '2025-01-01T25:00Z']) {
      const r = expect(2, dir, 'restore', 'app.db', '--output', 'x.db', '--at', at);
      assert.match(r.stderr, /not an ISO-8601 date/);
    }
    assert.match(
      expect(2, dir, 'restore', 'app.db', '--output', 'x.db', '--txid', 'two').stderr,
      /not a txid/,
    );
  });

  test('--at: a date alone is local midnight, as a date-time without zone is local time', () => {
    const tz = process.env['TZ'];
    process.env['TZ'] = 'Asia/Tokyo'; // UTC+9: UTC midnight and local midnight differ
    try {
      const midnight = new Date(2026, 11, 3).getTime();
      assert.equal(parseIsoTime('2026-12-03'), midnight);
      assert.equal(parseIsoTime('2026-12-03T00:00'), midnight);
      assert.equal(parseIsoTime('2026-12-03T00:00Z'), Date.UTC(2026, 11, 3));
      assert.deepEqual(parseAt('2026-12-03'), new Date(midnight));
      assert.equal(parseAt('42'), 42n);
    } finally {
      if (tz === undefined) delete process.env['TZ'];
      else process.env['TZ'] = tz;
    }
  });

  test('unknown command, unknown option, missing argument, missing --output, no command', () => {
    assert.match(
      expect(2, dir, 'frobnicate').stderr,
      /^mycelite: unknown command 'frobnicate'[\s\S]*mycelite --help/,
    );
    assert.match(
      expect(2, dir, 'exec', 'app.db', 'select 1', '--bogus').stderr,
      /unknown option '--bogus'[\s\S]*see mycelite exec --help/,
    );
    assert.match(
      expect(2, dir, 'exec', 'app.db').stderr,
      /missing required argument 'SQL'[\s\S]*see mycelite exec --help/,
    );
    assert.match(expect(2, dir, 'restore', 'app.db').stderr, /--output/);
    assert.match(expect(2, dir, 'log', 'app.db', 'extra').stderr, /too many arguments/);
    assert.match(expect(2, dir).stderr, /Usage: mycelite/);
    assert.match(expect(2, dir, 'serve', '--nats-layout', 'bogus').stderr, /--nats-layout.*bogus.*shards, streams/);
    assert.match(expect(2, dir, 'serve', '--nats-layout', 'streams').stderr, /--nats-layout goes with --storage/);
    assert.equal(fs.existsSync(path.join(dir, 'mycelite-hub')), false, 'no data directory left behind');
    // Each on one line, with where to read more (a second line was easy to miss, or to cut with `head -1`).
    for (const args of [
      ['frobnicate'],
      ['restor'],
      ['exec', 'app.db', 'select 1', '--bogus'],
      ['restore', 'app.db'],
    ])
      assert.match(
        expect(2, dir, ...args).stderr,
        /^mycelite: [^\n]+ \(see mycelite [^\n]*--help\)\n$/,
        args.join(' '),
      );
  });

  test('push, follow and restore --hub say the same about a hub they cannot reach, and leave nothing', async () => {
    const dir = tempDir();
    expect(0, dir, 'exec', 'app.db', 'create table t(a)');
    const hub = `http://127.0.0.1:${await freePort()}`;
    const said = new RegExp(
      `^mycelite: cannot reach the hub at ${hub.replaceAll('.', '\\.')} \\(.*ECONNREFUSED.*\\): check the URL and that \`mycelite serve\` is running\n$`,
    );
    const before = fs.readdirSync(dir).sort();
    for (const args of [
      ['push', 'app.db', '--hub', hub, '--db', 'app', '--token', 't'],
      ['follow', hub, 'replica.db', '--db', 'app', '--token', 't', '--once'],
      ['restore', '--hub', hub, '--db', 'app', '--token', 't', '--output', 'restored.db'],
    ])
      assert.match(expect(1, dir, ...args).stderr, said, args[0]);
    assert.deepEqual(fs.readdirSync(dir).sort(), before, 'no file left behind');
  });

  test('token says on stderr when it made a new hub key (a mistyped --data), and only then', () => {
    const dir = tempDir();
    const first = cli(dir, 'token', '--data', 'hubdata', '--db', 'app', '--role', 'reader');
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stderr, /^mycelite token: no hub key in .*hubdata: made a new one .*hub\.key/);
    assert.match(first.stdout, /^[\w-]+\.[\w-]+\.[\w-]+\n$/, 'stdout is the token alone');
    const again = cli(dir, 'token', '--data', 'hubdata', '--db', 'app', '--role', 'reader');
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stderr, '', 'nothing said with the key in place');
  });

  test('bad option values: one line, exit 2, nothing created', () => {
    const hub = ['--hub', 'http://127.0.0.1:1'];
    const cases: [string[], RegExp][] = [
      [
        ['token', '--data', 'hubdata', '--db', 'app', '--role', 'admin'],
        /^mycelite: --role must be writer or reader/,
      ],
      [['token', '--data', 'hubdata', '--db', '../x', '--role', 'reader'], /^mycelite: .*database name/i],
      [
        ['token', '--data', 'hubdata', '--db', 'app', '--role', 'reader', '--ttl', 'soon'],
        /^mycelite: --ttl/,
      ],
      [['push', 'app.db', ...hub, '--db', 'app'], /^mycelite: no token/],
      [['push', 'app.db', ...hub, '--db', '../x', '--token', 't'], /database name/i],
      [['push', 'app.db', '--hub', 'ftp://x', '--db', 'app', '--token', 't'], /not an http\(s\) URL/],
      [['follow', 'http://127.0.0.1:1', 'r.db', '--db', 'app'], /^mycelite: no token/],
      [['follow', 'http://127.0.0.1:1', 'r.db', '--db', 'a/b', '--token', 't'], /database name/i],
      [['sync', 's.db', ...hub, '--db', 'app', '--shared', '--token', 't', '--timeout', 'x'], /--timeout/],
      [['serve', '--data', 'hubdata', '--port', '99999'], /^mycelite: --port must be an integer/],
      [['serve', '--data', 'hubdata', '--compact-above', 'lots'], /cannot read the size/],
      [['exec', 'app.db', '--at', 'tomorrow', 'select 1'], /^mycelite: --at tomorrow/],
    ];
    const before = fs.readdirSync(dir).sort();
    for (const [args, message] of cases) {
      const r = cli(dir, ...args);
      assert.equal(r.code, 2, `mycelite ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
      assert.equal(r.stdout, '');
    }
    assert.deepEqual(fs.readdirSync(dir).sort(), before, 'a usage error created files');
  });

  test('--help on every command (description and example), --version', () => {
    const top = expect(0, dir, '--help').stdout;
    for (const cmd of ['exec', 'log', 'restore', 'verify']) {
      assert.match(top, new RegExp(`\\n  ${cmd} `));
      const help = expect(0, dir, cmd, '--help').stdout;
      assert.match(help, new RegExp(`^Usage: mycelite ${cmd} `));
      assert.match(help, new RegExp(`\\$ mycelite ${cmd} `), `${cmd} --help shows an example`);
      assert.equal(expect(0, dir, 'help', cmd).stdout, help);
    }
    const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
    assert.equal(expect(0, dir, '--version').stdout, `${pkg.version}\n`);
  });
});

describe('errors (exit 1)', () => {
  let dir: string;
  before(() => {
    dir = tempDir();
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('verify names the byte offset of a corrupted journal', () => {
    expect(0, dir, 'exec', 'app.db', 'create table t(a)');
    for (let i = 0; i < 6; i++)
      expect(0, dir, 'exec', 'app.db', `insert into t values (randomblob(${100 + i * 50}))`);
    const journal = path.join(dir, 'app.db-mycelite', 'journal');
    const bytes = fs.readFileSync(journal);
    const middle = Math.floor(bytes.length / 2);
    bytes[middle]! ^= 0xff;
    fs.writeFileSync(journal, bytes);
    const r = expect(1, dir, 'verify', 'app.db');
    assert.match(r.stderr, /^mycelite: verify failed: .*at byte \d+/);
    // The error's own position is the last "at byte N" (a message may name another offset before it).
    const offset = Number([...r.stderr.matchAll(/at byte (\d+)/g)].at(-1)![1]);
    assert.ok(offset <= middle, `offset ${offset} is at or before the damaged byte ${middle}`);
    const j = JSON.parse(expect(1, dir, 'verify', 'app.db', '--json').stdout);
    assert.equal(j.ok, false);
    assert.equal(j.offset, offset);
    assert.match(j.problem, /at byte/);
    assert.equal(r.stderr.includes('    at '), false, 'no stack trace');
  });

  test('exec in a directory that does not exist', () => {
    const r = expect(1, dir, 'exec', 'no/such/dir/app.db', 'select 1');
    assert.match(
      r.stderr,
      /^mycelite: cannot open no\/such\/dir\/app\.db: directory .*no\/such\/dir does not exist\n$/,
    );
    assert.equal(fs.existsSync(path.join(dir, 'no')), false, 'nothing was created');
  });

  test('a failed open leaves the directory as it found it (not SQLite, WAL, unreachable hub)', () => {
    const sub = fs.mkdtempSync(path.join(dir, 'as-found-'));
    fs.writeFileSync(path.join(sub, 'notes.db'), 'hello, no database here\n');
    // A WAL database an application has open (a closed one is switched to rollback mode at open).
    const wal = new BetterSqlite3(path.join(sub, 'wal.db'));
    wal.pragma('journal_mode = WAL');
    wal.exec('create table t(a)');
    const before = fs.readdirSync(sub).sort();
    assert.match(expect(1, sub, 'exec', 'notes.db', 'select 1').stderr, /not a SQLite database/);
    assert.match(
      expect(1, sub, 'exec', 'wal.db', 'select 1').stderr,
      /WAL mode and another process has it open/,
    );
    const follow = expect(
      1,
      sub,
      'follow',
      'http://127.0.0.1:1',
      'replica.db',
      '--db',
      'app',
      '--token',
      't',
      '--once',
    );
    assert.match(follow.stderr, /cannot reach the hub/);
    assert.deepEqual(fs.readdirSync(sub).sort(), before);
    wal.close();
  });

  test('SQL that fails on a new database before committing anything leaves no file behind', () => {
    const sub = fs.mkdtempSync(path.join(dir, 'typo-'));
    assert.match(expect(1, sub, 'exec', 'typo.db', 'selec 1').stderr, /^mycelite: .*syntax error\n$/);
    assert.match(expect(1, sub, 'exec', 'typo.db', 'select * from nope').stderr, /no such table: nope/);
    assert.deepEqual(fs.readdirSync(sub), [], 'neither typo.db nor typo.db-mycelite/ is left');
  });

  test('SQL errors name the statement; earlier statements stay committed', () => {
    const r = expect(1, dir, 'exec', 'new.db', 'create table u(a); insert into nope values (1)');
    assert.match(r.stderr, /^mycelite: .*no such table: nope\n$/);
    assert.equal(expect(0, dir, 'exec', 'new.db', 'select count(*) as n from u').stdout, 'n\n0\n');
  });

  test('log, restore and verify of a database without a journal', () => {
    fs.writeFileSync(path.join(dir, 'plain.db'), '');
    for (const args of [
      ['log', 'plain.db'],
      ['verify', 'plain.db'],
      ['restore', 'plain.db', '-o', 'p2.db'],
    ]) {
      assert.match(expect(1, dir, ...args).stderr, /has no Mycelite journal/);
    }
  });

  test('a lost database: exec refuses to start a new history; restore --output DB rebuilds it', () => {
    expect(0, dir, 'exec', 'lost.db', 'create table t(a); insert into t values (1), (2)');
    const copy = sha256(path.join(dir, 'lost.db'));
    fs.rmSync(path.join(dir, 'lost.db'));
    const r = expect(1, dir, 'exec', 'lost.db', 'select 1');
    assert.match(
      r.stderr,
      /missing or empty but its journal holds 2 snapshots.*mycelite restore lost\.db --output lost\.db/,
    );
    expect(0, dir, 'restore', 'lost.db', '--output', 'lost.db');
    assert.equal(sha256(path.join(dir, 'lost.db')), copy);
    expect(0, dir, 'verify', 'lost.db');
    assert.equal(expect(0, dir, 'exec', 'lost.db', 'select count(*) as n from t').stdout, 'n\n2\n');
  });

  test('MYCELITE_DEBUG=1 adds the stack trace', () => {
    const r = spawnSync(process.execPath, [BIN, 'log', 'missing.db'], {
      cwd: dir,
      encoding: 'utf8',
      env: { ...process.env, MYCELITE_DEBUG: '1' },
    });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^mycelite: [^\n]+\nError: [\s\S]*\n {4}at /);
  });
});

describe('progress on a terminal', () => {
  const hasScript = spawnSync('script', ['--version'], { encoding: 'utf8' }).status === 0;

  test('restore and compact show a progress line on a terminal (wiped at the end), none through a pipe or with --json', {
    skip: hasScript ? false : 'no script(1) to give it a terminal',
  }, () => {
    const dir = tempDir();
    try {
      expect(0, dir, 'exec', 'big.db', 'create table t(a)');
      for (let i = 0; i < 5; i++) expect(0, dir, 'exec', 'big.db', 'insert into t values (randomblob(5000))');
      const quote = (a: string): string => `'${a.replace(/'/g, "'\\''")}'`;
      const command = [process.execPath, BIN, 'restore', 'big.db', '--output', 'tty.db'].map(quote).join(' ');
      const tty = spawnSync('script', ['-qefc', command, '/dev/null'], { cwd: dir, encoding: 'utf8' });
      assert.equal(tty.status, 0, tty.stdout);
      assert.match(tty.stdout, /restoring: snapshots applied: 0\/6 \(0%\)/);
      const wiped = 'restoring: snapshots applied: 6/6 (100%)\r\u001b[Krestored txid 6';
      assert.ok(tty.stdout.includes(wiped), JSON.stringify(tty.stdout));
      const piped = expect(0, dir, 'restore', 'big.db', '--output', 'pipe.db');
      assert.equal(piped.stderr, '');
      assert.match(piped.stdout, /^restored txid 6 /);
      const onTty = (...args: string[]) => {
        const c = [process.execPath, BIN, ...args].map(quote).join(' ');
        const r = spawnSync('script', ['-qefc', c, '/dev/null'], { cwd: dir, encoding: 'utf8' });
        assert.equal(r.status, 0, r.stdout);
        return r.stdout;
      };
      assert.doesNotMatch(onTty('compact', 'big.db', '--retain', 'forever:1d', '--json'), /compacting/);
      expect(0, dir, 'exec', 'big.db', 'insert into t values (1)');
      const compacted = onTty('compact', 'big.db', '--retain', 'forever:1d');
      assert.match(compacted, /compacting: snapshots merged: 0\/\d+ \(0%\)/);
      assert.match(compacted, /compacted: /);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('exec output', () => {
  let dir: string;
  before(() => {
    dir = tempDir();
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('exec --help shows the escapes as they are printed', () => {
    const help = expect(0, dir, 'exec', '--help').stdout;
    assert.match(help, /inside a value as \\t, \\n,\n\\r or \\\\ \(one line per row\)/);
    assert.doesNotMatch(help, /\r|\t/, 'no raw tab or carriage return in the help text');
  });

  test('tabs, newlines, carriage returns and backslashes in values are escaped: one line per row', () => {
    const sql =
      "select 'a' || char(9) || 'b' as \"x\ty\", 'line1' || char(10) || 'line2' || char(13) as v, 'C:\\dir' as p";
    const r = expect(0, dir, 'exec', 'escape.db', sql);
    assert.equal(r.stdout, 'x\\ty\tv\tp\na\\tb\tline1\\nline2\\r\tC:\\\\dir\n');
    const json = JSON.parse(expect(0, dir, 'exec', 'escape.db', sql, '--json').stdout);
    assert.deepEqual(json, { 'x\ty': 'a\tb', v: 'line1\nline2\r', p: 'C:\\dir' });
  });

  test('only the last statement prints; strings, triggers and comments do not confuse the split', () => {
    const sql = `
      create table t(a, b);
      create trigger tr after insert on t begin update t set b = 'x;y' where rowid = new.rowid; end;
      insert into t(a) values ('semi;colon'), ('quote''s; here');
      select a, b from t order by rowid; -- a trailing comment; with a semicolon
      /* and a block; comment */`;
    const r = expect(0, dir, 'exec', 'app.db', sql);
    assert.equal(r.stdout, "a\tb\nsemi;colon\tx;y\nquote's; here\tx;y\n");
  });

  test('value formats: NULL, integers, reals, blobs (hex), big integers', () => {
    const sql =
      "select null as n, 42 as i, 1.0 as r1, 0.1 as r2, 1e300 as r3, x'00ff10' as b, 9007199254740993 as big";
    assert.equal(
      expect(0, dir, 'exec', 'app.db', sql).stdout,
      'n\ti\tr1\tr2\tr3\tb\tbig\n\t42\t1.0\t0.1\t1.0e+300\t00ff10\t9007199254740993\n',
    );
    assert.deepEqual(JSON.parse(expect(0, dir, 'exec', 'app.db', sql, '--json').stdout), {
      n: null,
      i: 42,
      r1: 1,
      r2: 0.1,
      r3: 1e300,
      b: '00ff10',
      big: '9007199254740993',
    });
  });

  test('no rows: no header; a statement without rows prints nothing', () => {
    expect(0, dir, 'exec', 'app.db', 'create table e(x)');
    assert.equal(expect(0, dir, 'exec', 'app.db', 'select * from e').stdout, '');
    assert.equal(expect(0, dir, 'exec', 'app.db', 'select * from e', '--json').stdout, '');
    assert.equal(expect(0, dir, 'exec', 'app.db', 'insert into e values (1)').stdout, '');
    assert.equal(expect(0, dir, 'exec', 'app.db', '--', '-- nothing at all').stdout, '');
  });

  test('insert ... returning as the last statement prints its rows', () => {
    const r = expect(0, dir, 'exec', 'app.db', 'insert into e values (7), (8) returning x');
    assert.equal(r.stdout, 'x\n7\n8\n');
  });
});

describe('statement splitting (unit)', () => {
  test('splitLastStatement', async () => {
    const sqlite3 = await loadSqlite();
    const split = (sql: string) => splitLastStatement(sqlite3, sql);
    assert.deepEqual(split('select 1'), { before: '', last: 'select 1' });
    assert.deepEqual(split('select 1;'), { before: '', last: 'select 1;' });
    assert.deepEqual(split('a; select 2; -- c'), { before: 'a;', last: ' select 2; -- c' });
    assert.deepEqual(split('select \'x;y\'; select "q;"'), { before: "select 'x;y';", last: ' select "q;"' });
    assert.deepEqual(split('select 1;;;'), { before: '', last: 'select 1;;;' });
    assert.deepEqual(split(''), { before: '' });
    assert.deepEqual(split(' -- only ; a comment'), { before: ' -- only ; a comment' });
    const trigger = 'create trigger x after insert on t begin select 1; select 2; end;';
    assert.deepEqual(split(`${trigger} select 3`), { before: trigger, last: ' select 3' });
    assert.deepEqual(split(trigger), { before: '', last: trigger });
  });

  test('isTrivia and formatReal', () => {
    assert.equal(isTrivia(' ;\n-- x\n/* y */ ;'), true);
    assert.equal(isTrivia('/* y */ x'), false);
    assert.equal(formatReal(2), '2.0');
    assert.equal(formatReal(0.1 + 0.2), '0.3');
    assert.equal(formatReal(123456789012345680000), '1.23456789012346e+20');
    assert.equal(formatReal(0.0001), '0.0001');
    assert.equal(formatReal(0.00001), '1.0e-05');
    assert.equal(formatReal(-1.5), '-1.5');
  });
});

describe('compact', () => {
  test('--help, --dry-run changes nothing, compaction keeps what the policy names, dropped points are clear errors', () => {
    const dir = tempDir();
    expect(0, dir, 'exec', 'app.db', 'create table t(a); insert into t values (1)');
    for (let i = 2; i <= 6; i++) expect(0, dir, 'exec', 'app.db', `insert into t values (${i})`);
    const help = expect(0, dir, 'compact', '--help').stdout;
    assert.match(help, /--retain <POLICY>/);
    assert.match(help, /24h:all,30d:1h,forever:1d/);
    assert.match(help, /--dry-run/);
    const journal = path.join(dir, 'app.db-mycelite', 'journal');
    const before = fs.readFileSync(journal);
    const later = new Date(Date.now() + 3 * 86_400_000).toISOString();
    const dry = JSON.parse(
      expect(
        0,
        dir,
        'compact',
        'app.db',
        '--retain',
        '1h:all,forever:1d',
        '--now',
        later,
        '--dry-run',
        '--json',
      ).stdout,
    );
    assert.equal(dry.dryRun, true);
    assert.equal(dry.pointsBefore, 7);
    assert.ok(dry.pointsDropped > 0);
    assert.ok(fs.readFileSync(journal).equals(before), 'a dry run leaves the journal alone');
    assert.equal(fs.existsSync(path.join(dir, 'app.db-mycelite', 'history')), false);
    const out = expect(0, dir, 'compact', 'app.db', '--retain', '1h:all,forever:1d', '--now', later).stdout;
    assert.match(out, /^compacted: 7 restorable points → \d+ /);
    const log = expect(0, dir, 'log', 'app.db', '--json')
      .stdout.trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.equal(log[0].in, 'history');
    assert.equal(log[0].checkpoint, true);
    assert.equal(log[log.length - 1].txid, 7);
    const dropped = expect(1, dir, 'restore', 'app.db', '--txid', '1', '--output', 'old.db');
    assert.match(dropped.stderr, /txid 1 is before the oldest restorable point, txid \d+/);
    expect(0, dir, 'restore', 'app.db', '--txid', String(log[0].txid), '--output', 'kept.db');
    // txid 1 created the table; txid N holds rows 1..N-1.
    const rows = String(log[0].txid - 1);
    assert.equal(expect(0, dir, 'exec', 'kept.db', 'select count(*) from t').stdout.split('\n')[1], rows);
    assert.equal(
      expect(0, dir, 'exec', 'app.db', '--at', String(log[0].txid), 'select count(*) from t').stdout.split(
        '\n',
      )[1],
      rows,
    );
    expect(0, dir, 'verify', 'app.db');
    expect(0, dir, 'exec', 'app.db', 'insert into t values (7)');
    expect(0, dir, 'verify', 'app.db');
    const bad = expect(2, dir, 'compact', 'app.db', '--retain', '30d:1h,24h:all');
    assert.match(bad.stderr, /ages must grow/);
    const none = expect(1, dir, 'compact', 'missing.db');
    assert.match(none.stderr, /has no Mycelite journal/);
  });
});
