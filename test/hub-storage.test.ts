/** The HubStorage conformance suite against the filesystem storage. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
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
