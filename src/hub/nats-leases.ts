/**
 * Leases on NATS: one message per database in one lease stream (subject per database), changed by
 * compare-and-set over the whole stream's last sequence — race-free across hubs, unlike per-subject
 * expectations or KV revisions on nats-server 2.9 (docs/ARCHITECTURE.md, "Scale-out on NATS").
 */
import type { JetStreamClient } from '@nats-io/jetstream';
import { isNotFound, type JsmAt, publishExpecting, retry } from './nats-js.js';
import type { NatsNames } from './nats-wire.js';
import { type StoredLease, sameLease } from './storage.js';

export class NatsLeases {
  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JsmAt,
    private readonly names: NatsNames,
    private readonly timeoutMs: number,
  ) {}

  async get(db: string): Promise<StoredLease | undefined> {
    return (await this.message(db)).lease;
  }

  /**
   * Compare and set over the whole lease stream: read its last sequence S, then the lease (written at
   * or before S, else read again), then publish expecting S. Any lease change after S refuses the
   * publish; then the comparison is made again. A retry after a lost answer may find its own write and
   * report false: the caller reads again (src/hub/lease.ts does).
   */
  async cas(db: string, expected: StoredLease | undefined, next: StoredLease): Promise<boolean> {
    const stream = this.names.leaseStream;
    for (let i = 0; i < 100; i++) {
      const info = await retry(this.timeoutMs, 'read the lease stream', (n) =>
        this.jsm(n).streams.info(stream),
      );
      const last = info.state.last_seq;
      if (last === 0) {
        await retry(this.timeoutMs, 'create the lease stream', () =>
          this.js.publish(`${this.names.leaseSubject('x').slice(0, -1)}_`, '', { msgID: 'created' }),
        );
        continue;
      }
      const current = await this.message(db);
      if (current.seq > last) continue;
      if (!sameLease(current.lease, expected)) return false;
      if (current.lease && next.epoch < current.lease.epoch) {
        throw new Error(`lease epoch ${next.epoch} of ${db} would go back from ${current.lease.epoch}`);
      }
      const ack = await publishExpecting(this.js, this.timeoutMs, 'write a lease', {
        subject: this.names.leaseSubject(db),
        data: JSON.stringify(next),
        stream,
        lastSequence: last,
      });
      if (ack) return true;
    }
    throw new Error(`the leases change too fast to set the lease of ${db}; retry`);
  }

  private async message(db: string): Promise<{ lease?: StoredLease; seq: number }> {
    const m = await retry(this.timeoutMs, 'read a lease', (n) =>
      this.jsm(n)
        .streams.getMessage(this.names.leaseStream, { last_by_subj: this.names.leaseSubject(db) })
        .catch((e: unknown) => {
          if (isNotFound(e)) return null;
          throw e;
        }),
    );
    if (!m || m.data.length === 0) return { seq: m?.seq ?? 0 };
    return { lease: m.json<StoredLease>(), seq: m.seq };
  }
}
