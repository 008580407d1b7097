/**
 * HubStorage on the filesystem: `DATA/dbs/<name>/journal` in the exact journal format (docs/FORMAT.md)
 * and `DATA/dbs/<name>/lease.json`. Writes to one database are serialized; an append is durable (fsync)
 * before it resolves. After a database is first opened, an in-memory index (txid → offset) serves reads
 * from any position without rescanning.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import {
  decodeSnapshotHeader,
  encodeFileHeader,
  FORMAT_VERSION,
  JournalReader,
  SNAPSHOT_HEADER_SIZE,
  type SnapshotHeader,
} from '../format/index.js';
import { fileSource } from '../journal/file-source.js';
import { JournalWriter } from '../journal/journal-writer.js';
import { NodeFileSystem } from '../node/node-fs.js';
import { checkDbName, samePosition, type WirePosition } from '../protocol/index.js';
import { writeFileAtomic } from '../storage/file-system.js';
import { FsLeases } from './fs-leases.js';
import { Mutex } from './mutex.js';
import type {
  AppendListener,
  AppendResult,
  DbState,
  EncodedSnapshot,
  HubStorage,
  StoredLease,
} from './storage.js';
import { checkAppend } from './storage.js';

const READ_CHUNK = 1 << 20;
const nodeFs = new NodeFileSystem();

/** An open database: its writer, a read handle and the offsets of its snapshots. */
interface Entry {
  writer: JournalWriter;
  reader: fsp.FileHandle;
  journalId: Uint8Array;
  base: WirePosition;
  /** offsets[i] is where snapshot base.txid + 1 + i starts. */
  offsets: number[];
  /** The durable head and the offset after it (appends in progress are not visible before their fsync). */
  head: WirePosition;
  end: number;
  headTimestamp: number;
}

export class FsStorage implements HubStorage {
  private readonly entries = new Map<string, Entry>();
  private readonly locks = new Map<string, Mutex>();
  private readonly listeners = new Map<string, Set<AppendListener>>();
  private closed = false;

  private readonly leases = new FsLeases();

  private constructor(
    readonly dataDir: string,
    private readonly dirLock: { release(): void },
  ) {}

  /**
   * Opens (creating) the storage under `dataDir`. One hub process at a time may use a data directory: it
   * holds an exclusive lock on `DATA/lock` while open.
   */
  static async open(dataDir: string): Promise<FsStorage> {
    const root = path.resolve(dataDir);
    await fsp.mkdir(path.join(root, 'dbs'), { recursive: true });
    const lockFile = path.join(root, 'lock');
    fs.closeSync(fs.openSync(lockFile, 'a'));
    const lock = nodeFs.tryLockExclusive(lockFile);
    if (!lock) {
      throw new Error(
        `another hub process uses the data directory ${root}; stop it or choose another --data`,
      );
    }
    return new FsStorage(root, lock);
  }

  /** The directory of `db`, after checking its name and that the path stays under the data directory. */
  private dir(db: string): string {
    const bad = checkDbName(db);
    if (bad) throw new Error(bad);
    const root = path.join(this.dataDir, 'dbs');
    const dir = path.resolve(root, db);
    if (path.dirname(dir) !== root)
      throw new Error(`database name ${JSON.stringify(db)} escapes the data directory`);
    return dir;
  }

  private lock(db: string): Mutex {
    let m = this.locks.get(db);
    if (!m) {
      m = new Mutex();
      this.locks.set(db, m);
    }
    return m;
  }

  private check(): void {
    if (this.closed) throw new Error('the hub storage is closed');
  }

  async list(): Promise<string[]> {
    this.check();
    const root = path.join(this.dataDir, 'dbs');
    const names = await fsp.readdir(root);
    return names
      .filter((n) => checkDbName(n) === undefined && fs.existsSync(path.join(root, n, 'journal')))
      .sort();
  }

  /** Opens `db` (once) or returns undefined when it has no journal. */
  private async entry(db: string): Promise<Entry | undefined> {
    const cached = this.entries.get(db);
    if (cached) return cached;
    const file = path.join(this.dir(db), 'journal');
    if (!fs.existsSync(file)) return undefined;
    const writer = JournalWriter.open(nodeFs, file); // cuts a torn tail
    const offsets: number[] = [];
    let headTimestamp = 0;
    const scan = nodeFs.open(file, { readonly: true });
    let reader: JournalReader;
    try {
      reader = new JournalReader(fileSource(scan));
      for (const s of reader.snapshots()) {
        offsets.push(s.offset);
        headTimestamp = s.timestamp;
      }
    } finally {
      scan.close();
    }
    const again = this.entries.get(db); // another caller opened it meanwhile
    if (again) {
      writer.close();
      return again;
    }
    const e: Entry = {
      writer,
      reader: await fsp.open(file, 'r'),
      journalId: reader.header.journalId,
      base: { txid: reader.header.baseTxid, checksum: reader.header.baseChecksum },
      offsets,
      head: writer.position,
      end: writer.end,
      headTimestamp,
    };
    this.entries.set(db, e);
    return e;
  }

  private stateOf(e: Entry): DbState {
    return { journalId: e.journalId, base: e.base, head: e.head, headTimestamp: e.headTimestamp };
  }

  async state(db: string): Promise<DbState | undefined> {
    this.check();
    const e = await this.lock(db).run(() => this.entry(db));
    return e && this.stateOf(e);
  }

  async append(
    db: string,
    expectedHead: WirePosition,
    journalId: Uint8Array,
    snapshots: EncodedSnapshot[],
    precondition?: () => Promise<void>,
  ): Promise<AppendResult> {
    this.check();
    const dir = this.dir(db);
    return this.lock(db).run(async () => {
      this.check();
      await precondition?.();
      checkAppend(expectedHead, snapshots);
      let e = await this.entry(db);
      if (!e) {
        await this.create(dir, journalId, expectedHead, snapshots);
        e = (await this.entry(db))!;
        this.publish(db, snapshots, this.stateOf(e));
        return { ok: true, state: this.stateOf(e) };
      }
      if (!sameId(e.journalId, journalId))
        return { ok: false, reason: 'other_history', state: this.stateOf(e) };
      if (!samePosition(e.head, expectedHead)) {
        return { ok: false, reason: 'head_mismatch', state: this.stateOf(e) };
      }
      const start = e.writer.end;
      const added: number[] = [];
      try {
        for (const s of snapshots) {
          added.push(e.writer.end);
          e.writer.appendEncoded(s.bytes, s.header, false);
        }
        await e.reader.datasync();
      } catch (err) {
        // Nothing of a failed append may stay: cut the file back and reopen it next time. Cut it before
        // forgetting the entry, so that a read (which opens the journal unlocked) cannot reopen it meanwhile.
        await fsp.truncate(path.join(dir, 'journal'), start).catch(() => undefined);
        this.entries.delete(db);
        e.writer.close();
        await e.reader.close();
        throw err;
      }
      e.offsets.push(...added);
      e.head = e.writer.position;
      e.end = e.writer.end;
      e.headTimestamp = Math.max(e.headTimestamp, snapshots[snapshots.length - 1]!.header.timestamp);
      const state = this.stateOf(e);
      this.publish(db, snapshots, state);
      return { ok: true, state };
    });
  }

  /** Creates the journal with its first snapshots in one atomic replace: a database never exists empty. */
  private async create(dir: string, journalId: Uint8Array, base: WirePosition, snapshots: EncodedSnapshot[]) {
    await fsp.mkdir(dir, { recursive: true });
    nodeFs.syncDir(dir);
    const header = encodeFileHeader({
      version: FORMAT_VERSION,
      journalId,
      createdAt: Date.now(),
      baseTxid: base.txid,
      baseChecksum: base.checksum,
    });
    writeFileAtomic(nodeFs, path.join(dir, 'journal'), (f) => {
      f.write(header, 0);
      let at = header.length;
      for (const s of snapshots) {
        f.write(s.bytes, at);
        at += s.bytes.length;
      }
    });
  }

  private publish(db: string, snapshots: EncodedSnapshot[], state: DbState): void {
    for (const l of this.listeners.get(db) ?? []) {
      try {
        l(snapshots, state);
      } catch {
        // a listener's failure is its own
      }
    }
  }

  read(db: string, after: bigint, upTo: bigint): AsyncIterable<Uint8Array> {
    this.check();
    const range = this.entry(db).then((e) => {
      if (!e) throw new Error(`read: no database ${db}`);
      const head = e.head.txid;
      if (after < e.base.txid || upTo > head || after > upTo) {
        throw new Error(`read: ${after}..${upTo} is outside ${e.base.txid}..${head} of ${db}`);
      }
      const at = (txid: bigint): number =>
        txid > head ? e.end : e.offsets[Number(txid - e.base.txid - 1n)]!;
      return { e, start: at(after + 1n), end: at(upTo + 1n) };
    });
    return {
      async *[Symbol.asyncIterator]() {
        const { e, start, end } = await range;
        for (let p = start; p < end; ) {
          const n = Math.min(READ_CHUNK, end - p);
          const buf = new Uint8Array(n);
          const { bytesRead } = await e.reader.read(buf, 0, n, p);
          if (bytesRead !== n) throw new Error(`read: journal of ${db} is shorter than its index`);
          p += n;
          yield buf;
        }
      },
    };
  }

  async snapshotAt(db: string, txid: bigint): Promise<SnapshotHeader | undefined> {
    this.check();
    const e = await this.entry(db);
    if (!e || txid <= e.base.txid || txid > e.head.txid) return undefined;
    const buf = new Uint8Array(SNAPSHOT_HEADER_SIZE);
    await e.reader.read(buf, 0, SNAPSHOT_HEADER_SIZE, e.offsets[Number(txid - e.base.txid - 1n)]!);
    const h = decodeSnapshotHeader(buf);
    if (h === undefined || typeof h === 'string') throw new Error(`snapshot ${txid} of ${db} is damaged`);
    return h;
  }

  async getLease(db: string): Promise<StoredLease | undefined> {
    this.check();
    return this.leases.get(db, this.dir(db));
  }

  async casLease(db: string, expected: StoredLease | undefined, next: StoredLease): Promise<boolean> {
    this.check();
    const dir = this.dir(db);
    return this.lock(db).run(() => this.leases.compareAndSet(db, dir, expected, next));
  }

  subscribe(db: string, listener: AppendListener): () => void {
    let set = this.listeners.get(db);
    if (!set) {
      set = new Set();
      this.listeners.set(db, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0 && this.listeners.get(db) === set) this.listeners.delete(db);
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await Promise.all([...this.locks.values()].map((m) => m.idle()));
    this.closed = true;
    for (const e of this.entries.values()) {
      e.writer.close();
      await e.reader.close();
    }
    this.entries.clear();
    this.listeners.clear();
    this.dirLock.release();
  }
}

function sameId(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
