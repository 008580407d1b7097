/**
 * `mycelite restore --hub URL --db NAME [--txid N | --at T] --output FILE`: rebuild a database straight
 * from a hub's history, without a replica (what a Litestream user does after losing the server). The
 * hub's stream from txid 0 is a valid journal (docs/PROTOCOL.md, "read"): it is written to a scratch
 * directory beside FILE, replayed like any local journal (every snapshot checked, the result's checksum
 * compared), renamed to FILE, and the scratch directory removed. A hub that compacted its older
 * snapshots streams only from an image of its head: then only the head and later can be restored here.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { nodeRuntime } from '../node/runtime.js';
import { HubError } from '../protocol/index.js';
import type { Target } from '../restore/replay.js';
import { restoreDatabase } from '../restore/restore.js';
import { HubClient, type HubTarget } from '../sync/hub-client.js';
import { checkHubOptions } from '../sync/writer-start.js';

export async function restoreFromHub(
  target: HubTarget,
  output: string,
  options: { target: Target; force: boolean },
): Promise<{ txid: bigint; timestamp: number; dbPages: number } | undefined> {
  const bad = checkHubOptions(target, 'reader');
  if (bad) throw new Error(bad);
  if (fs.existsSync(output) && !options.force) {
    throw new Error(`${output} exists: choose another --output or pass --force to replace it`);
  }
  const client = new HubClient(target);
  const state = await client.state();
  if (!state) throw new Error(`the hub ${target.url} has no database ${target.db}`);
  let body: ReadableStream<Uint8Array>;
  let fromImage = false;
  try {
    body = await client.read({ after: { txid: 0n, checksum: 0n } });
  } catch (e) {
    if (!(e instanceof HubError) || e.code !== 'reset') throw e;
    // The hub compacted its first snapshots: it streams from an image of its head.
    body = await client.read({});
    fromImage = true;
  }
  const scratch = fs.mkdtempSync(path.join(path.dirname(path.resolve(output)), '.mycelite-restore-'));
  try {
    const db = path.join(scratch, 'hub.db');
    fs.mkdirSync(`${db}-mycelite`);
    const out = fs.openSync(`${db}-mycelite/journal`, 'w');
    try {
      for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) fs.writeSync(out, chunk);
    } finally {
      fs.closeSync(out);
    }
    try {
      return await restoreDatabase(nodeRuntime.fs, db, output, options);
    } catch (e) {
      if (fromImage && options.target !== 'latest') {
        throw new Error(
          `the hub ${target.url} keeps ${target.db}'s snapshots from its head (txid ${state.head.txid}) on only (it compacted the older ones): ${(e as Error).message}`,
        );
      }
      throw e;
    }
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}
