/**
 * Rejections not yet reported to the application (`DB-mycelite/rejected`, docs/FORMAT.md "Shared
 * databases"). A rebase drops a rejected change from the pending records; the rejection is written here
 * first (durable before the rewrite that drops the record), and deleted once the 'rejected' events were
 * emitted. A crash in between leaves it here: the next start reports it again — at least once, never
 * lost. An entry whose change is still pending (the rebase was undone by a crash or an error before its
 * rewrite) is not reported, and forgotten with the rest: the change will be applied again and judged
 * again.
 *
 * File: UTF-8, one JSON object per line, `{"seq":"12","reason":"…"}`; replaced whole (atomically).
 * Runtime-neutral.
 */
import { type FileSystem, readAt, writeFileAtomic } from '../files/file-system.js';

/** A rejected local change: its sequence number and why. */
export interface Rejection {
  seq: bigint;
  reason: string;
}

const text = new TextEncoder();
const untext = new TextDecoder();

function read(fs: FileSystem, path: string): Rejection[] {
  if (!fs.exists(path)) return [];
  const f = fs.open(path, { readonly: true });
  let body: string;
  try {
    body = untext.decode(readAt(f, 0, f.size()));
  } finally {
    f.close();
  }
  try {
    return body
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => {
        const j = JSON.parse(line) as { seq: string; reason: string };
        return { seq: BigInt(j.seq), reason: String(j.reason) };
      });
  } catch (e) {
    throw new Error(
      `${path} is damaged (${(e as Error).message}): move it away to go on (the rejections it holds are then not reported)`,
      { cause: e },
    );
  }
}

/** Adds `list` to the rejections not yet reported (durably, before it returns). */
export function keepRejections(fs: FileSystem, path: string, list: readonly Rejection[]): void {
  if (list.length === 0) return;
  const all = [...read(fs, path), ...list];
  const bytes = text.encode(
    all.map((r) => `${JSON.stringify({ seq: String(r.seq), reason: r.reason })}\n`).join(''),
  );
  writeFileAtomic(fs, path, (f) => f.write(bytes, 0));
}

/**
 * The rejections to report now: those kept whose change is no longer pending (`pending`: the pending
 * records' sequence numbers). Call {@link clearRejections} once they were reported.
 */
export function keptRejections(fs: FileSystem, path: string, pending: ReadonlySet<bigint>): Rejection[] {
  const seen = new Set<bigint>();
  return read(fs, path).filter((r) => {
    if (pending.has(r.seq) || seen.has(r.seq)) return false;
    seen.add(r.seq);
    return true;
  });
}

/** Forgets the kept rejections (they were reported). */
export function clearRejections(fs: FileSystem, path: string): void {
  if (fs.exists(path)) fs.delete(path, { syncDir: true });
}
