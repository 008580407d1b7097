/**
 * Full images of databases' heads for `from=image` reads: a copy of the database's pages at the head
 * (the storage's head file, src/hub/head-file.ts), encoded as one full-image snapshot (src/journal/image.ts)
 * with its checksum checked as it goes. A storage without head files has its stored history replayed into
 * a temporary database file instead: one that keeps files (src/hub/fs-storage.ts) hands over its journal
 * and compacted history, read joined from the last checkpoint; another is copied into a temporary journal
 * first. The last image of each database is kept on disk (`DATA/images/`), keyed by journal id and head
 * txid, so that replicas that bootstrap at the same head share one build.
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { encodeFileHeader, FORMAT_VERSION, type SnapshotHeader, toHex } from '../format/index.js';
import { type ImageJob, PAGES_MISMATCH, type PagesJob } from './image-worker.js';
import { Mutex } from './mutex.js';
import type { DbState, HubStorage } from './storage.js';
import { runJob } from './worker.js';

/** Runs the image build of src/hub/image-worker.ts in a worker thread. */
function runWorker(job: ImageJob | PagesJob): Promise<SnapshotHeader> {
  return runJob(new URL('./image-worker.js', import.meta.url), job, 'building the image');
}

/** An image ready to send: an open file of the encoded snapshot (close it when done). */
export interface Image {
  file: fsp.FileHandle;
  header: SnapshotHeader;
}

interface Cached {
  key: string;
  path: string;
  header: SnapshotHeader;
}

export class ImageCache {
  private readonly cached = new Map<string, Cached>();
  private readonly locks = new Map<string, Mutex>();
  private counter = 0;
  /** This process's directory under `images`: hubs sharing a --data never touch each other's files. */
  private readonly dir: string;

  constructor(
    private readonly storage: HubStorage,
    private readonly root: string,
  ) {
    this.dir = path.join(root, String(process.pid));
  }

  /**
   * Removes what hub processes that are gone (SIGKILLed, crashed) left under `images`: their directories
   * (named by process id) and, from hubs before them, files named with a dead process id. Run at start;
   * returns how many entries it removed.
   */
  async sweep(): Promise<number> {
    let names: string[];
    try {
      names = await fsp.readdir(this.root);
    } catch {
      return 0; // no images yet
    }
    let removed = 0;
    for (const name of names) {
      const pid = /^\d+$/.test(name) ? Number(name) : legacyPid(name);
      if (pid === undefined || pid === process.pid || alive(pid)) continue;
      await fsp.rm(path.join(this.root, name), { recursive: true, force: true });
      removed++;
    }
    return removed;
  }

  /**
   * The image of `db` at `state.head` (built now unless cached), or at a later head when one was stored
   * meanwhile: the image's header names its txid.
   */
  get(db: string, state: DbState): Promise<Image> {
    let lock = this.locks.get(db);
    if (!lock) {
      lock = new Mutex();
      this.locks.set(db, lock);
    }
    return lock.run(async () => {
      const key = `${toHex(state.journalId)}-${state.head.txid}`;
      let c = this.cached.get(db);
      if (!c || c.key !== key) {
        const built = await this.build(db, state, key);
        if (c) await fsp.rm(c.path, { force: true }); // open readers keep their file
        this.cached.set(db, built);
        c = built;
      }
      return { file: await fsp.open(c.path, 'r'), header: c.header };
    });
  }

  private async build(db: string, state: DbState, key: string): Promise<Cached> {
    await fsp.mkdir(this.dir, { recursive: true });
    const stem = path.join(this.dir, `${db}.${process.pid}.${this.counter++}`);
    if (this.storage.copyHead) return this.fromHead(db, state, stem);
    const out = path.join(this.dir, `${db}.${key}.${process.pid}.image`); // hubs may share a --data
    const header = await buildImageFile(this.storage, db, state, state.head.txid, stem, out);
    return { key, path: out, header };
  }

  /**
   * Encodes a copy of the storage's head file. Its pages must give the head's checksum: if they do not,
   * the copy is made again with the head file checked first (and rebuilt by the storage).
   */
  private async fromHead(db: string, state: DbState, stem: string): Promise<Cached> {
    const pages = `${stem}.pages`;
    try {
      for (let check = false; ; check = true) {
        const head = await this.storage.copyHead!(db, pages, check);
        if (!head)
          throw new Error(`no image of ${db}: its head txid ${state.head.txid} is not a stored snapshot`);
        const key = `${toHex(state.journalId)}-${head.txid}`;
        const out = path.join(this.dir, `${db}.${key}.${process.pid}.image`); // hubs may share a --data
        try {
          const header = await runWorker({ pages, out, fields: { ...head, flags: 0 } });
          return { key, path: out, header };
        } catch (e) {
          await fsp.rm(out, { force: true });
          if (check || !(e as Error).message.includes(PAGES_MISMATCH)) throw e;
        }
      }
    } finally {
      await fsp.rm(pages, { force: true });
    }
  }

  /** Waits for builds in progress and removes the cached images (and this process's directory, if empty). */
  async close(): Promise<void> {
    await Promise.all([...this.locks.values()].map((m) => m.idle()));
    for (const c of this.cached.values()) await fsp.rm(c.path, { force: true });
    this.cached.clear();
    await fsp.rmdir(this.dir).catch(() => undefined); // another hub of this process may still use it
  }
}

/**
 * The process id in the name of a file hubs wrote directly under `images` before each had its own
 * directory: `DB.KEY.PID.image`, `DB.PID.N.pages`, `DB.PID.N.M.journal|db`.
 */
function legacyPid(name: string): number | undefined {
  const m =
    /\.(\d+)\.image$/.exec(name) ??
    /\.(\d+)\.\d+\.pages$/.exec(name) ??
    /\.(\d+)\.\d+\.\d+\.(?:journal|db)$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** Whether process `pid` runs (on this machine: hubs sharing a --data share a machine). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

let stems = 0;

/**
 * Writes what `storage` holds of `db` up to txid `upTo` (≤ the head) into the file `file` as a journal:
 * the checkpoint that stands for everything before the base (if any), then the snapshots after the base,
 * streamed from storage in bounded chunks. For a storage without files (NATS).
 */
export async function writeStoredJournal(
  storage: HubStorage,
  db: string,
  state: Pick<DbState, 'journalId' | 'base'>,
  upTo: bigint,
  file: string,
): Promise<void> {
  const checkpoint = state.base.txid > 0n ? await storage.checkpoint?.(db, state.base.txid) : undefined;
  const j = await fsp.open(file, 'w');
  try {
    const header = encodeFileHeader({
      version: FORMAT_VERSION,
      journalId: state.journalId,
      createdAt: Date.now(),
      baseTxid: checkpoint ? state.base.txid - 1n : state.base.txid,
      baseChecksum: checkpoint ? checkpoint.header.preChecksum : state.base.checksum,
    });
    await j.write(header);
    if (checkpoint) for await (const chunk of checkpoint.chunks) await j.write(chunk);
    for await (const chunk of storage.read(db, state.base.txid, upTo)) await j.write(chunk);
  } finally {
    await j.close();
  }
}

/**
 * Builds the full image of `db` at txid `upTo` (≤ `state.head`) into the file `out`, using `stem` for
 * temporary files: from the storage's files (history joined with the journal) when it has them, else
 * from its checkpoint at the base (if any) and the snapshots after it, copied into a temporary journal
 * (writeStoredJournal), or read from `written` when the caller wrote that journal already. The replay
 * and the encoding run in a worker thread.
 */
export async function buildImageFile(
  storage: HubStorage,
  db: string,
  state: Pick<DbState, 'journalId' | 'base'>,
  upTo: bigint,
  stem: string,
  out: string,
  written?: string,
): Promise<SnapshotHeader> {
  const journal = written ?? `${stem}.${stems}.journal`;
  const replayed = `${stem}.${stems++}.db`;
  try {
    const files = written ? undefined : await storage.historyFiles?.(db);
    // 1. The stored history as a journal file.
    if (!files && !written) await writeStoredJournal(storage, db, state, upTo, journal);
    // 2. Replay it (verifying every snapshot and the final checksum), 3. encode the pages: in a worker
    // thread, so that the hub keeps serving meanwhile.
    const job: ImageJob = files
      ? { journal: files.journal, history: files.history, replayed, out, headTxid: upTo }
      : { journal, replayed, out, headTxid: upTo };
    try {
      return await runWorker(job);
    } catch (e) {
      await fsp.rm(out, { force: true });
      throw e;
    }
  } finally {
    if (!written) await fsp.rm(journal, { force: true });
    await fsp.rm(replayed, { force: true });
  }
}
