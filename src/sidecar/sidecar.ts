/**
 * The running sidecar (the last layer, see sidecar-state.ts): it looks at the WAL on file-change events
 * and a poll, swaps when due, yields to blocking checkpoints, and stops; the `Replicator` it gives.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Replicator } from './replicator.js';
import { Startup } from './startup.js';
import { walIndexEnd } from './wal-file.js';

/** The sidecar (see above and replicate.ts). */
export class Sidecar extends Startup {
  /** Transactions the last look found (see watch). */
  private lastFound = 0;
  private watcher: fs.FSWatcher | undefined;
  private timer: ReturnType<typeof setInterval> | undefined;
  private soon: ReturnType<typeof setTimeout> | undefined;
  private failed: Error | undefined;

  /** One look at the WAL (from events and the poll). */
  tick(): void {
    if (this.stopped || this.yielding) return;
    try {
      this.lastFound = this.capture();
      const copied = this.cursor.frame - this.swapFrame;
      const due =
        copied >= (this.options.checkpointFrames ?? 1000) ||
        (copied > 0 && Date.now() - this.swapAt >= (this.options.checkpointMs ?? 1000));
      if (due && this.trySwap()) return;
      const pid = this.blockingCheckpointer();
      if (pid !== undefined) {
        this.yieldTo(pid).catch((e) => this.fail(e as Error));
      }
    } catch (e) {
      this.fail(e as Error);
    }
  }

  private fail(e: Error): void {
    if (this.stopped) return;
    this.failed = e;
    this.stop();
    this.release();
    this.emitter.emit('error', e);
  }

  watch(): void {
    // While transactions keep coming (the last look found some), wait a little before looking again, so
    // that more of them share one fsync: fewer flushes competing with the application's own.
    const onChange = (): void => {
      this.soon ??= setTimeout(
        () => {
          this.soon = undefined;
          this.tick();
        },
        this.lastFound > 0 ? (this.options.coalesceMs ?? 2) : 0,
      );
    };
    try {
      // The directory: the WAL may be created, truncated or deleted.
      this.watcher = fs.watch(path.dirname(this.file), (_e, name) => {
        if (name === path.basename(this.wal.path)) onChange();
      });
    } catch {
      this.watcher = undefined;
    }
    this.timer = setInterval(() => this.tick(), this.options.pollMs ?? 50);
  }

  private stop(): void {
    this.stopped = true;
    this.watcher?.close();
    clearInterval(this.timer);
    clearTimeout(this.soon);
  }

  /** Closes what is open (no more capture). */
  release(): void {
    try {
      if (this.reader?.inTransaction) this.reader.exec('COMMIT');
    } catch {
      // closing anyway
    }
    try {
      if (this.writer?.inTransaction) this.writer.exec('ROLLBACK');
    } catch {
      // closing anyway
    }
    this.reader?.close();
    this.writer?.close();
    this.reader = this.writer = undefined;
    this.wal.close();
    // Only now that no connection holds a lock (see dbFd).
    if (this.dbFd !== undefined) fs.closeSync(this.dbFd);
    if (this.shmFd !== undefined) fs.closeSync(this.shmFd);
    this.dbFd = this.shmFd = undefined;
    this.state?.close();
    this.state = undefined;
    try {
      this.journal?.close();
    } catch {
      // the next start cuts what is left
    }
    this.lock?.release();
    this.lock = undefined;
  }

  pendingFrames(): number {
    if (this.stopped || this.shmFd === undefined) return 0;
    const h = this.cursor.header ?? this.wal.header();
    const end = h ? walIndexEnd(this.shmFd, h) : undefined;
    return end === undefined ? 0 : Math.max(0, end - this.cursor.frame);
  }

  async catchUp(opts: { check?: string } = {}): Promise<void> {
    if (this.failed) throw this.failed;
    if (this.stopped) throw new Error('the sidecar is closed');
    while (this.yielding) await new Promise((r) => setTimeout(r, 1));
    for (let tries = 0; !this.trySwap(opts); tries++) {
      if (tries > 2000) throw new Error(`${this.file}: the application held the write lock for 10 s`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  api(): Replicator {
    return {
      dbPath: this.file,
      journalPath: this.paths.journal,
      position: () => this.journal.position,
      pendingFrames: () => this.pendingFrames(),
      sync: this.pusher,
      on: (event, fn) => this.emitter.on(event, fn),
      catchUp: () => this.catchUp(),
      close: async () => {
        if (this.stopped) {
          await this.pusher?.close();
          return;
        }
        try {
          await this.catchUp({ check: 'at stop' });
        } catch {
          // what is committed and not copied is copied at the next start
        }
        this.stop();
        this.release();
        // A graceful stop: give the hub a few seconds to take what was captured.
        await this.pusher?.flush(5_000).catch(() => undefined);
        await this.pusher?.close();
      },
    };
  }
}
