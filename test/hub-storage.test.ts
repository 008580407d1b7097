/** The HubStorage conformance suite against the filesystem storage. */

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { it } from 'node:test';
import { FsStorage } from '../src/hub/index.js';
import { storageConformance } from './helpers/storage-conformance.js';

storageConformance('filesystem', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-fs-storage-'));
  return {
    open: () => FsStorage.open(dir),
    tearTail: async (db, bytes) => fs.appendFileSync(path.join(dir, 'dbs', db, 'journal'), bytes),
    cleanup: async () => fs.rmSync(dir, { recursive: true, force: true }),
  };
});

it('FsStorage: one process at a time per data directory', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-fs-lock-'));
  try {
    const first = await FsStorage.open(dir);
    await assert.rejects(FsStorage.open(dir), /another hub process uses the data directory/);
    await first.close();
    const again = await FsStorage.open(dir);
    await again.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
