/**
 * `GET /v1/db/NAME/history` (docs/PROTOCOL.md, "history"): the database's compacted history file, as the
 * hub keeps it (a hub on files with compaction: the points its `--retain` policy keeps before the
 * journal's base), for `mycelite restore --hub` to reach a point older than the base. 404 `not_found`
 * when the storage keeps none (nothing compacted yet, or a hub on NATS, which keeps no history file).
 */
import * as fs from 'node:fs';
import { Readable } from 'node:stream';
import type { Context } from 'hono';
import { HubError } from '../protocol/index.js';
import { authorizeName, type HubContext } from './context.js';

export async function handleHistory(ctx: HubContext, c: Context): Promise<Response> {
  const name = await authorizeName(ctx, c, 'reader');
  const files = await ctx.storage.historyFiles?.(name);
  let stream: fs.ReadStream | undefined;
  if (files) {
    try {
      // Opened before answering: a compaction that replaces the file meanwhile leaves this one whole.
      const fd = await fs.promises.open(files.history, 'r');
      stream = fd.createReadStream();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
  if (!stream) {
    throw new HubError(
      {
        error: 'not_found',
        message: `${name} has no compacted history on this hub (its whole history is in its snapshots)`,
      },
      404,
    );
  }
  return c.body(Readable.toWeb(stream) as ReadableStream<Uint8Array>, 200, {
    'content-type': 'application/octet-stream',
  });
}
