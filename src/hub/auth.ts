/**
 * Hub tokens (docs/PROTOCOL.md, "Auth"): JWTs signed with HS256 and the hub's key, scoped to one database
 * and one role, with a required expiry. Several hubs that share the key accept each other's tokens.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { errors, jwtVerify, SignJWT } from 'jose';
import { checkDbName, HubError } from '../protocol/index.js';

export type Role = 'writer' | 'reader';

/** What a verified token allows. */
export interface TokenClaims {
  db: string;
  role: Role;
  /** Expiry, seconds since the epoch. */
  exp: number;
}

/** Smallest key accepted (bytes). */
export const MIN_KEY_BYTES = 32;
/** The key file inside the hub's data directory. */
export const KEY_FILE = 'hub.key';
/** Environment variable that holds the key (base64url), overriding the key file. */
export const KEY_ENV = 'MYCELITE_HUB_KEY';

function decodeKey(text: string, where: string): Uint8Array {
  const key = Buffer.from(text.trim(), 'base64url');
  if (key.length < MIN_KEY_BYTES) {
    throw new Error(
      `the hub key in ${where} is ${key.length} bytes; it must be at least ${MIN_KEY_BYTES} random bytes, base64url-encoded`,
    );
  }
  return new Uint8Array(key);
}

/**
 * The hub's signing key: `MYCELITE_HUB_KEY` (base64url) when set, else `DATA/hub.key`, created with 32
 * random bytes (mode 0600) when missing. Creation is atomic: two processes starting at once agree.
 */
export function loadOrCreateKey(dataDir: string, env: NodeJS.ProcessEnv = process.env): Uint8Array {
  const fromEnv = env[KEY_ENV];
  if (fromEnv !== undefined && fromEnv !== '') return decodeKey(fromEnv, `$${KEY_ENV}`);
  const file = path.join(dataDir, KEY_FILE);
  if (fs.existsSync(file)) return decodeKey(fs.readFileSync(file, 'utf8'), file);
  fs.mkdirSync(dataDir, { recursive: true });
  const tmp = `${file}.tmp-${process.pid}-${crypto.randomBytes(6).toString('hex')}`;
  const fd = fs.openSync(tmp, 'wx', 0o600);
  try {
    fs.writeSync(fd, `${crypto.randomBytes(MIN_KEY_BYTES).toString('base64url')}\n`);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.linkSync(tmp, file); // fails if another process created the key first: then use theirs
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  } finally {
    fs.unlinkSync(tmp);
  }
  return decodeKey(fs.readFileSync(file, 'utf8'), file);
}

/** Signs a token for `db` and `role`, valid for `ttlSeconds`. */
export async function mintToken(
  key: Uint8Array,
  claims: { db: string; role: Role; ttlSeconds: number },
): Promise<string> {
  const bad = checkDbName(claims.db);
  if (bad) throw new Error(bad);
  if (claims.role !== 'writer' && claims.role !== 'reader') {
    throw new Error(`role must be writer or reader, not ${JSON.stringify(claims.role)}`);
  }
  if (!(claims.ttlSeconds > 0))
    throw new Error(`token lifetime must be positive, got ${claims.ttlSeconds} s`);
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ db: claims.db, role: claims.role })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuedAt(now)
    .setExpirationTime(now + Math.ceil(claims.ttlSeconds))
    .sign(key);
}

/** Verifies a bearer token; throws HubError 401 saying why not (never echoing the token). */
export async function verifyToken(key: Uint8Array, token: string): Promise<TokenClaims> {
  const unauthorized = (why: string): HubError =>
    new HubError({
      error: 'unauthorized',
      message: `${why}; ask the hub's operator for a token (mycelite token)`,
    });
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(token, key, {
      algorithms: ['HS256'],
      requiredClaims: ['exp', 'db', 'role'],
    }));
  } catch (e) {
    if (e instanceof errors.JWTExpired) throw unauthorized('the token has expired');
    if (e instanceof errors.JOSEAlgNotAllowed) throw unauthorized('the token is not signed with HS256');
    if (e instanceof errors.JWSSignatureVerificationFailed) {
      throw unauthorized("the token's signature does not match this hub's key");
    }
    throw unauthorized('the token is malformed or incomplete');
  }
  const { db, role, exp } = payload;
  if (typeof db !== 'string' || (role !== 'writer' && role !== 'reader') || typeof exp !== 'number') {
    throw unauthorized('the token lacks a valid db, role or exp claim');
  }
  return { db, role, exp };
}

/**
 * Checks the request's Authorization header for `db` and `need`; throws HubError 401 or 403. Auth comes
 * before anything else of a request (PROTOCOL.md).
 */
export async function authorize(
  key: Uint8Array,
  header: string | undefined,
  db: string,
  need: Role,
): Promise<TokenClaims> {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  if (!m) {
    throw new HubError({
      error: 'unauthorized',
      message: 'no token: send Authorization: Bearer TOKEN (mint one with mycelite token)',
    });
  }
  const claims = await verifyToken(key, m[1]!);
  if (claims.db !== db) {
    throw new HubError({ error: 'forbidden', message: 'the token is for another database' });
  }
  if (need === 'writer' && claims.role !== 'writer') {
    throw new HubError({ error: 'forbidden', message: 'a reader token cannot write: use a writer token' });
  }
  return claims;
}

/** Parses a lifetime like `30d`, `12h`, `15m`, `90s` or plain seconds into seconds. */
export function parseTtl(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([smhdw]?)$/.exec(text.trim());
  if (!m) throw new Error(`cannot read the lifetime ${JSON.stringify(text)}: use e.g. 30d, 12h, 15m or 90s`);
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[m[2] as '' | 's' | 'm' | 'h' | 'd' | 'w'];
  const seconds = Number(m[1]) * unit;
  if (!(seconds >= 1)) throw new Error(`the lifetime ${JSON.stringify(text)} is shorter than one second`);
  return Math.round(seconds);
}
