/**
 * Runs in a dedicated Worker of real Chromium (bundled by test/browser-opfs.test.ts): what a shared
 * database does to its files, done to the OPFS pool — atomic replace of a file that is open, delete of an
 * open file, a crash inside a rename, ShadowFile spilling into the pool, and a closed handle. Posts one
 * result per case: { name, ok, error? }.
 */
import { OpfsPoolFileSystem } from '../../src/browser/opfs-pool.js';
import { opfsDirectory, type SyncAccessHandle } from '../../src/browser/opfs-types.js';
import { readAt, writeFileAtomic } from '../../src/files/file-system.js';
import { ShadowFile } from '../../src/files/shadow-file.js';

const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const str = (b: Uint8Array): string => new TextDecoder().decode(b);
const parts = ['mycelite-test', `pool-${Date.now()}-${Math.random().toString(36).slice(2)}`];

function check(cond: boolean, what: string): void {
  if (!cond) throw new Error(what);
}

function content(pool: OpfsPoolFileSystem, path: string): string {
  const f = pool.open(path, { readonly: true });
  try {
    return str(readAt(f, 0, f.size()));
  } finally {
    f.close();
  }
}

function put(pool: OpfsPoolFileSystem, path: string, s: string): void {
  const f = pool.open(path, { create: true });
  f.truncate(0);
  f.write(text(s), 0);
  f.sync();
  f.close();
}

/** The raw slot files of the pool directory: name → the path its header names (undefined: free). */
async function slots(): Promise<
  Map<string, { path: string | undefined; gen: bigint; sah: SyncAccessHandle }>
> {
  const dir = await opfsDirectory(parts);
  const out = new Map<string, { path: string | undefined; gen: bigint; sah: SyncAccessHandle }>();
  for await (const h of dir.values()) {
    if (h.kind !== 'file') continue;
    const sah = await h.createSyncAccessHandle();
    const head = new Uint8Array(4096);
    sah.read(head, { at: 0 });
    const v = new DataView(head.buffer);
    const len = v.getUint16(12);
    const named = v.getUint32(0) === 0x4d594350 && len > 0;
    out.set(h.name, {
      path: named ? str(head.subarray(16, 16 + len)) : undefined,
      gen: named ? v.getBigUint64(4) : 0n,
      sah,
    });
  }
  return out;
}

const cases: [string, () => Promise<void>][] = [
  [
    'a closed handle refuses to read or write (its slot may hold another file by then)',
    async () => {
      const pool = await OpfsPoolFileSystem.open(parts);
      try {
        const f = pool.open('/a', { create: true });
        f.write(text('aaaa'), 0);
        f.close();
        pool.delete('/a');
        put(pool, '/b', 'bbbb'); // may take the slot /a had
        let threw = 0;
        for (const op of [
          () => f.write(text('XXXX'), 0),
          () => f.read(new Uint8Array(4), 0),
          () => f.size(),
        ]) {
          try {
            op();
          } catch {
            threw++;
          }
        }
        check(threw === 3, `a closed handle still worked (${3 - threw} of 3 calls)`);
        check(content(pool, '/b') === 'bbbb', `another file changed: ${content(pool, '/b')}`);
      } finally {
        pool.close();
      }
    },
  ],
  [
    'an atomic replace of an open file (the device state): the open handle keeps the old bytes, the path the new',
    async () => {
      let pool = await OpfsPoolFileSystem.open(parts);
      try {
        put(pool, '/db-mycelite/shared', 'old state');
        const held = pool.open('/db-mycelite/shared');
        writeFileAtomic(pool, '/db-mycelite/shared', (f) => f.write(text('new state'), 0));
        check(str(readAt(held, 0, held.size())) === 'old state', 'the open handle lost its bytes');
        check(content(pool, '/db-mycelite/shared') === 'new state', 'the path does not hold the new bytes');
        check(
          pool.paths().filter((p) => p.includes('shared')).length === 1,
          `temporary files left: ${pool.paths().join(', ')}`,
        );
        held.close();
        pool.close();
        pool = await OpfsPoolFileSystem.open(parts);
        check(content(pool, '/db-mycelite/shared') === 'new state', 'after reopening: not the new bytes');
      } finally {
        pool.close();
      }
      const all = await slots();
      for (const s of all.values()) s.sah.close();
      const named = [...all.values()].filter((s) => s.path === '/db-mycelite/shared');
      check(named.length === 1, `${named.length} slots name the file`);
    },
  ],
  [
    'a crash inside a rename (two slots name the target): the newer generation wins at the next open',
    async () => {
      let pool = await OpfsPoolFileSystem.open(parts);
      put(pool, '/x', 'x before');
      put(pool, '/y', 'x after');
      pool.close();
      // What rename('/y', '/x') leaves when it dies after its first header write.
      const all = await slots();
      try {
        const y = [...all.values()].find((s) => s.path === '/y')!;
        const gen = [...all.values()].reduce((m, s) => (s.gen > m ? s.gen : m), 0n) + 1n;
        const h = new Uint8Array(4096);
        const v = new DataView(h.buffer);
        const name = text('/x');
        v.setUint32(0, 0x4d594350);
        v.setBigUint64(4, gen);
        v.setUint16(12, name.length);
        h.set(name, 16);
        y.sah.write(h, { at: 0 });
        y.sah.flush();
      } finally {
        for (const s of all.values()) s.sah.close();
      }
      pool = await OpfsPoolFileSystem.open(parts);
      try {
        check(content(pool, '/x') === 'x after', `/x holds ${JSON.stringify(content(pool, '/x'))}`);
        check(!pool.exists('/y'), '/y is still there');
      } finally {
        pool.close();
      }
    },
  ],
  [
    'delete of an open file: the handle keeps reading, the path is free at once, the slot is reused after close',
    async () => {
      const pool = await OpfsPoolFileSystem.open(parts);
      try {
        put(pool, '/d', 'doomed');
        const f = pool.open('/d');
        pool.delete('/d');
        check(!pool.exists('/d'), 'the deleted path still exists');
        check(str(readAt(f, 0, f.size())) === 'doomed', 'the open handle lost its bytes');
        put(pool, '/d', 'again');
        check(content(pool, '/d') === 'again', 'the new file is not separate');
        check(str(readAt(f, 0, f.size())) === 'doomed', 'the new file overwrote the open one');
        f.close();
      } finally {
        pool.close();
      }
    },
  ],
  [
    "a ShadowFile spilling into the pool (a rebase's held pages): reads see the writes, commit writes them, the spill file goes",
    async () => {
      const pool = await OpfsPoolFileSystem.open(parts);
      try {
        const base = pool.open('/db', { create: true });
        base.write(new Uint8Array(4096 * 4).fill(1), 0);
        const shadow = new ShadowFile(base, pool, '/db-mycelite/spill-rebase', 8192);
        for (let i = 0; i < 12; i++) shadow.write(new Uint8Array(4096).fill(10 + i), i * 4096);
        check(pool.exists('/db-mycelite/spill-rebase'), 'nothing spilled past the budget');
        for (let i = 0; i < 12; i++) {
          const got = readAt(shadow, i * 4096, 4096);
          check(
            got.every((b) => b === 10 + i),
            `block ${i} reads back ${got[0]}`,
          );
        }
        check(readAt(base, 0, 1)[0] === 1, 'the base changed before commit');
        shadow.commit();
        check(base.size() === 12 * 4096, `base size ${base.size()}`);
        for (let i = 0; i < 12; i++)
          check(readAt(base, i * 4096, 1)[0] === 10 + i, `block ${i} not committed`);
        check(!pool.exists('/db-mycelite/spill-rebase'), 'the spill file was left behind');
        base.close();
      } finally {
        pool.close();
      }
    },
  ],
];

async function run(): Promise<void> {
  const results: { name: string; ok: boolean; error?: string }[] = [];
  for (const [name, fn] of cases) {
    try {
      await fn();
      results.push({ name, ok: true });
    } catch (e) {
      results.push({ name, ok: false, error: (e as Error)?.stack ?? String(e) });
    }
  }
  (globalThis as unknown as { postMessage(m: unknown): void }).postMessage(results);
}

void run();
