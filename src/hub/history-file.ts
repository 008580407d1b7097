/**
 * `GET /v1/db/NAME/history` (docs/PROTOCOL.md, "history"): the database's compacted history, as the
 * storage keeps it (`HubStorage.history`: on files the history file, on NATS the object its checkpoint
 * names; the points the `--retain` policy keeps before the base), for `mycelite restore --hub` to reach
 * a point older than the base. 404 `not_found` when the storage keeps none (nothing compacted yet).
 */
import { Readable } from 'node:stream';
import type { Context } from 'hono';
import { HubError } from '../protocol/index.js';
import { authorizeName, type HubContext } from './context.js';

export async function handleHistory(ctx: HubContext, c: Context): Promise<Response> {
  const name = await authorizeName(ctx, c, 'reader');
  // Whole before answering: a compaction meanwhile does not change what this answer sends.
  const history = await ctx.storage.history?.(name);
  if (!history) {
    throw new HubError(
      {
        error: 'not_found',
        message: `${name} has no compacted history on this hub (its whole history is in its snapshots)`,
      },
      404,
    );
  }
  return c.body(
    Readable.toWeb(
      history instanceof Readable ? history : Readable.from(history),
    ) as ReadableStream<Uint8Array>,
    200,
    {
      'content-type': 'application/octet-stream',
    },
  );
}
