// Power loss, simulated (src/files/power-loss.ts): the writer runs small versions of the benchmark
// workloads a, b and c under both durabilities, and the power is cut at its sync points (every one, or
// every k-th to keep this file under a minute; `npm run power-loss` runs them all); the files are rewritten
// to what a disk would hold — nothing unsynced (strict), or a seeded torn mix — and the writer is reopened:
// no acknowledged commit lost, replay == database, integrity ok. The same for a replica's apply. Harness:
// test/helpers/power-loss.ts.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { FaultyFileSystem } from '../src/files/faulty-fs.js';
import { PowerLossError, PowerLossFileSystem, type RecoverOptions } from '../src/files/power-loss.js';
import { JournalReader, loadHash, memorySource, SNAPSHOT_HEADER_SIZE } from '../src/format/index.js';
import { NodeFileSystem } from '../src/node/node-fs.js';
import { type MyceliteDatabase, openWith } from '../src/writer/open.js';
import { startTestHub, type TestHub } from './helpers/hub.js';
import {
  type Durability,
  powerRuntime,
  referenceStates,
  replicaCase,
  scratchDir,
  type WorkloadName,
  writerCase,
  writerSource,
} from './helpers/power-loss.js';

// One for the process: SQLite's VFS keeps the first runtime's file system.
const power = new PowerLossFileSystem(new NodeFileSystem());
const base = scratchDir('mycelite-power-');
after(() => fs.rmSync(base, { recursive: true, force: true }));
let n = 0;
const fresh = (): string => path.join(base, `c${n++}`);

test('the model: unsynced data, sizes and directory entries are dropped; synced ones kept', () => {
  const dir = fresh();
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'old'), 'old content');
  fs.mkdirSync(path.join(dir, 'other'));
  power.track(dir);
  const p = (f: string): string => path.join(dir, f);
  // A file synced, its directory synced: kept. Then an unsynced overwrite and growth: dropped.
  const a = power.open(p('a'), { create: true });
  a.write(new TextEncoder().encode('durable'), 0);
  a.sync();
  power.syncDir(p('a'));
  a.write(new TextEncoder().encode('DURABLE and more'), 0);
  // A file synced but its directory not: gone.
  const b = power.open(p('b'), { create: true });
  b.write(new Uint8Array([1, 2, 3]), 0);
  b.sync();
  // A rename without a directory sync: undone; a delete without one: undone.
  const c = power.open(p('c.tmp'), { create: true });
  c.write(new Uint8Array([9]), 0);
  c.sync();
  power.rename(p('c.tmp'), p('old'));
  power.delete(p('a'));
  // A synced truncate: durable (in another directory: syncing this one would make the above durable).
  const d = power.open(p('other/d'), { create: true });
  d.write(new Uint8Array(100), 0);
  d.sync();
  power.syncDir(p('other/d'));
  d.truncate(10);
  d.sync();
  power.crashAt({ nth: 1 });
  assert.throws(() => d.sync(), PowerLossError);
  assert.throws(() => d.write(new Uint8Array(1), 0), PowerLossError, 'the world stopped');
  for (const h of [a, b, c, d]) h.close();
  power.recover();
  power.untrack();
  assert.equal(fs.readFileSync(p('a'), 'utf8'), 'durable');
  assert.equal(fs.existsSync(p('b')), false);
  assert.equal(fs.existsSync(p('c.tmp')), false);
  assert.equal(fs.readFileSync(p('old'), 'utf8'), 'old content');
  assert.equal(fs.statSync(p('other/d')).size, 10);
});

test('the model: a directory whose creation was not synced loses its files; a failed sync never makes its writes durable (fsyncgate)', () => {
  const dir = fresh();
  fs.mkdirSync(path.join(dir, 'other'), { recursive: true });
  const faulty = new FaultyFileSystem(new NodeFileSystem());
  const pl = new PowerLossFileSystem(faulty);
  pl.track(dir);
  const sub = path.join(dir, 'sub');
  pl.mkdir(sub);
  const f = pl.open(path.join(sub, 'f'), { create: true });
  f.write(new Uint8Array([1]), 0);
  f.sync();
  pl.syncDir(path.join(sub, 'f'));
  f.close();
  const gPath = path.join(dir, 'other', 'g');
  const g = pl.open(gPath, { create: true });
  pl.syncDir(gPath);
  g.write(new Uint8Array([1, 1]), 0);
  g.sync();
  g.write(new Uint8Array([2, 2]), 0);
  faulty.arm({ label: 'db.sync', nth: 1, kind: 'EIO' });
  assert.throws(() => g.sync(), /EIO/);
  g.sync(); // "succeeds": the kernel forgot the pages it could not write
  g.write(new Uint8Array([3]), 1);
  g.sync();
  g.close();
  pl.recover();
  pl.untrack();
  assert.equal(fs.existsSync(path.join(sub, 'f')), false, 'sub/ itself was never made durable');
  assert.deepEqual([...fs.readFileSync(gPath)], [1, 3], 'the write whose sync failed is not durable');
});

const DURABILITIES: Durability[] = ['journal', 'sqlite'];
/**
 * With durability 'sqlite' a commit is SQLite's: in DELETE mode under FULL, SQLite does not fsync the
 * directory after deleting its rollback journal, so a power cut right after a commit can bring the journal
 * back and roll the commit back (SQLite documents it; EXTRA fsyncs the directory). Tested below.
 */
const SYNCHRONOUS: Record<Durability, string> = { journal: 'FULL', sqlite: 'EXTRA' };
const WORKLOADS: WorkloadName[] = ['a', 'b', 'c'];

/**
 * Crash points of a sweep: every sync point strictly (every `sparse`-th for long runs), every other one
 * with the directory changes kept, every third torn. `npm run power-loss` runs every point every way.
 */
function plan(total: number, sparse: number): { k: number; recover: RecoverOptions }[] {
  const out: { k: number; recover: RecoverOptions }[] = [];
  for (let k = 1; k <= total; k++) {
    if (k % sparse === 0 || k === total) out.push({ k, recover: {} });
    if (k % (2 * sparse) === 1) out.push({ k, recover: { keepDirectoryChanges: true } });
    if (k % (3 * sparse) === 2) out.push({ k, recover: { seed: 7919 * k } });
  }
  return out;
}

const describe = (r: RecoverOptions): string =>
  r.seed !== undefined ? `torn ${r.seed}` : r.keepDirectoryChanges ? 'directory changes kept' : 'strict';

for (const durability of DURABILITIES)
  for (const w of WORKLOADS)
    test(`durability ${durability}, workload ${w}, synchronous ${SYNCHRONOUS[durability]}: the power cut at the writer's sync points: nothing acknowledged lost, replay == database`, async (t) => {
      await loadHash();
      const states = await referenceStates(w);
      const sync = SYNCHRONOUS[durability];
      const dry = await writerCase(power, fresh(), durability, w, states, { at: 'end' }, sync);
      assert.deepEqual(dry.problems, []);
      assert.equal(dry.acked, states.length - 1);
      const total = dry.points.length;
      const failures: string[] = [];
      const cases = plan(total, w === 'b' ? 4 : 1);
      for (const { k, recover } of cases) {
        const r = await writerCase(power, fresh(), durability, w, states, { at: { nth: k }, recover }, sync);
        for (const p of r.problems) failures.push(`#${k} (${dry.points[k - 1]}, ${describe(recover)}): ${p}`);
      }
      t.diagnostic(`${total} sync points, ${cases.length + 1} cases`);
      assert.deepEqual(failures, []);
    });

test("durability sqlite: the first two commits of a new database, 8 torn recoveries at each sync point (a journal's name durable before SQLite writes the database; a snapshot its hot journal rolls back cut before judging an empty file)", async () => {
  await loadHash();
  const states = await referenceStates('a');
  const dry = await writerCase(power, fresh(), 'sqlite', 'a', states, { at: 'end' }, 'EXTRA');
  // Up to the second commit's journal fsync: open, then CREATE TABLE and CREATE INDEX.
  const last = dry.points.indexOf('journal.sync', dry.points.indexOf('journal.sync') + 1) + 2;
  const failures: string[] = [];
  for (let k = 1; k <= last; k++) {
    for (let seed = 1; seed <= 8; seed++) {
      const r = await writerCase(
        power,
        fresh(),
        'sqlite',
        'a',
        states,
        { at: { nth: k }, recover: { seed } },
        'EXTRA',
      );
      for (const p of r.problems) failures.push(`#${k} (${dry.points[k - 1]}, torn ${seed}): ${p}`);
    }
  }
  assert.deepEqual(failures, []);
});

test("durability sqlite: the power cut in a new database's first commit with our journal's pages written back and the database's not: SQLite's hot journal rolls it back, its snapshot is cut", async () => {
  await loadHash();
  const states = await referenceStates('a');
  const dry = await writerCase(power, fresh(), 'sqlite', 'a', states, { at: 'end' }, 'EXTRA');
  // The first commit's database fsync (ours runs beside it and has not finished).
  const k = dry.points.indexOf('db.sync', dry.points.indexOf('journal.sync')) + 1;
  assert.ok(k > 0);
  const recover = { keepUnsynced: (p: string) => p.endsWith('-mycelite/journal') };
  const r = await writerCase(power, fresh(), 'sqlite', 'a', states, { at: { nth: k }, recover }, 'EXTRA');
  assert.deepEqual(r.problems, []);
  assert.equal(r.state, 0);
});

test("durability sqlite, DELETE under synchronous FULL: a power cut right after a commit may roll back that commit (SQLite's rule, its journal's deletion is not fsynced), never more; EXTRA keeps it", async () => {
  await loadHash();
  const states = await referenceStates('a');
  // The power goes after the workload: the last commit's journal deletion was never made durable.
  const full = await writerCase(power, fresh(), 'sqlite', 'a', states, { at: 'end' }, 'FULL');
  assert.deepEqual(full.problems, [
    `lost: acknowledged ${full.acked} commits, the database has ${full.acked - 1}`,
  ]);
  assert.equal(
    full.state,
    full.acked - 1,
    'the last commit rolled back, and only it (replay == database, integrity ok)',
  );
  const extra = await writerCase(power, fresh(), 'sqlite', 'a', states, { at: 'end' }, 'EXTRA');
  assert.deepEqual(extra.problems, []);
  assert.equal(extra.state, extra.acked);
});

test('a journal whose last snapshot has its header but not its body, zeros after it (a power cut while appending ahead of zeros): a torn tail, cut at open', async () => {
  await loadHash();
  const dir = fresh();
  fs.mkdirSync(dir);
  const file = path.join(dir, 'j.db');
  const db = await openWith(powerRuntime(power), file);
  db.exec('CREATE TABLE t(x)');
  db.exec('INSERT INTO t VALUES (randomblob(5000))');
  const last = db.position().txid;
  db.close();
  const jpath = `${file}-mycelite/journal`;
  const bytes = new Uint8Array(fs.readFileSync(jpath));
  const snaps = [...new JournalReader(memorySource(bytes)).snapshots()];
  const s = snaps[snaps.length - 1]!;
  assert.equal(s.txid, last);
  // The header reached the disk, the body's pages did not (zeros), and the zeros written ahead follow.
  const torn = new Uint8Array(s.offset + s.length + 65536);
  torn.set(bytes.subarray(0, s.offset + SNAPSHOT_HEADER_SIZE));
  fs.writeFileSync(jpath, torn);
  const r = new JournalReader(memorySource(torn));
  const seen = [...r.snapshots()].map((x) => x.txid);
  assert.deepEqual(
    seen,
    snaps.slice(0, -1).map((x) => x.txid),
    'the damaged last snapshot is not read as one',
  );
  assert.equal(r.tornBytes, torn.length - s.offset);
});

test('replica: the power cut at every sync point of its apply (a reset, single snapshots, batches), strict and with the directory changes kept, torn at every third: the replica is the writer at its position and continues', async (t) => {
  await loadHash();
  const srcDir = fresh();
  fs.mkdirSync(srcDir);
  const src = await writerSource(power, srcDir, 'c');
  const dry = await replicaCase(power, fresh(), src, { at: 'end' });
  assert.deepEqual(dry.problems, []);
  const failures: string[] = [];
  const cases = plan(dry.points.length, 1);
  for (const { k, recover } of cases) {
    const r = await replicaCase(power, fresh(), src, { at: { nth: k }, recover });
    for (const p of r.problems) failures.push(`#${k} (${dry.points[k - 1]}, ${describe(recover)}): ${p}`);
  }
  t.diagnostic(`${dry.points.length} sync points, ${cases.length + 1} cases`);
  assert.deepEqual(failures, []);
});

test('replica: its first applies, 8 torn recoveries at each sync point (its inflight marker keeps one size)', async () => {
  await loadHash();
  const srcDir = fresh();
  fs.mkdirSync(srcDir);
  const src = await writerSource(power, srcDir, 'a');
  const dry = await replicaCase(power, fresh(), src, { at: 'end' });
  // Up to the second batch's marker.
  const marks = dry.points.map((l, i) => (l === 'inflight.sync' ? i + 1 : 0)).filter((i) => i > 0);
  const failures: string[] = [];
  for (let k = 1; k <= marks[3]!; k++) {
    for (let seed = 1; seed <= 8; seed++) {
      const r = await replicaCase(power, fresh(), src, { at: { nth: k }, recover: { seed } });
      for (const p of r.problems) failures.push(`#${k} (${dry.points[k - 1]}, torn ${seed}): ${p}`);
    }
  }
  assert.deepEqual(failures, []);
});

/** Hub options for the shared database 'budget' whose requests fail (as offline) while `cut` says so. */
async function budgetHub(
  h: TestHub,
  cut: (input: Parameters<typeof fetch>[0], init?: RequestInit) => boolean,
) {
  return {
    url: h.url,
    db: 'budget',
    token: await h.token('budget', 'writer'),
    fetch: (async (input, init) => {
      if (cut(input, init)) throw new TypeError('fetch failed (offline)');
      return fetch(input, init);
    }) as typeof fetch,
  };
}

const idle = (d: MyceliteDatabase): Promise<void> =>
  (d.sync as unknown as { whenIdle(): Promise<void> }).whenIdle();

test('shared device: a power cut after a rebase renumbered the position its last fsynced marker names, then more commits: nothing acknowledged lost, no outside change', async () => {
  // The synced marker is fsynced at open (and when pairing takes commits back); a checkpoint between
  // opens writes it without an fsync, so a power cut may bring back the one written at open. A device
  // opened with pending changes has that marker after its base; a rebase renumbers the journal there
  // (the hub's snapshot comes first), so the txid it names holds another state afterwards, and a power
  // cut after more commits (their write-backs not yet durable) must still redo them from the journal.
  await loadHash();
  const h = await startTestHub();
  try {
    const rt = powerRuntime(power);
    let offline = false;
    const hub = () => budgetHub(h, () => offline);
    const dir = fresh();
    fs.mkdirSync(dir);
    const aPath = path.join(dir, 'a.db');
    let a = await openWith(rt, aPath, { shared: true, hub: await hub() });
    a.exec('create table entries(id text primary key, who text)');
    await a.sync!.flush(20_000);
    await idle(a);
    const bDir = fresh();
    fs.mkdirSync(bDir);
    const b = await openWith(rt, path.join(bDir, 'b.db'), { shared: true, hub: await hub() });
    await idle(b);
    // A commits three changes offline and is opened again (still offline): its marker, fsynced at that
    // open, names its head after the base.
    offline = true;
    for (const id of ['a1', 'a2', 'a3']) a.prepare('insert into entries values (?, ?)').run(id, 'alice');
    a.close();
    power.track(dir);
    a = await openWith(rt, aPath, { shared: true, hub: await hub() });
    assert.equal(a.sync!.pending(), 3);
    offline = false;
    b.prepare('insert into entries values (?, ?)').run('b1', 'bob');
    await b.sync!.flush(20_000);
    // A's rebase: the hub's b1 after the base, then a1..a3 again, renumbered.
    const rebased = new Promise<void>((r) => a.sync!.on('received', () => r()));
    await rebased;
    await a.sync!.flush(20_000);
    await idle(a);
    offline = true;
    for (const id of ['a4', 'a5', 'a6']) a.prepare('insert into entries values (?, ?)').run(id, 'alice');
    const head = a.position().txid;
    power.crash('end');
    try {
      a.close();
    } catch {
      // the power is off
    }
    power.recover();
    power.untrack();
    b.close();
    const warnings: string[] = [];
    const again = await openWith(rt, aPath, {
      shared: true,
      onWarning: (w) => warnings.push(`${w.code}: ${w.message}`),
    });
    try {
      assert.deepEqual(warnings, [], 'no outside change: the journal redoes the commits the file lost');
      assert.deepEqual(
        again.prepare('select id from entries order by id').raw().all(),
        [['a1'], ['a2'], ['a3'], ['a4'], ['a5'], ['a6'], ['b1']],
        'every acknowledged commit is there',
      );
      assert.equal(again.position().txid, head);
    } finally {
      again.close();
    }
  } finally {
    await h.close();
  }
});

test("shared device: the power cut at each journal fsync of a rebase's re-apply, the database file's writes kept: no outside change, nothing lost", async (t) => {
  // A rebase puts the file at the hub's head (one snapshot, fsynced), then applies the pending changes
  // again, each a commit. Their write-backs may reach the disk before a power cut (the kernel writes the
  // file's pages back when it likes): every state they leave must be durable in the journal first, or
  // recovery finds a file no journal state explains and records it as an outside change.
  await loadHash();
  const h = await startTestHub();
  try {
    const rt = powerRuntime(power);
    let offline = false;
    const hub = (cut = () => offline) => budgetHub(h, cut);
    const failures: string[] = [];
    let reached = 0;
    // The first journal fsync after the going online is the reset's; the re-apply's follow (k ≥ 2).
    for (let k = 2; k <= 6; k++) {
      offline = false;
      const dir = fresh();
      fs.mkdirSync(dir);
      const aPath = path.join(dir, 'a.db');
      let a = await openWith(rt, aPath, { shared: true, hub: await hub() });
      a.exec('create table entries(id text primary key, body blob); create table junk(x blob)');
      for (let i = 0; i < 30; i++) a.prepare('insert into junk values (randomblob(3000))').run();
      await a.sync!.flush(20_000);
      await idle(a);
      const bDir = fresh();
      fs.mkdirSync(bDir);
      const b = await openWith(rt, path.join(bDir, 'b.db'), { shared: true, hub: await hub(() => false) });
      await idle(b);
      offline = true;
      for (const id of ['a1', 'a2', 'a3'])
        a.prepare('insert into entries values (?, randomblob(3000))').run(id);
      // The hub frees junk's pages: A's changes, applied again on the hub's state, reuse them.
      b.exec('drop table junk');
      await b.sync!.flush(20_000);
      a.close();
      power.track(dir);
      a = await openWith(rt, aPath, { shared: true, hub: await hub() });
      power.crashAt({ label: 'journal.sync', nth: k });
      offline = false;
      for (let i = 0; i < 100 && !power.crashed; i++) await new Promise((r) => setTimeout(r, 50));
      offline = true;
      const crashed = power.crashed;
      try {
        a.close();
      } catch {
        // the power is off
      }
      power.recover({ keepUnsynced: (p) => p === aPath });
      power.untrack();
      b.close();
      if (!crashed) break;
      reached = k;
      const warnings: string[] = [];
      const again = await openWith(rt, aPath, {
        shared: true,
        onWarning: (w) => warnings.push(`${w.code}: ${w.message}`),
      });
      try {
        for (const w of warnings) failures.push(`#${k}: ${w}`);
        const ids = again.prepare('select id from entries order by id').raw().all();
        if (JSON.stringify(ids) !== JSON.stringify([['a1'], ['a2'], ['a3']]))
          failures.push(`#${k}: entries ${JSON.stringify(ids)}`);
        const pending = again.prepare('pragma integrity_check').raw().all();
        if (JSON.stringify(pending) !== JSON.stringify([['ok']]))
          failures.push(`#${k}: integrity ${JSON.stringify(pending)}`);
      } finally {
        again.close();
      }
    }
    t.diagnostic(`the power cut at journal fsyncs 2..${reached} after going online`);
    assert.ok(reached >= 2, 'the power was cut within the rebase');
    assert.deepEqual(failures, []);
  } finally {
    await h.close();
  }
});

test('shared device: the power cut at every sync point of a rebase of four pending changes, strict, with the file kept, torn, and as a process crash: no outside change, every acknowledged commit kept', async (t) => {
  // The re-apply commits without fsyncs under a pin (src/shared/suffix.ts): whatever of its journal
  // appends and of the file's write-backs reached the disk (none, some, torn), the next open undoes it or
  // finds it finished, never an outside change. One device state, copied for each power cut; the hub
  // is never pushed to (the rebased changes are refused), so every copy rebases over the same state.
  await loadHash();
  const h = await startTestHub();
  try {
    const rt = powerRuntime(power);
    let offline = false;
    let rebased = false;
    const hub = () =>
      budgetHub(h, (input, init) => {
        const push = init?.method === 'POST' && String(input).includes('/snapshots');
        return offline || (rebased && push);
      });
    const dir = fresh();
    fs.mkdirSync(dir);
    const aPath = path.join(dir, 'a.db');
    const a = await openWith(rt, aPath, { shared: true, hub: await hub() });
    a.exec('create table entries(id text primary key, body blob); create table junk(x blob)');
    for (let i = 0; i < 30; i++) a.prepare('insert into junk values (randomblob(3000))').run();
    await a.sync!.flush(20_000);
    await idle(a);
    const bDir = fresh();
    fs.mkdirSync(bDir);
    const b = await openWith(rt, path.join(bDir, 'b.db'), { shared: true, hub: await hub() });
    await idle(b);
    offline = true;
    const ids = ['a1', 'a2', 'a3', 'a4'];
    for (const id of ids) a.prepare('insert into entries values (?, randomblob(3000))').run(id);
    await a.sync!.close();
    a.close();
    offline = false;
    // The hub frees junk's pages and adds a row: A's changes, applied again on its state, reuse them.
    b.exec('drop table junk');
    b.prepare('insert into entries values (?, randomblob(10))').run('b1');
    await b.sync!.flush(20_000);
    await b.sync!.close();
    b.close();
    const modes: [string, (k: number, db: string) => RecoverOptions][] = [
      ['strict', () => ({})],
      ['file kept', (_, db) => ({ keepUnsynced: (p) => p === db })],
      ['torn', (k) => ({ seed: 1000 + k })],
      ['all kept (a process crash)', () => ({ keepUnsynced: () => true, keepDirectoryChanges: true })],
    ];
    const failures: string[] = [];
    const reached: string[] = [];
    let finished = 0;
    for (const [mode, recovery] of modes) {
      let k = 1;
      for (; k < 60; k++) {
        const cDir = fresh();
        fs.cpSync(dir, cDir, { recursive: true });
        const cPath = path.join(cDir, 'a.db');
        power.track(cDir);
        offline = true;
        rebased = false;
        const c = await openWith(rt, cPath, { shared: true, hub: await hub() });
        c.sync!.on('received', () => {
          rebased = true;
        });
        power.crashAt({ nth: k });
        offline = false;
        for (let i = 0; i < 200 && !power.crashed && !rebased; i++)
          await new Promise((r) => setTimeout(r, 25));
        offline = true;
        const crashed = power.crashed;
        try {
          await c.sync!.close();
        } catch {
          // the power is off
        }
        try {
          c.close();
        } catch {
          // the power is off
        }
        power.recover(crashed ? recovery(k, cPath) : {});
        power.untrack();
        if (!crashed) break;
        const warnings: string[] = [];
        const again = await openWith(rt, cPath, {
          shared: true,
          onWarning: (w) => warnings.push(`${w.code}: ${w.message}`),
        });
        try {
          for (const w of warnings) failures.push(`${mode} #${k}: ${w}`);
          const got = JSON.stringify(again.prepare('select id from entries order by id').raw().all());
          const mine = JSON.stringify(ids.map((id) => [id]));
          const all = JSON.stringify([...ids, 'b1'].map((id) => [id]));
          if (got !== mine && got !== all) failures.push(`${mode} #${k}: entries ${got}`);
          if (got === all) finished++;
          const pending = again.sync?.pending();
          if (got === mine && pending !== undefined && pending !== ids.length)
            failures.push(`${mode} #${k}: ${pending} pending`);
          const integrity = JSON.stringify(again.prepare('pragma integrity_check').raw().all());
          if (integrity !== '[["ok"]]') failures.push(`${mode} #${k}: integrity ${integrity}`);
        } finally {
          again.close();
        }
      }
      reached.push(`${mode} 1..${k - 1}`);
    }
    t.diagnostic(
      `the power cut at sync points ${reached.join(', ')} after going online; ${finished} found the rebase finished`,
    );
    assert.ok(
      reached.every((r) => !r.endsWith('..0')),
      'the power was cut within the rebase',
    );
    assert.deepEqual(failures, []);
  } finally {
    await h.close();
  }
});
