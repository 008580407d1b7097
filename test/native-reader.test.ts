// A native SQLite reader (better-sqlite3, another process) reads the database while this process writes
// it through Mycelite: the reader must never see a half-committed transaction or a corrupt page.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { open } from '../src/node/index.js';
import { cleanupTempDirs, HELPERS, nativeIntegrity, replayMatches, tempDir } from './helpers/util.js';

const children: ChildProcess[] = [];

after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  cleanupTempDirs();
});

interface ReaderEvent {
  ready?: boolean;
  violation?: string;
  done?: boolean;
  reads?: number;
  busy?: number;
  checks?: number;
  maxCount?: number;
}

/** Starts a native reader process on `dbPath`; collects its JSON events. */
function startReader(dbPath: string): {
  proc: ChildProcess;
  events: ReaderEvent[];
  exited: Promise<number | null>;
} {
  const proc = spawn(process.execPath, [path.join(HELPERS, 'native-reader.mjs'), dbPath], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  children.push(proc);
  const events: ReaderEvent[] = [];
  let buf = '';
  proc.stdout!.setEncoding('utf8');
  proc.stdout!.on('data', (d: string) => {
    buf += d;
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      events.push(JSON.parse(buf.slice(0, nl)) as ReaderEvent);
      buf = buf.slice(nl + 1);
    }
  });
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  return { proc, events, exited };
}

const isBusy = (e: unknown): boolean => /SQLITE_BUSY|database is locked/.test(String((e as Error)?.message));

/** Runs `fn`, retrying while SQLite says BUSY. */
async function retryBusy(fn: () => void): Promise<number> {
  for (let tries = 0; ; tries++) {
    try {
      fn();
      return tries;
    } catch (e) {
      if (!isBusy(e) || tries > 20_000) throw e;
      await sleep(tries % 10 === 0 ? 1 : 0);
    }
  }
}

for (const journalMode of ['DELETE', 'TRUNCATE', 'PERSIST']) {
  test(`native readers never see a torn transaction (journal_mode=${journalMode})`, async (t) => {
    const dir = tempDir();
    const dbPath = path.join(dir, 'shared.db');
    const db = await open(dbPath);
    let commits = 0;
    let busy = 0;
    const readers: ReturnType<typeof startReader>[] = [];
    try {
      db.pragma(`journal_mode = ${journalMode}`);
      db.exec('CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER NOT NULL, pad BLOB)');
      readers.push(startReader(dbPath), startReader(dbPath));
      const deadline = Date.now() + 10_000;
      while (!readers.every((r) => r.events.some((e) => e.ready))) {
        assert.ok(Date.now() < deadline, 'readers start');
        await sleep(10);
      }
      const insert = db.prepare('INSERT INTO t(x, pad) VALUES (?, randomblob(?))');
      const end = Date.now() + 3000;
      let round = 0;
      while (Date.now() < end) {
        round++;
        busy += await retryBusy(() => db.exec('BEGIN IMMEDIATE'));
        try {
          // 100 rows whose x sum to 0; some rows big enough for overflow pages.
          for (let k = 0; k < 50; k++) {
            const v = (round * 7919 + k * 104729) % 1_000_003;
            insert.run(v, k % 10 === 0 ? 3000 : 40);
            insert.run(-v, k % 17 === 0 ? 6000 : 10);
          }
          if (round % 10 === 0) db.exec('DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY id LIMIT 100)');
          if (round % 10 === 5) db.exec(`UPDATE t SET pad = randomblob(200) WHERE id % 13 = ${round % 13}`);
        } catch (e) {
          db.exec('ROLLBACK');
          throw e;
        }
        busy += await retryBusy(() => db.exec('COMMIT'));
        commits++;
        await sleep(0); // let the readers' output arrive
      }
    } finally {
      db.close();
      for (const r of readers) r.proc.kill('SIGTERM');
      await Promise.all(readers.map((r) => r.exited));
    }
    const violations = readers.flatMap((r) => r.events.filter((e) => e.violation).map((e) => e.violation));
    assert.deepEqual(violations, [], 'the readers saw no broken invariant and no corrupt page');
    const done = readers.map((r) => r.events.find((e) => e.done));
    for (const d of done) {
      assert.ok(d, 'each reader finished cleanly');
      assert.ok(d.reads! > 10, `reader made ${d.reads} reads`);
      assert.ok(d.checks! > 0, 'reader ran integrity_check');
    }
    t.diagnostic(
      `${commits} commits (${busy} BUSY retries); reads ${done.map((d) => `${d!.reads} (busy ${d!.busy}, checks ${d!.checks})`).join(', ')}`,
    );
    assert.ok(commits > 5, `writer committed ${commits} transactions`);
    assert.equal(nativeIntegrity(dbPath), 'ok');
    assert.ok((await replayMatches(dbPath)).ok, 'replay == database after the concurrent run');
  });
}
