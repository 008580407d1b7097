/**
 * Native SQLite applications in WAL mode for the sidecar tests: the database they write, the state each
 * transaction k leaves (computed from k alone, the same workload as wal-writer.py and wal-writer.mjs),
 * and a check that a journal's every snapshot is one of those states.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import {
  FLAG_OUTSIDE,
  JournalReader,
  loadHash,
  memorySource,
  type SnapshotInfo,
  walkPatches,
} from '../../src/format/index.js';
import { HELPERS } from './util.js';

/** Python 3 with its sqlite3 module, or undefined (the reason is logged by the caller). */
export function python(): string | undefined {
  for (const p of ['python3', '/usr/bin/python3']) {
    const r = spawnSync(p, ['-c', 'import sqlite3; print(sqlite3.sqlite_version)'], { encoding: 'utf8' });
    if (r.status === 0) return p;
  }
  return undefined;
}

/** Creates the application's database: WAL mode, auto_vacuum FULL (so deletes shrink it), k = 0. */
export function createWalDb(file: string): void {
  const db = new BetterSqlite3(file);
  db.pragma('auto_vacuum = FULL');
  db.pragma('journal_mode = WAL');
  db.exec(
    'create table t(id integer primary key, v text); create table big(b blob); create table meta(k integer); insert into meta values (0)',
  );
  db.close();
}

/**
 * Transaction k of the workload (the same as wal-writer.py and wal-writer.mjs) on a native connection of
 * this process; throws SQLITE_BUSY when the write lock is held elsewhere (nothing is written then).
 */
export function walAppTransaction(con: BetterSqlite3.Database): (k: number) => void {
  const ins = con.prepare('insert into t(id, v) values (?, ?)');
  const upd = con.prepare("update t set v = v || 'u' where id = ?");
  const del = con.prepare('delete from t where id = ?');
  const meta = con.prepare('update meta set k = ?');
  return con.transaction((k: number) => {
    ins.run(k, `r${k}${'x'.repeat(k % 97)}`);
    if (k % 3 === 0) upd.run(Math.floor(k / 2));
    if (k % 5 === 0) del.run(k - 4);
    if (k % 50 === 0) {
      con.exec(
        'with recursive c(x) as (select 1 union all select x + 1 from c where x < 100) insert into big(b) select randomblob(1000) from c',
      );
    }
    if (k % 50 === 25) con.exec('delete from big');
    meta.run(k);
  });
}

/** Starts a writer process: `kind` python (wal-writer.py) or node (better-sqlite3, wal-writer.mjs). */
export function startWriter(
  kind: 'python' | 'node',
  file: string,
  n: number,
  mode: 'auto' | 'truncate',
  pauseMs = 0,
  /** wal_autocheckpoint (pages) of the node writer (default SQLite's 1000). */
  autocheckpoint?: number,
): { proc: ChildProcess; done: Promise<string> } {
  const args = [file, String(n), mode, String(pauseMs)];
  if (autocheckpoint !== undefined) {
    if (kind !== 'node') throw new Error('autocheckpoint: node writer only');
    args.push(String(autocheckpoint));
  }
  const proc =
    kind === 'python'
      ? spawn(python()!, [path.join(HELPERS, 'wal-writer.py'), ...args], {
          stdio: ['ignore', 'pipe', 'pipe'],
        })
      : spawn(process.execPath, [path.join(HELPERS, 'wal-writer.mjs'), ...args], {
          stdio: ['ignore', 'pipe', 'pipe'],
        });
  let out = '';
  let err = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  const done = new Promise<string>((resolve, reject) =>
    proc.on('close', (code) =>
      code === 0 ? resolve(out) : reject(new Error(`${kind} writer exited ${code}: ${err}`)),
    ),
  );
  return { proc, done };
}

/** The state transaction k leaves: the rows of t as "id:v" joined with ',', then "|big=" count. */
export function expectedState(k: number): string {
  const rows = new Map<number, string>();
  let big = 0;
  for (let i = 1; i <= k; i++) {
    rows.set(i, `r${i}${'x'.repeat(i % 97)}`);
    if (i % 3 === 0 && rows.has(Math.floor(i / 2)))
      rows.set(Math.floor(i / 2), `${rows.get(Math.floor(i / 2))}u`);
    if (i % 5 === 0) rows.delete(i - 4);
    if (i % 50 === 0) big += 100;
    if (i % 50 === 25) big = 0;
  }
  const ids = [...rows.keys()].sort((a, b) => a - b);
  return `${ids.map((id) => `${id}:${rows.get(id)}`).join(',')}|big=${big}`;
}

const STATE_SQL =
  "select (select k from meta) as k, (select coalesce(group_concat(id || ':' || v, ','), '') from (select id, v from t order by id)) || '|big=' || (select count(*) from big) as s";

/** k and the state of a database image (a WAL-format image is read as a rollback one). */
export function stateOfImage(image: Uint8Array): { k: number; s: string } {
  const copy = Buffer.from(image);
  copy[18] = 1;
  copy[19] = 1;
  const db = new BetterSqlite3(copy, { readonly: true });
  try {
    return db.prepare(STATE_SQL).get() as { k: number; s: string };
  } finally {
    db.close();
  }
}

/** k and the state of a database file, read with native SQLite. */
export function stateOfFile(file: string): { k: number; s: string } {
  const db = new BetterSqlite3(file, { readonly: true });
  try {
    return db.prepare(STATE_SQL).get() as { k: number; s: string };
  } finally {
    db.close();
  }
}

export interface JournalCheck {
  /** k after each snapshot, in txid order. */
  ks: number[];
  /** Snapshots flagged outside (re-bootstraps). */
  outside: SnapshotInfo[];
  last: SnapshotInfo;
  image: Buffer;
}

/**
 * Applies every snapshot of the journal in order and checks that each leaves exactly the state of some
 * transaction k of the writer, that k moves by exactly one from snapshot to snapshot (no transaction
 * missed, none merged) except at an outside snapshot, and returns what it saw.
 */
export async function checkJournal(journalPath: string): Promise<JournalCheck> {
  await loadHash();
  const src = memorySource(fs.readFileSync(journalPath));
  let image = Buffer.alloc(0);
  const ks: number[] = [];
  const outside: SnapshotInfo[] = [];
  let last: SnapshotInfo | undefined;
  let prev = -1;
  for (const s of new JournalReader(src).snapshots()) {
    const size = s.pageSize * s.dbPages;
    if (image.length !== size) {
      const next = Buffer.alloc(size);
      image.copy(next, 0, 0, Math.min(size, image.length));
      image = next;
    }
    walkPatches(src, s.offset, s, (pgno, offset, bytes) => {
      image.set(bytes, (pgno - 1) * s.pageSize + offset);
    });
    const { k, s: state } = stateOfImage(image);
    assert.equal(state, expectedState(k), `txid ${s.txid}: the state is not transaction ${k}'s`);
    if ((s.flags & FLAG_OUTSIDE) !== 0) outside.push(s);
    else if (prev >= 0) assert.equal(k, prev + 1, `txid ${s.txid} is transaction ${k}, after ${prev}`);
    assert.ok(k >= prev, `txid ${s.txid} goes back from transaction ${prev} to ${k}`);
    prev = k;
    ks.push(k);
    last = s;
  }
  assert.ok(last, 'the journal holds no snapshot');
  return { ks, outside, last, image };
}

/** The database as one file after a full checkpoint by a native connection (the WAL folded in). */
export function checkpointed(file: string): Buffer {
  const db = new BetterSqlite3(file);
  try {
    const [row] = db.pragma('wal_checkpoint(TRUNCATE)') as { busy: number }[];
    assert.equal(row!.busy, 0, 'the full checkpoint was blocked');
  } finally {
    db.close();
  }
  return fs.readFileSync(file);
}
