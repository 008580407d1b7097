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
  /** Changes begun per database: a read of its file that saw one begin may hold the lease before it. */
  private readonly changes = new Map<string, number>();

  /** The lease record of `db` (stored in `dir`), or undefined when none was ever taken. */
  async get(db: string, dir: string): Promise<StoredLease | undefined> {
    while (!this.cache.has(db)) {
      const seen = this.changes.get(db) ?? 0;
      const read = await readLeaseFile(dir);
      // Only a read that no change overtook may fill the cache: one begun before a change and done
      // after it would put back the lease that change replaced, and grant its epoch a second time.
      if (!this.cache.has(db) && (this.changes.get(db) ?? 0) === seen) this.cache.set(db, read);
    }
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
    this.changes.set(db, (this.changes.get(db) ?? 0) + 1);
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
