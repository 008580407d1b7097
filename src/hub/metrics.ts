/**
 * The hub's Prometheus metrics (docs/PROTOCOL.md, "/metrics"), one Registry per hub so that several hubs
 * in one process (tests) do not share counters. No database names appear in labels.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

export type PushRejectReason =
  | 'unauthorized'
  | 'forbidden'
  | 'bad_name'
  | 'bad_request'
  | 'bad_body'
  | 'too_large'
  | 'stale_epoch'
  | 'other_history'
  | 'other_mode'
  | 'head_mismatch'
  | 'unavailable'
  | 'storage_unavailable'
  | 'error';

export class HubMetrics {
  readonly registry = new Registry();
  readonly snapshotsReceived: Counter;
  readonly bytesReceived: Counter;
  readonly snapshotsSent: Counter;
  readonly bytesSent: Counter;
  readonly replicasConnected: Gauge;
  readonly replicaLag: Histogram;
  readonly pushRejected: Counter<'reason'>;
  readonly storageReady: Gauge;
  private readonly figures = new Map<string, Gauge>();

  /** `countDatabases`: undefined when the storage cannot tell now (the gauge keeps its last value). */
  constructor(countDatabases: () => Promise<number | undefined>) {
    const registers = [this.registry];
    new Gauge({
      name: 'mycelite_databases',
      help: 'Databases stored by this hub',
      registers,
      async collect() {
        const n = await countDatabases().catch(() => undefined);
        if (n !== undefined) this.set(n);
      },
    });
    this.snapshotsReceived = new Counter({
      name: 'mycelite_snapshots_received_total',
      help: 'Snapshots appended from pushes',
      registers,
    });
    this.bytesReceived = new Counter({
      name: 'mycelite_bytes_received_total',
      help: 'Bytes of push bodies received',
      registers,
    });
    this.snapshotsSent = new Counter({
      name: 'mycelite_snapshots_sent_total',
      help: 'Snapshots sent to readers (full images included)',
      registers,
    });
    this.bytesSent = new Counter({
      name: 'mycelite_bytes_sent_total',
      help: 'Bytes of read streams sent',
      registers,
    });
    this.replicasConnected = new Gauge({
      name: 'mycelite_replicas_connected',
      help: 'Open follow streams',
      registers,
    });
    this.replicaLag = new Histogram({
      name: 'mycelite_replica_lag_snapshots',
      help: 'Snapshots queued behind the head when a snapshot is sent to a follower',
      buckets: [0, 1, 2, 5, 10, 50, 100, 1000, 10000],
      registers,
    });
    this.pushRejected = new Counter({
      name: 'mycelite_push_rejected_total',
      help: 'Pushes refused, by reason',
      labelNames: ['reason'],
      registers,
    });
    this.storageReady = new Gauge({
      name: 'mycelite_storage_ready',
      help: 'The storage answered at the last health check (1) or not (0)',
      registers,
    });
    this.storageReady.set(1);
    collectDefaultMetrics({ register: this.registry });
  }

  /** Sets the storage's own figures (HubStorage.health), each a gauge, registered when first seen. */
  setFigures(figures: Record<string, { help: string; value: number }>): void {
    for (const [name, f] of Object.entries(figures)) {
      let g = this.figures.get(name);
      if (!g) {
        g = new Gauge({ name, help: f.help, registers: [this.registry] });
        this.figures.set(name, g);
      }
      g.set(f.value);
    }
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
