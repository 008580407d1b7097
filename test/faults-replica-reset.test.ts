// Crash safety of a replica's reset (ReplicaStore.reset) on an existing replica: every labelled file
// operation the reset uses (src/files/faulty-fs.ts) fails once — at its first, middle and last call,
// with EIO, ENOSPC or a short write — for a reset within the replica's history and for another history
// (whose image also changes the page size). After the fault, the replica is recovered the way the follower
// does (recover() on the same store) or the way a crash does (closed and opened again), and must be in
// exactly one of two states: the old one (database, journal byte for byte, nothing kept aside, no new
// journal left) or the new one (the image's database, a journal holding the image, the old journal — and
// for another history the old database — kept aside byte for byte). A reset then takes it to the new one.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { type FaultKind, type FaultPlan, FaultyFileSystem } from '../src/files/faulty-fs.js';
import type { Runtime } from '../src/files/file-system.js';
import {
  decodeFileHeader,
  encodeFileHeader,
  type FileHeader,
  loadHash,
  type SnapshotHeader,
} from '../src/format/index.js';
import { writeImageSnapshot } from '../src/journal/image.js';
import { nodeRuntime } from '../src/node/index.js';
import { NodeFileSystem } from '../src/node/node-fs.js';
import { ReplicaStore } from '../src/replica/replica.js';
import { openWith } from '../src/writer/open.js';
import { prng, snapshotsAfter } from './helpers/replica.js';
import { cleanupTempDirs, fileHash, journalOf, tempDir } from './helpers/util.js';

after(() => cleanupTempDirs());

// One for the process: SQLite's VFS is installed once, with the first runtime's file system.
const faulty = new FaultyFileSystem(new NodeFileSystem());
const rt: Runtime = { fs: faulty, resolve: nodeRuntime.resolve, tempPath: nodeRuntime.tempPath };

/** A full image of the writer database at `dbPath` (its journal's head), as a hub sends it. */
function imageOf(dbPath: string): { file: FileHeader; bytes: Uint8Array; header: SnapshotHeader } {
  const { file, snaps } = snapshotsAfter(journalOf(dbPath), 0n);
  const last = snaps.at(-1)!.header;
  const chunks: Uint8Array[] = [];
  const f = nodeRuntime.fs.open(dbPath, { readonly: true });
  let header: SnapshotHeader;
  try {
    header = writeImageSnapshot(f, last, (c) => chunks.push(c.slice()));
  } finally {
    f.close();
  }
  const bytes = new Uint8Array(Buffer.concat(chunks));
  const stream = { ...file, baseTxid: last.txid - 1n, baseChecksum: last.preChecksum };
  return { file: stream, bytes, header };
}

interface Scenario {
  name: string;
  /** The replica before the reset (its files), and the database the image gives. */
  template: string;
  target: string;
  image: ReturnType<typeof imageOf>;
  other: boolean;
}

/** Copies a replica (database and journal directory, lock aside) to `to`. */
function copyReplica(from: string, to: string): void {
  fs.copyFileSync(from, to);
  fs.cpSync(`${from}-mycelite`, `${to}-mycelite`, { recursive: true });
}

/**
 * What is beside the replica `r`: names starting with its name, but for its own two and SQLite's
 * rollback journal (a kill before SQLite wrote its header leaves one that is not hot: SQLite ignores it).
 */
function beside(r: string): string[] {
  const base = path.basename(r);
  const own = [base, `${base}-mycelite`, `${base}-journal`];
  return fs
    .readdirSync(path.dirname(r))
    .filter((n) => n.startsWith(base) && !own.includes(n))
    .sort();
}

/** 'old' or 'new' when the replica at `r` is wholly in that state, else what is wrong. */
function stateOf(s: Scenario, r: string): string {
  const problems: string[] = [];
  const leftovers = fs.readdirSync(`${r}-mycelite`).filter((n) => /journal\.reset|partial/.test(n));
  if (leftovers.length > 0) problems.push(`left behind: ${leftovers.join(' ')}`);
  const kept = beside(r);
  const db = fileHash(r);
  const journal = fileHash(journalOf(r));
  if (db === fileHash(s.template) && journal === fileHash(journalOf(s.template)) && kept.length === 0) {
    return problems.length > 0 ? problems.join('; ') : 'old';
  }
  if (db !== fileHash(s.target)) problems.push('the database is neither the old one nor the image');
  const snaps = snapshotsAfter(journalOf(r), 0n).snaps;
  if (snaps.length !== 1 || snaps[0]!.header.txid !== s.image.header.txid)
    problems.push('the journal is not the new history');
  const want = s.other ? 2 : 1;
  if (kept.length !== want) problems.push(`kept aside: ${kept.join(' ') || 'nothing'}`);
  const keptDb = kept.find((n) => !n.endsWith('-mycelite'));
  const hashOf = (name: string | undefined, file = ''): string | undefined => {
    const f = `${path.dirname(r)}/${name}${file}`;
    return name && fs.existsSync(f) ? fileHash(f) : undefined;
  };
  if (
    hashOf(
      kept.find((n) => n.endsWith('-mycelite')),
      '/journal',
    ) !== fileHash(journalOf(s.template))
  )
    problems.push(`the old journal is not kept byte for byte (${kept.join(' ')})`);
  if (s.other && hashOf(keptDb) !== fileHash(s.template))
    problems.push('the old database is not kept byte for byte');
  return problems.length > 0 ? problems.join('; ') : 'new';
}

async function reset(store: ReplicaStore, s: Scenario): Promise<void> {
  await store.reset(s.image.file, s.image.bytes, s.image.header);
}

/** One reset with `plan` armed, recovered in `mode`; returns what went wrong. */
async function runCase(
  s: Scenario,
  r: string,
  plan: FaultPlan | undefined,
  mode: 'recover' | 'reopen',
): Promise<{ fired: boolean; surfaced: boolean; calls: Map<string, number>; problems: string[] }> {
  copyReplica(s.template, r);
  const problems: string[] = [];
  let store: ReplicaStore | undefined = await ReplicaStore.open(rt, r);
  faulty.calls.clear();
  faulty.fired.length = 0;
  if (plan) faulty.arm(plan);
  let surfaced = false;
  try {
    await reset(store, s);
  } catch {
    surfaced = true;
  }
  faulty.disarm();
  const calls = new Map(faulty.calls);
  const fired = faulty.fired.length > 0;
  try {
    if (mode === 'recover' && store.dirty) await store.recover();
    const check = store.checkDatabase();
    if (mode === 'recover' && !check.ok)
      problems.push(`after recover(): database ${check.checksum} != journal ${check.expected}`);
  } catch (e) {
    problems.push(`recover(): ${(e as Error).message}`);
  }
  try {
    store.close();
  } catch {
    // may report the fault again
  }
  store = undefined;
  try {
    store = await ReplicaStore.open(rt, r);
    const check = store.checkDatabase();
    if (!check.ok) problems.push(`after reopening: database ${check.checksum} != journal ${check.expected}`);
    store.close();
    const state = stateOf(s, r);
    if (state !== 'old' && state !== 'new') problems.push(state);
    if (state === 'old') {
      store = await ReplicaStore.open(rt, r);
      await reset(store, s);
      store.close();
      const again = stateOf(s, r);
      if (again !== 'new') problems.push(`a reset after recovery: ${again}`);
    }
  } catch (e) {
    store?.close();
    problems.push(`after the fault: ${(e as Error).message}`);
  }
  return { fired, surfaced, calls, problems };
}

/** A replica of history A (its template files), an image of A's later head and one of history B. */
async function setup(dir: string, big = false): Promise<Scenario[]> {
  const aPath = path.join(dir, 'a.db');
  const a = await openWith(rt, aPath);
  a.exec('create table t(id integer primary key, k, v)');
  for (let i = 0; i < 5; i++) a.exec(`insert into t(k, v) values (${i}, randomblob(${400 + i * 1500}))`);
  const template = path.join(dir, 'tpl.db');
  const store = await ReplicaStore.open(rt, template);
  const { file, snaps } = snapshotsAfter(journalOf(aPath), 0n);
  await store.reset(file, snaps[0]!.bytes, snaps[0]!.header);
  for (const x of snaps.slice(1)) await store.append(x.bytes, x.header);
  store.close();
  a.exec('delete from t where k % 2 = 0; insert into t(k, v) values (9, randomblob(7000))');
  a.close();
  // History B: another journal id, another page size.
  const bPath = path.join(dir, 'b.db');
  const b = await openWith(rt, bPath);
  b.pragma('page_size = 4096'); // the writer's default is 8192
  b.exec(`create table u(x); insert into u values (randomblob(${big ? 8 << 20 : 20000}))`);
  b.close();
  return [
    { name: 'same history', template, target: aPath, image: imageOf(aPath), other: false },
    { name: 'another history', template, target: bPath, image: imageOf(bPath), other: true },
  ];
}

test('every labelled file operation of a reset on an existing replica, failed once: the replica is then wholly old or wholly new', async (t) => {
  await loadHash();
  const dir = tempDir();
  const scenarios = await setup(dir);
  assert.notEqual(
    decodeFileHeader(fs.readFileSync(journalOf(scenarios[0]!.target)).subarray(0, 64)).journalId.join(),
    scenarios[1]!.image.file.journalId.join(),
  );

  let n = 0;
  const failures: string[] = [];
  const silent: string[] = [];
  const seen: string[] = [];
  let cases = 0;
  let fired = 0;
  for (const s of scenarios) {
    const dry = await runCase(s, path.join(dir, `r${n++}.db`), undefined, 'reopen');
    assert.deepEqual(dry.problems, [], `${s.name}: a reset without faults`);
    assert.equal(stateOf(s, path.join(dir, `r${n - 1}.db`)), 'new');
    const labels = [...dry.calls.entries()].filter(([l]) =>
      /\.(open|read|write|truncate|sync|delete|syncDir|rename|mkdir)$/.test(l),
    );
    seen.push(`${s.name}: ${labels.map(([l, c]) => `${l}×${c}`).join(' ')}`);
    for (const [label, calls] of labels) {
      const kinds: FaultKind[] = label.endsWith('.write') ? ['EIO', 'ENOSPC', 'short'] : ['EIO', 'ENOSPC'];
      for (const kind of kinds) {
        for (const nth of [...new Set([1, Math.ceil(calls / 2), calls])]) {
          for (const mode of ['recover', 'reopen'] as const) {
            const what = `${s.name} ${label}#${nth}/${kind} ${mode}`;
            const r = await runCase(s, path.join(dir, `r${n++}.db`), { label, nth, kind }, mode);
            cases++;
            if (r.fired) fired++;
            if (r.fired && !r.surfaced) silent.push(what);
            for (const p of r.problems) failures.push(`${what}: ${p}`);
          }
        }
      }
    }
  }
  t.diagnostic(`${cases} cases, ${fired} faults fired; labels: ${seen.join(' | ')}`);
  t.diagnostic(`absorbed (no error to the caller): ${silent.join(' ') || 'none'}`);
  assert.deepEqual(failures, []);
  assert.ok(fired > cases / 2);
});

const CHILD = fileURLToPath(new URL('./helpers/reset-child.js', import.meta.url));

test('a replica process killed (SIGKILL) at random moments of a reset to another history reopens wholly old or wholly new', async (t) => {
  await loadHash();
  const dir = tempDir();
  const s = (await setup(dir, true))[1]!;
  const imageFile = path.join(dir, 'image');
  fs.writeFileSync(imageFile, Buffer.concat([encodeFileHeader(s.image.file), s.image.bytes]));
  const rnd = prng(7);
  const seen = { old: 0, new: 0 };
  const problems: string[] = [];
  let longest = 0;
  for (let i = 0; i < 12; i++) {
    const r = path.join(dir, `k${i}.db`);
    copyReplica(s.template, r);
    const child = spawn(process.execPath, [CHILD, r, imageFile], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    await new Promise<void>((resolve) =>
      child.stdout!.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        if (out.includes('ready')) resolve();
      }),
    );
    const started = Date.now();
    if (i === 0) {
      await exited; // the first one runs to the end: how long a reset takes
      longest = Date.now() - started;
      assert.match(out, /done/);
    } else {
      await sleep(Math.floor(rnd() * longest));
      child.kill('SIGKILL');
      await exited;
    }
    try {
      const store = await ReplicaStore.open(rt, r); // recovery
      if (!store.checkDatabase().ok)
        problems.push(`kill ${i}: the database is not at the journal's position`);
      store.close();
    } catch (e) {
      problems.push(`kill ${i}: ${(e as Error).message}`);
    }
    const state = stateOf(s, r);
    if (state === 'old' || state === 'new') seen[state]++;
    else problems.push(`kill ${i}: ${state}`);
  }
  t.diagnostic(`a reset takes ${longest} ms; after the kills: ${seen.old} old, ${seen.new} new`);
  assert.deepEqual(problems, []);
});
