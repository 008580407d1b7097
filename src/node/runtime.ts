/** The Node.js runtime of `openWith`: real files through node:fs, temporary files in the OS's directory. */
import * as os from 'node:os';
import * as path from 'node:path';
import type { Runtime } from '../files/file-system.js';
import { NodeFileSystem } from './node-fs.js';
import { loadZstd } from './zstd.js';

// Snapshot bodies as zstd frames where zstd-napi is installed (src/node/zstd.ts).
loadZstd();

let counter = 0;

/** The Node.js runtime: real files through node:fs. */
export const nodeRuntime: Runtime = {
  fs: new NodeFileSystem(),
  resolve: (p) => path.resolve(p),
  tempPath: () => path.join(os.tmpdir(), `mycelite-${process.pid}-${Date.now()}-${counter++}`),
};
