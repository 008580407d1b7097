/**
 * Write leases on the filesystem: `DATA/dbs/<name>/lease.json`, replaced atomically, cached in memory
 * (the hub process is the only writer of its data directory). Callers serialize changes per database.
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { writeFileAtomic } from '../files/file-system.js';
import { NodeFileSystem } from '../node/node-fs.js';
import { type StoredLease, sameLease } from './storage.js';

const nodeFs = new NodeFileSystem();

export class FsLeases {
  private readonly cache = new Map<string, StoredLease | undefined>();

  /** The lease record of `db` (stored in `dir`), or undefined when none was ever taken. */
  async get(db: string, dir: string): Promise<StoredLease | undefined> {
    if (!this.cache.has(db)) this.cache.set(db, await readLeaseFile(dir));
    const lease = this.cache.get(db);
    return lease && { ...lease };
  }

  /** Replaces the record with `next` if it is still `expected`; durable before it resolves. */
  async compareAndSet(
    db: string,
    dir: string,
    expected: StoredLease | undefined,
    next: StoredLease,
  ): Promise<boolean> {
    const current = await this.get(db, dir);
    if (!sameLease(current, expected)) return false;
    if (current && next.epoch < current.epoch) {
      throw new Error(`lease epoch may not go back (${current.epoch} → ${next.epoch})`);
    }
    await fsp.mkdir(dir, { recursive: true });
    const text = new TextEncoder().encode(JSON.stringify(next));
    this.cache.delete(db); // if the write fails, read the file again next time
    writeFileAtomic(nodeFs, path.join(dir, 'lease.json'), (f) => f.write(text, 0));
    this.cache.set(db, { ...next });
    return true;
  }
}

async function readLeaseFile(dir: string): Promise<StoredLease | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(path.join(dir, 'lease.json'), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const j = JSON.parse(text) as StoredLease;
  const lease: StoredLease = {
    holder: String(j.holder),
    epoch: Number(j.epoch),
    expiresAt: Number(j.expiresAt),
  };
  if (typeof j.ttlMs === 'number') lease.ttlMs = j.ttlMs;
  return lease;
}
