/**
 * The compacted histories of a NATS deployment (docs/ARCHITECTURE.md, "Scale-out on NATS JetStream",
 * "Compaction"): one JetStream object store (`PREFIX_HISTORY`, replicated like the streams), one object
 * per compaction, under a name no other compaction uses (`DB/TXID-UUID`). The checkpoint a compaction
 * stores names its object (Mycelite-History), so the stream stays the only truth: the history of a
 * database is the object its current checkpoint names. An object is written whole before a checkpoint
 * names it, and removed (its chunks and its record) only once a later checkpoint stands for it.
 */
import * as fs from 'node:fs';
import { Readable } from 'node:stream';
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import { Base64UrlPaddedCodec, type ObjectStore, Objm, StorageType } from '@nats-io/obj';
import { isNotFound, retry } from './nats-js.js';

/** A download that receives nothing for this long is abandoned (ms): its object was removed meanwhile. */
const STALL_MS = 5000;

/** Thrown by `download` when the object is not there (removed by a later compaction, or never stored). */
export class HistoryGoneError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HistoryGoneError';
  }
}

export class NatsHistories {
  private store: Promise<ObjectStore | undefined> | undefined;

  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: () => JetStreamManager,
    private readonly bucket: string,
    private readonly replicas: number,
    private readonly timeoutMs: number,
  ) {}

  /** The object store (created when `create`); undefined when it does not exist yet. */
  private async open(create: boolean): Promise<ObjectStore | undefined> {
    const known = await this.store?.catch(() => undefined);
    if (known) return known;
    const objm = new Objm(this.js);
    const p = retry(this.timeoutMs, `open the object store ${this.bucket}`, async () => {
      if (create) return objm.create(this.bucket, { replicas: this.replicas, storage: StorageType.File });
      return objm.open(this.bucket).catch((e: unknown) => {
        if (isNotFound(e)) return undefined;
        throw e;
      });
    });
    this.store = p;
    const s = await p.catch((e: unknown) => {
      this.store = undefined;
      throw e;
    });
    if (!s) this.store = undefined;
    return s;
  }

  /** Stores the file `file` as the object `name` (historyName(), src/hub/nats-wire.ts). */
  async upload(name: string, file: string): Promise<void> {
    const store = (await this.open(true))!;
    await retry(this.timeoutMs, `store the history ${name}`, () =>
      store.put({ name }, Readable.toWeb(fs.createReadStream(file)) as ReadableStream<Uint8Array>),
    );
  }

  /**
   * Copies the object `name` into the file `file` (its SHA-256 digest checked). HistoryGoneError when
   * it is not there, or disappears while it is read.
   */
  async download(name: string, file: string): Promise<void> {
    const store = await this.open(false);
    if (!store) throw new HistoryGoneError(`no object store ${this.bucket}`);
    const r = await retry(this.timeoutMs, `read the history ${name}`, () => store.get(name));
    if (!r) throw new HistoryGoneError(`the history ${name} is gone`);
    const out = await fs.promises.open(file, 'w');
    const reader = r.data.getReader();
    try {
      for (;;) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const stalled = new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new HistoryGoneError(`the history ${name} stopped coming (removed meanwhile?)`)),
            STALL_MS,
          );
        });
        const next = await Promise.race([reader.read(), stalled]).finally(() => clearTimeout(timer));
        if (next.done) break;
        await out.write(next.value);
      }
      const err = await r.error;
      if (err) throw err;
    } catch (e) {
      await reader.cancel().catch(() => undefined);
      throw e;
    } finally {
      await out.close();
    }
  }

  /** Removes the object `name` (its chunks, then its record); nothing when it is not there. */
  async remove(name: string): Promise<void> {
    const store = await this.open(false);
    if (!store) return;
    const stream = `OBJ_${this.bucket}`;
    await retry(this.timeoutMs, `remove the history ${name}`, async () => {
      const info = await store.info(name);
      if (info) await this.jsm().streams.purge(stream, { filter: `$O.${this.bucket}.C.${info.nuid}` });
      await this.jsm()
        .streams.purge(stream, { filter: `$O.${this.bucket}.M.${Base64UrlPaddedCodec.encode(name)}` })
        .catch((e: unknown) => {
          if (!isNotFound(e)) throw e;
        });
    });
  }
}
