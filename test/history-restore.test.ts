// Restores that start at an uncompressed checkpoint (a full image of a database larger than what is
// compressed, BODY_COMPRESS_LIMIT / 2): replay copies its pages to the file as they lie, then applies the
// snapshots after it. Every point restores to the bytes it had before compaction.
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { BODY_COMPRESS_LIMIT, FLAG_COMPRESSED, FLAG_FULL_IMAGE } from '../src/format/index.js';
import { parseRetention } from '../src/history/policy.js';
import { open } from '../src/node/index.js';
import { compact, points, restoreHash } from './helpers/history.js';
import { cleanupTempDirs, tempDir } from './helpers/util.js';

after(() => cleanupTempDirs());

const rows = (n: number): string =>
  `with recursive s(i) as (select 1 union all select i + 1 from s where i < ${n})`;

test('restores from an uncompressed checkpoint equal the states before compaction', async () => {
  const db = path.join(tempDir('mycelite-hist-restore-'), 'a.db');
  const c = await open(db, { history: false });
  try {
    c.exec('pragma page_size = 4096; create table t(id integer primary key, v blob)');
    // ~10 MiB of incompressible rows, then updates, a shrink (delete + vacuum) and growth again.
    for (let i = 0; i < 5; i++) c.exec(`${rows(1000)} insert into t(v) select randomblob(2000) from s`);
    for (let i = 0; i < 6; i++) c.exec(`update t set v = randomblob(2000) where id % 37 = ${i}`);
    c.exec('delete from t where id % 3 = 0');
    c.exec('vacuum');
    c.exec(`${rows(300)} insert into t(v) select randomblob(1500) from s`);
    c.exec('update t set v = randomblob(100) where id % 11 = 0');
  } finally {
    c.close();
  }
  const before = await points(db);
  const hashes = new Map<bigint, string>();
  for (const s of before) hashes.set(s.txid, await restoreHash(db, { txid: s.txid }));
  compact(db, { policy: parseRetention('forever:all'), checkpointRatio: 0.05 });
  const after = await points(db);
  assert.deepEqual(
    after.map((s) => s.txid),
    before.map((s) => s.txid),
  );
  const plain = after.filter(
    (s) =>
      (s.flags & FLAG_FULL_IMAGE) !== 0 &&
      (s.flags & FLAG_COMPRESSED) === 0 &&
      s.dbPages * s.pageSize > BODY_COMPRESS_LIMIT / 2,
  );
  assert.ok(plain.length >= 2, `only ${plain.length} uncompressed checkpoints`);
  for (const s of after)
    assert.equal(await restoreHash(db, { txid: s.txid }), hashes.get(s.txid), `txid ${s.txid}`);
});
