/**
 * The head files of a storage's databases (src/hub/head-file.ts), kept at the storage's head: every push
 * is checked against them before it is stored; they are brought forward from the stored snapshots
 * (after a hub crash, or after appends made by other hubs) or rebuilt from the stored history, checking
 * every snapshot on the way. A stored snapshot that fails those checks is a damaged stored copy
 * (StoredCopyDamagedError): the storage cuts its copy back to before it (files) or skips it (NATS).
 *
 * Both storages call it in their per-database append order, so a head file is never used by two
 * operations at once.
 */

import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import {
  encodeFileHeader,
  FLAG_FULL_IMAGE,
  FORMAT_VERSION,
  JournalFormatError,
  JournalReader,
  type Position,
  PositionMismatchError,
  type SnapshotInfo,
  sameBytes,
  samePosition,
} from '../format/index.js';
import { checkpointBefore } from '../history/points.js';
import { openHistory } from '../history/source.js';
import { fileSource } from '../journal/file-source.js';
import { NodeFileSystem } from '../node/node-fs.js';
import type { EncodedSnapshot } from '../protocol/index.js';
import { HeadFile, type HeadPosition, type Staged } from './head-file.js';
import { DoesNotApplyError } from './page-check.js';
import type { DbState, HubStorage } from './storage.js';

export type { Staged } from './head-file.js';
export { DoesNotApplyError } from './page-check.js';

/** What a storage tells about damage it found (the hub logs it loudly). */
export interface DamageReport {
  /** `stored`: the storage's copy of the journal; `head`: the hub's head file (rebuilt from the journal). */
  what: 'stored' | 'head';
  /** The first snapshot found damaged, when known. */
  txid?: bigint;
  message: string;
  /** Where the damaged file was kept (the file storage keeps it aside, never deletes it). */
  keptAt?: string;
  /** True when the storage repaired it (a damaged copy cut back: the writer's next push re-supplies the rest). */
  repaired: boolean;
}

/** Who a storage tells of the damage it finds (both hub storages); a listener's failure is its own. */
export class DamageListeners {
  private readonly list: ((db: string, report: DamageReport) => void)[] = [];

  add(listener: (db: string, report: DamageReport) => void): void {
    this.list.push(listener);
  }

  report(db: string, report: DamageReport): void {
    for (const l of this.list) {
      try {
        l(db, report);
      } catch {
        // a listener's failure is its own
      }
    }
  }
}

/** A stored snapshot failed its checks (trailer, structure, or the database checksum it claims). */
export class StoredCopyDamagedError extends Error {
  constructor(
    readonly db: string,
    readonly txid: bigint,
    why: string,
    options?: { cause?: unknown },
  ) {
    super(
      `the hub's copy of database ${db} is damaged at snapshot ${txid} (${why}); it is not served until it is repaired`,
      options,
    );
    this.name = 'StoredCopyDamagedError';
  }
}

/** The reading side of a storage, which head files are brought forward and rebuilt from. */
export type StoredReader = Pick<HubStorage, 'read' | 'snapshotAt' | 'historyFiles' | 'checkpoint'>;

const nodeFs = new NodeFileSystem();

/** An open journal to read stored snapshots from (a temporary copy, or the storage's own files). */
interface Source {
  reader: JournalReader;
  source: ReturnType<typeof fileSource>;
  close(): Promise<void>;
}

/** The head files of one storage's databases, each in the directory `dirOf(db)`. */
export class Heads {
  private readonly files = new Map<string, HeadFile>();
  /** Per database, the position whose whole-file checksum was last confirmed (`txid:checksum`). */
  private readonly confirmed = new Map<string, string>();

  constructor(
    private readonly dirOf: (db: string) => string,
    private readonly stored: StoredReader,
    private readonly onDamage: (db: string, report: DamageReport) => void,
  ) {}

  private file(db: string): HeadFile {
    let f = this.files.get(db);
    if (!f) {
      f = HeadFile.open(this.dirOf(db));
      this.files.set(db, f);
    }
    return f;
  }

  /**
   * The head file of `db` at `state.head`: as it is, brought forward from the stored snapshots after its
   * position, or rebuilt from the stored history. Throws StoredCopyDamagedError when a stored snapshot
   * fails its checks.
   */
  async ready(db: string, state: DbState): Promise<HeadFile> {
    const hf = this.file(db);
    const p = hf.pos;
    const head = state.head;
    if (p && sameBytes(p.journalId, state.journalId)) {
      if (hf.exact && samePosition(p, head)) return hf;
      if (p.txid <= head.txid && (await this.holds(db, state, p))) {
        try {
          await this.forward(db, hf, state);
          return hf;
        } catch (e) {
          if (!isCheckFailure(e)) throw e;
          // The head file, or a stored snapshot after it, is wrong: the rebuild tells which.
        }
      }
    }
    await this.rebuild(db, hf, state);
    return hf;
  }

  /**
   * Checks `snapshots` (continuing `base`, the head of `state`; no state: a new database of history
   * `journalId`) against the head file and returns their changes, to `commit` once they are stored.
   * Throws DoesNotApplyError for a snapshot whose pages do not give its postChecksum.
   */
  async stage(
    db: string,
    state: DbState | undefined,
    journalId: Uint8Array,
    base: Position,
    snapshots: EncodedSnapshot[],
  ): Promise<Staged> {
    if (!state) {
      const hf = this.file(db);
      hf.reset(journalId, base);
      return hf.stage(snapshots);
    }
    const hf = await this.ready(db, state);
    try {
      return hf.stage(snapshots);
    } catch (e) {
      if (!(e instanceof DoesNotApplyError)) throw e;
      // Refuse only pages known to be right: a crash or power loss may have left them behind their record.
      const at = `${hf.pos!.txid}:${hf.pos!.checksum}`;
      if (this.confirmed.get(db) !== at) {
        if (!hf.matches()) {
          this.onDamage(db, {
            what: 'head',
            message: `the head file of ${db} did not hold txid ${hf.pos!.txid} as its record says: rebuilding it from the stored history`,
            repaired: true,
          });
          await this.rebuild(db, hf, state);
          this.confirmed.set(db, `${hf.pos!.txid}:${hf.pos!.checksum}`);
          return hf.stage(snapshots);
        }
        this.confirmed.set(db, at);
      }
      throw e;
    }
  }

  /** Writes staged changes to the head file once the storage holds their snapshots durably. Never throws. */
  commit(db: string, st: Staged): void {
    const hf = this.files.get(db);
    if (!hf) return;
    try {
      hf.write(st);
    } catch (e) {
      // The record says the pages may be ahead of it: the next use redoes the stored snapshots.
      hf.exact = false;
      this.onDamage(db, {
        what: 'head',
        message: `writing the head file of ${db} failed (${(e as Error).message}); it is brought up to date at its next use`,
        repaired: false,
      });
    }
  }

  /**
   * Copies the pages of `db` at its head (`state.head`) to `out` and returns their position. With
   * `check`, the whole head file is checked against its checksum first (and rebuilt if it is wrong).
   */
  async copy(db: string, state: DbState, out: string, check = false): Promise<HeadPosition> {
    const hf = await this.ready(db, state);
    if (check && !hf.matches()) {
      this.onDamage(db, {
        what: 'head',
        message: `the head file of ${db} did not hold txid ${hf.pos!.txid} as its record says: rebuilding it from the stored history`,
        repaired: true,
      });
      await this.rebuild(db, hf, state);
    }
    await hf.copyTo(out);
    return hf.pos!;
  }

  /**
   * Makes the head file of `db` durable and closes it (a storage releasing an idle database: each open
   * head file holds two file descriptors). The next use opens it again.
   */
  release(db: string): void {
    const hf = this.files.get(db);
    if (!hf) return;
    this.files.delete(db);
    try {
      hf.sync();
    } catch {
      // the next use redoes or rebuilds it
    }
    hf.close();
  }

  /** Makes every head file durable and closes it. */
  close(): void {
    for (const hf of this.files.values()) {
      try {
        hf.sync();
      } catch {
        // the next start redoes or rebuilds it
      }
      hf.close();
    }
    this.files.clear();
  }

  /** True when `p` is a position of the stored history that the storage can read after. */
  private async holds(db: string, state: DbState, p: HeadPosition): Promise<boolean> {
    if (p.txid < state.base.txid) return false;
    if (p.txid === state.base.txid) return p.checksum === state.base.checksum;
    return (await this.stored.snapshotAt(db, p.txid))?.postChecksum === p.checksum;
  }

  /** Applies the stored snapshots after the head file's position (checked), or redoes them after a crash. */
  private async forward(db: string, hf: HeadFile, state: DbState): Promise<void> {
    const p = hf.pos!;
    const head = state.head;
    const last = head.txid > state.base.txid ? await this.stored.snapshotAt(db, head.txid) : undefined;
    const src = await this.spool(db, state.journalId, p, head.txid, false);
    try {
      if (!hf.exact) {
        hf.redo(src.source, {
          journalId: state.journalId,
          txid: head.txid,
          checksum: head.checksum,
          pageSize: last?.pageSize ?? p.pageSize,
          dbPages: last?.dbPages ?? p.dbPages,
        });
        return;
      }
      for (const s of src.reader.snapshots()) hf.applyStored(src.source, s);
      if (hf.pos!.txid !== head.txid || hf.pos!.checksum !== head.checksum) {
        throw new JournalFormatError(
          `the stored snapshots end at ${hf.pos!.txid}`,
          src.reader.end,
          head.txid,
        );
      }
      hf.settle();
    } catch (e) {
      hf.invalidate();
      throw e;
    } finally {
      await src.close();
    }
  }

  /** Builds the head file afresh from the stored history (from its last full image), checking every snapshot. */
  private async rebuild(db: string, hf: HeadFile, state: DbState): Promise<void> {
    hf.invalidate();
    this.confirmed.delete(db);
    const src = await this.history(db, state);
    try {
      const all: SnapshotInfo[] = [];
      try {
        for (const s of src.reader.snapshots()) all.push(s);
      } catch (e) {
        if (e instanceof JournalFormatError) throw damaged(db, e.txid ?? state.base.txid + 1n, e);
        throw e;
      }
      const last = all[all.length - 1];
      if (!last) {
        const h = src.reader.header;
        if (h.baseTxid !== state.head.txid || h.baseChecksum !== state.head.checksum || h.baseTxid !== 0n) {
          throw damaged(db, state.head.txid, new Error('the stored history holds no snapshot'));
        }
        hf.reset(state.journalId, state.head);
        return;
      }
      if (last.txid !== state.head.txid || last.postChecksum !== state.head.checksum) {
        // The reader stops before a last snapshot whose trailer is wrong (it reads as a torn tail).
        throw damaged(db, last.txid + 1n, new Error(`the stored history ends at txid ${last.txid}`));
      }
      const start = checkpointBefore(all, all.length - 1);
      const first = all[start]!;
      const fromEmpty =
        start === 0 && src.reader.header.baseTxid === 0n && src.reader.header.baseChecksum === 0n;
      if ((first.flags & FLAG_FULL_IMAGE) === 0 && !fromEmpty) {
        throw damaged(
          db,
          first.txid,
          new Error(`the stored history starts after txid ${first.txid - 1n} without a full image`),
        );
      }
      hf.reset(state.journalId, { txid: first.txid - 1n, checksum: first.preChecksum });
      for (const s of all.slice(start)) {
        try {
          hf.applyStored(src.source, s);
        } catch (e) {
          if (isCheckFailure(e)) throw damaged(db, s.txid, e as Error);
          throw e;
        }
      }
      hf.settle();
    } catch (e) {
      hf.invalidate();
      throw e;
    } finally {
      await src.close();
    }
  }

  /**
   * The whole stored history as one journal: the storage's own files when it keeps them (history
   * joined with the journal), else its checkpoint (if any) and the snapshots after it, copied.
   */
  private async history(db: string, state: DbState): Promise<Source> {
    const files = await this.stored.historyFiles?.(db);
    if (files) {
      const h = openHistory(nodeFs, files, () => new Error(`no journal at ${files.journal}`));
      return {
        reader: new JournalReader(h.source, { merged: true }),
        source: h.source,
        close: async () => h.close(),
      };
    }
    const cp = state.base.txid > 0n ? await this.stored.checkpoint?.(db, state.base.txid) : undefined;
    const base = cp ? { txid: state.base.txid - 1n, checksum: cp.header.preChecksum } : state.base;
    return this.spool(db, state.journalId, base, state.head.txid, true, cp?.chunks);
  }

  /**
   * A temporary journal (beside the head file) of the stored snapshots after `base` up to `upTo`,
   * preceded by `first` (a checkpoint's bytes) when given.
   */
  private async spool(
    db: string,
    journalId: Uint8Array,
    base: Position,
    upTo: bigint,
    merged: boolean,
    first?: AsyncIterable<Uint8Array>,
  ): Promise<Source> {
    const file = path.join(this.dirOf(db), 'head.spool');
    const out = await fsp.open(file, 'w');
    try {
      await out.write(
        encodeFileHeader({
          version: FORMAT_VERSION,
          journalId,
          createdAt: Date.now(),
          baseTxid: base.txid,
          baseChecksum: base.checksum,
        }),
      );
      if (first) for await (const chunk of first) await out.write(chunk);
      const after = first ? base.txid + 1n : base.txid;
      if (upTo > after) for await (const chunk of this.stored.read(db, after, upTo)) await out.write(chunk);
    } finally {
      await out.close();
    }
    const f = nodeFs.open(file, { readonly: true });
    const source = fileSource(f);
    return {
      reader: new JournalReader(source, { merged }),
      source,
      close: async () => {
        f.close();
        await fsp.rm(file, { force: true });
      },
    };
  }
}

/** Errors that mean a check failed (a snapshot or the head file is wrong), not that something broke. */
function isCheckFailure(e: unknown): boolean {
  return (
    e instanceof DoesNotApplyError || e instanceof JournalFormatError || e instanceof PositionMismatchError
  );
}

function damaged(db: string, txid: bigint, cause: Error): StoredCopyDamagedError {
  return new StoredCopyDamagedError(db, txid, cause.message, { cause });
}
