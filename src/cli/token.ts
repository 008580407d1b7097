/** `mycelite token`: mint a token for one database and one role with the hub's key. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { KEY_ENV, KEY_FILE, loadOrCreateKey, mintToken, parseTtl, type Role } from '../hub/auth.js';
import { checkDbName } from '../protocol/index.js';
import { UsageError, writeErr, writeOut } from './common.js';
import { DEFAULT_DATA_DIR } from './serve.js';

interface TokenOptions {
  db: string;
  role: string;
  ttl: string;
  data: string;
}

export function registerToken(program: Command): void {
  program
    .command('token')
    .description("mint a token for one database and one role, signed with the hub's key")
    .requiredOption('--db <NAME>', 'database name the token is for')
    .requiredOption('--role <ROLE>', 'writer (push, lease and read) or reader (read only)')
    .option('--ttl <TIME>', 'lifetime, e.g. 30d, 12h, 15m, 90s', '30d')
    .option('--data <DIR>', "the hub's data directory (its key: DIR/hub.key)", DEFAULT_DATA_DIR)
    .addHelpText(
      'after',
      `
Prints only the token on stdout. The key is $MYCELITE_HUB_KEY (base64url) when set, else DIR/hub.key
(created, mode 0600, if missing, and said so on stderr: start the hub with the same --data, or share
the key between hubs).
Anyone holding a token can do what its role allows on its database until it expires: keep it secret.

Examples:
  $ WT=$(mycelite token --data hubdata --db app --role writer)
  $ RT=$(mycelite token --data hubdata --db app --role reader --ttl 12h)`,
    )
    .action(async (options: TokenOptions) => {
      if (options.role !== 'writer' && options.role !== 'reader') {
        throw new UsageError(`--role must be writer or reader, not ${JSON.stringify(options.role)}`);
      }
      const bad = checkDbName(options.db);
      if (bad) throw new UsageError(bad);
      let ttlSeconds: number;
      try {
        ttlSeconds = parseTtl(options.ttl);
      } catch (e) {
        throw new UsageError(`--ttl: ${(e as Error).message}`);
      }
      const dataDir = path.resolve(options.data);
      const keyFile = path.join(dataDir, KEY_FILE);
      const creating = !process.env[KEY_ENV] && !fs.existsSync(keyFile);
      const key = loadOrCreateKey(dataDir);
      const token = await mintToken(key, { db: options.db, role: options.role as Role, ttlSeconds });
      // A mistyped --data makes a new key silently, and a token no running hub accepts: say so.
      if (creating) {
        writeErr(
          `mycelite token: no hub key in ${dataDir}: made a new one (${keyFile}); only a hub started with --data ${options.data} (or given this key) accepts the token\n`,
        );
      }
      writeOut(`${token}\n`);
    });
}
