/**
 * `mycelite restore --hub URL --db NAME [--txid N | --at T] --output FILE`: rebuild a database straight
 * from a hub's history, without a replica (what a Litestream user does after losing the server). The
 * hub's stream from txid 0 is a valid journal (docs/PROTOCOL.md, "read"): it is written to a scratch
 * directory beside FILE, replayed like any local journal (every snapshot checked, the result's checksum
 * compared), renamed to FILE, and the scratch directory removed. A hub that compacted its older
 * snapshots: its compacted history file (the points its `--retain` names; a hub on files or on NATS) and
 * the stream from where it ends, joined like a local history and journal; a hub that keeps no history
 * file streams from an image of its head: then only the head and later can be restored here.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { HubClient, type HubTarget } from '../client/hub-client.js';
import { checkHubOptions } from '../client/writer-start.js';
import { loadHash } from '../format/index.js';
import { historyEnd } from '../history/source.js';
import { nodeRuntime } from '../node/runtime.js';
import { HubError } from '../protocol/index.js';
import type { Target } from '../restore/replay.js';
import { restoreDatabase } from '../restore/restore.js';

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
  const scratch = fs.mkdtempSync(path.join(path.dirname(path.resolve(output)), '.mycelite-restore-'));
  try {
    const db = path.join(scratch, 'hub.db');
    fs.mkdirSync(`${db}-mycelite`);
    const fromImage = await fetchHistory(
      client,
      state.journalId,
      `${db}-mycelite`,
      options.target !== 'latest',
    );
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

/**
 * Writes the hub's history of the database into `dir` as a journal directory: the stream from txid 0
 * when the hub still has it; else, when an older point is wanted, the compacted history file the hub
 * keeps and the stream from where it ends; else the stream from an image of the head. True for the last
 * (only the head and later are there). A compaction between the two requests moves the base: tried again.
 */
async function fetchHistory(
  client: HubClient,
  journalId: Uint8Array,
  dir: string,
  older: boolean,
): Promise<boolean> {
  for (let attempt = 0; ; attempt++) {
    try {
      await save(await client.read({ after: { txid: 0n, checksum: 0n } }), `${dir}/journal`);
      return false;
    } catch (e) {
      if (!isReset(e)) throw e;
    }
    const history = older ? await client.history() : undefined;
    if (!history) {
      // The hub compacted its first snapshots and keeps no history file: it streams from an image of its head.
      await save(await client.read({}), `${dir}/journal`);
      return true;
    }
    await save(history, `${dir}/history`);
    await loadHash();
    const end = historyEnd(nodeRuntime.fs, `${dir}/history`);
    if (!end) throw new Error(`the hub sent an empty history for ${client.target.db}`);
    try {
      await save(await client.read({ after: end, journalId }), `${dir}/journal`);
      return false;
    } catch (e) {
      if (!isReset(e) || attempt >= 2) throw e;
      fs.rmSync(`${dir}/history`, { force: true });
    }
  }
}

function isReset(e: unknown): boolean {
  return e instanceof HubError && e.code === 'reset';
}

async function save(body: ReadableStream<Uint8Array>, file: string): Promise<void> {
  const out = fs.openSync(file, 'w');
  try {
    for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) fs.writeSync(out, chunk);
  } finally {
    fs.closeSync(out);
  }
}
