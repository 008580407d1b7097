// open() as named steps (docs/ARCHITECTURE.md, "Recovery (at open)"): a labelled file operation failed in
// one step comes back as an OpenError whose message names the step, with the injected fault as its cause,
// and the writer lock is released (the next open, with the fault gone, succeeds).
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { FaultyFileSystem, InjectedFault } from '../src/files/faulty-fs.js';
import type { Runtime } from '../src/files/file-system.js';
import { nodeRuntime } from '../src/node/index.js';
import { NodeFileSystem } from '../src/node/node-fs.js';
import { OpenError } from '../src/writer/errors.js';
import { openWith } from '../src/writer/open.js';
import { cleanupTempDirs, tempDir } from './helpers/util.js';

after(() => cleanupTempDirs());

// One for the whole process: SQLite's VFS is installed once, with the file system of the first open.
const faulty = new FaultyFileSystem(new NodeFileSystem());
const runtime: Runtime = { fs: faulty, resolve: nodeRuntime.resolve, tempPath: nodeRuntime.tempPath };

/** The causes of `e`, outermost first. */
function causes(e: unknown): unknown[] {
  const out: unknown[] = [];
  for (let c = e; c !== undefined; c = (c as { cause?: unknown }).cause) out.push(c);
  return out;
}

for (const [label, step] of [
  ['journal.read', 'read the journal'],
  ['synced.sync', 'set the synced marker'],
  ['inflight.open', 'read the inflight marker'],
] as const) {
  test(`a fault at ${label} fails open() in the step "${step}", with the fault as its cause`, async () => {
    const file = path.join(tempDir('open-steps-'), 'app.db');
    const db = await openWith(runtime, file);
    db.exec('create table t(a); insert into t values (1)');
    db.close();

    faulty.arm({ label, nth: 1, kind: 'EIO' });
    const failed = await openWith(runtime, file).then(
      () => undefined,
      (e: unknown) => e,
    );
    faulty.disarm();
    assert.ok(failed instanceof OpenError, String(failed));
    assert.equal(failed.message, `open ${file}: ${step}: EIO: injected fault at ${label}`);
    assert.ok(causes(failed).some((c) => c instanceof InjectedFault && c.label === label));

    const again = await openWith(runtime, file);
    assert.deepEqual(again.prepare('select a from t').pluck().all(), [1]);
    again.close();
  });
}
