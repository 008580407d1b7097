/**
 * `npm start`: Mycelite replicating live on one machine. In a fresh temporary directory it starts a hub
 * on loopback, two devices that both write one shared database (a laptop and a phone: each a small
 * household-budget transaction every 100-300 ms, with random ids, RANDOM() and CURRENT_TIMESTAMP
 * included; and every second both set the same budget row at once, so one of them meets a conflict),
 * and two replicas that follow the hub live. Every second it prints each device's commit rate, txid,
 * pending changes and conflicts, the hub's txid, and each replica's txid and lag; at the end it lets
 * everything sync, checks that the four files are byte-for-byte equal, and restores an earlier moment
 * from a replica's journal (time travel). Ctrl-C stops it cleanly.
 *
 *   npm start                      # 12 seconds
 *   npm start -- --seconds 60      # longer (0: until Ctrl-C)
 *   npm start -- --keep            # keep the files afterwards
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { mintToken, startHub } from '../src/hub/index.js';
import {
  HubClient,
  type MyceliteDatabase,
  nodeRuntime,
  open,
  openReadonly,
  openReplica,
  type ReplicaDatabase,
} from '../src/node/index.js';
import { restoreDatabase } from '../src/restore/restore.js';

const sha256 = (file: string): string => createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const say = (s = ''): void => console.log(s);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Args {
  seconds: number;
  keep: boolean;
}

function parseArgs(): Args {
  const cmd = new Command('npm start --')
    .description('Mycelite live replication demo: a hub, two writing devices and two replicas on loopback')
    .option(
      '--seconds <n>',
      'how long to run (0: until Ctrl-C)',
      (v) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0)
          throw new InvalidArgumentError('a whole number of seconds, 0 or more');
        return n;
      },
      12,
    )
    .option('--keep', 'keep the temporary directory afterwards', false)
    .parse(process.argv.slice(2), { from: 'user' });
  return cmd.opts<Args>();
}

const SCHEMA = `create table if not exists expenses(
  id text primary key, spent_at text, device text, category text, amount_cents integer, note text);
create table if not exists budget(key text primary key, cents integer, set_by text)`;
const CATEGORIES = ['groceries', 'rent', 'transport', 'fun', 'utilities'];

/** The hub requests a device has sent that have not been answered yet (when each was sent). */
type InFlight = Map<string, number>;

/** fetch that keeps `inFlight` up to date: a request the hub never answers shows in a failure's explanation. */
function trackedFetch(inFlight: InFlight): typeof fetch {
  let n = 0;
  return async (input, init) => {
    const key = `${++n} ${init?.method ?? 'GET'} ${new URL(String(input)).pathname.replace(/^.*\/db\/[^/]+/, '') || '/'}`;
    inFlight.set(key, Date.now());
    try {
      return await fetch(input, init);
    } finally {
      inFlight.delete(key);
    }
  };
}

/** One writing device: its database and what it did this second. */
interface Device {
  name: string;
  path: string;
  db: MyceliteDatabase;
  inFlight: InFlight;
  commits: number;
  conflicts: number;
  rejected: number;
  /** One small transaction, as an app would. */
  step(): void;
  /** Sets the monthly budget limit: both devices do at the same moment, so one of them meets a conflict. */
  setLimit(cents: number): void;
}

async function openDevice(
  name: string,
  file: string,
  hub: { url: string; db: string; token: string },
): Promise<Device> {
  const inFlight: InFlight = new Map();
  const db = await open(file, { shared: true, hub: { ...hub, fetch: trackedFetch(inFlight) } });
  db.exec(SCHEMA);
  // Random ids: two devices adding rows at the same time never mint the same key.
  const insert = db.prepare(
    `insert into expenses(id, spent_at, device, category, amount_cents, note)
     values (lower(hex(randomblob(16))), current_timestamp, ?, ?, abs(random()) % 20000, hex(randomblob(6)))`,
  );
  const spend = db.transaction((n: number) => {
    for (let k = 0; k < n; k++) insert.run(name, CATEGORIES[Math.floor(Math.random() * CATEGORIES.length)]);
  });
  // Now and then, correct one of the newest rows: both devices do, so sometimes the same one (a conflict).
  const fix = db.prepare(
    `update expenses set amount_cents = amount_cents / 2, note = ?
     where id = (select id from (select id from expenses order by rowid desc limit 3) order by random() limit 1)`,
  );
  const limit = db.prepare("update budget set cents = ?, set_by = ? where key = 'monthly-limit'");
  const d: Device = {
    name,
    path: file,
    db,
    inFlight,
    commits: 0,
    conflicts: 0,
    rejected: 0,
    step: () => {
      spend(1 + Math.floor(Math.random() * 3));
      if (Math.random() < 0.3) fix.run(`halved on ${name}`);
      d.commits++;
    },
    setLimit: (cents) => {
      limit.run(cents, name);
      d.commits++;
    },
  };
  db.sync!.on('conflict', () => d.conflicts++);
  db.sync!.on('rejected', () => d.rejected++);
  return d;
}

/** One line of a device's or replica's sync status: its state, positions and last error. */
function describeStatus(
  name: string,
  s: { state: string; lastError?: string } & Record<string, unknown>,
): string {
  const parts = Object.entries(s)
    .filter(([k, v]) => k !== 'state' && k !== 'lastError' && v !== undefined)
    .map(
      ([k, v]) =>
        `${k} ${v instanceof Date ? v.toISOString() : typeof v === 'object' ? JSON.stringify(v) : String(v)}`,
    );
  return `  ${name.padEnd(9)} ${s.state} (${parts.join(', ')})${s.lastError ? `: ${s.lastError}` : ', no error'}`;
}

/** Every device's and replica's status and the hub's head and lease: why the files would differ. */
async function explain(devices: Device[], replicas: ReplicaDatabase[], client: HubClient): Promise<void> {
  for (const d of devices) {
    say(describeStatus(d.name, { ...d.db.sync!.status() }));
    const now = Date.now();
    for (const [what, since] of d.inFlight)
      say(`            waiting ${now - since} ms for the hub's answer to ${what.replace(/^\d+ /, '')}`);
  }
  for (const [i, r] of replicas.entries()) say(describeStatus(`replica-${i + 1}`, { ...r.status() }));
  const hub = await client.state().catch((e: unknown) => (e as Error).message);
  if (typeof hub === 'string') say(`  hub       cannot be read: ${hub}`);
  else
    say(
      `  hub       head ${hub?.head.txid ?? '-'}, lease ${hub?.lease ? `epoch ${hub.lease.epoch} until ${hub.lease.expiresAt.toISOString()}` : 'free'}`,
    );
}

/** Lets every device push and take in the others' changes until all hold the hub's head. */
async function settle(devices: Device[], client: HubClient, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    for (const d of devices) await d.db.sync!.flush(Math.max(1, until - Date.now())).catch(() => {});
    const head = (await client.state())?.head;
    const at = devices.map((d) => d.db.position());
    if (head && at.every((p) => p.txid === head.txid && p.checksum === head.checksum && p.txid > 0n))
      return true;
    await sleep(50);
  }
  return false;
}

async function demo(): Promise<void> {
  const args = parseArgs();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-demo-'));
  const hub = await startHub({ dataDir: path.join(dir, 'hub'), port: 0, logLevel: 'silent' });
  const token = (role: 'writer' | 'reader'): Promise<string> =>
    mintToken(hub.key, { db: 'budget', role, ttlSeconds: 3600 });
  const target = { url: hub.url, db: 'budget' };
  const replicaPaths = [path.join(dir, 'replica-1.db'), path.join(dir, 'replica-2.db')];

  say('Mycelite: SQLite replicated live, written by two devices.');
  say(`  hub       ${hub.url}  (data in ${path.join(dir, 'hub')})`);
  say('  devices   laptop.db, phone.db: one shared database, both write; each commit is local at once,');
  say("            then synced: the hub orders the devices' changes, each takes the other's in");
  say(`  replicas  replica-1.db, replica-2.db: follow the hub's live stream and apply each snapshot`);
  say();

  const devices = [
    await openDevice('laptop', path.join(dir, 'laptop.db'), { ...target, token: await token('writer') }),
    await openDevice('phone', path.join(dir, 'phone.db'), { ...target, token: await token('writer') }),
  ];
  const client = new HubClient({ ...target, token: await token('reader') });
  devices[0]!.db.exec("insert or ignore into budget values ('monthly-limit', 200000, 'laptop')");
  if (!(await settle(devices, client, 10_000))) {
    // Both should start from the same database: say why not, and go on (the end check will tell).
    say('The devices did not sync within 10 s of starting:');
    await explain(devices, [], client);
    say();
  }
  const replicas: ReplicaDatabase[] = [];
  const lags: number[][] = replicaPaths.map(() => []);
  for (const [i, p] of replicaPaths.entries()) {
    const r = await openReplica(p, { hub: { ...target, token: await token('reader') } });
    r.on('snapshot', (s) => lags[i]!.push(s.lagMs));
    replicas.push(r);
  }

  let stop = false;
  const onSignal = (): void => {
    if (!stop) say('\nCtrl-C: stopping (every committed change is already on the hub or on its way).');
    stop = true;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  // The devices: a small transaction every 100-300 ms each, as people using an app would. (However fast
  // one commits, the other gets the hub's lease after at most a round of it: a device that waited for
  // the lease gets it before the one that just released it.)
  const writers = devices.map(async (d) => {
    while (!stop) {
      d.step();
      await sleep(100 + Math.random() * 200);
    }
  });

  say(
    ' time │ laptop commits/s txid pending conflicts state │ phone commits/s txid pending conflicts state │ hub txid │ replica-1 lag p50 │ replica-2 lag p50',
  );
  // A device's or replica's last error, printed under the second it first showed in.
  const lastErrors = new Map<string, string | undefined>();
  const errorLines = (name: string, s: { state: string; lastError?: string }): string[] => {
    if (s.lastError === lastErrors.get(name)) return [];
    lastErrors.set(name, s.lastError);
    return s.lastError ? [`       ${name} ${s.state}: ${s.lastError}`] : [];
  };
  const started = Date.now();
  const marks: { at: number; txid: bigint }[] = [];
  for (let second = 1; !stop && (args.seconds === 0 || second <= args.seconds); second++) {
    await sleep(Math.max(0, started + second * 1000 - Date.now()));
    if (stop) break;
    // Both change the same row at once: whichever syncs second meets the other's change (a conflict).
    for (const d of devices) d.setLimit(150000 + Math.floor(Math.random() * 100000));
    const head = await client.state().catch(() => undefined);
    if (head) marks.push({ at: Date.now(), txid: head.head.txid });
    const errors: string[] = [];
    const cols = devices.map((d) => {
      const st = d.db.sync!.status();
      const s = `${String(d.commits).padStart(9)} ${String(d.db.position().txid).padStart(5)} ${String(d.db.sync!.pending()).padStart(7)} ${String(d.conflicts).padStart(9)} ${st.state.padEnd(7)}`;
      errors.push(...errorLines(d.name, st));
      d.commits = 0;
      return d.name === 'laptop' ? `${s}  ` : `${s} `;
    });
    for (const [i, r] of replicas.entries()) errors.push(...errorLines(`replica-${i + 1}`, r.status()));
    const reps = replicas.map((r, i) => {
      const l = lags[i]!.splice(0).sort((a, b) => a - b);
      const p50 = l.length ? `${l[Math.floor(l.length / 2)]} ms` : '-';
      return `${String(r.position()?.txid ?? 0n).padStart(9)} ${p50.padStart(7)}`;
    });
    say(
      `${`${second}s`.padStart(5)} │${cols.join('│')}│ ${String(head?.head.txid ?? '-').padStart(8)} │${reps.join(' │')}`,
    );
    for (const e of errors) say(e);
  }
  stop = true;
  await Promise.all(writers);
  say();
  say('Stopped writing; letting both devices sync...');
  const settled = await settle(devices, client, 30_000);
  const final = devices[0]!.db.position().txid;
  await Promise.all(replicas.map((r) => r.waitFor(final, 10_000).catch(() => {})));
  const files = [...devices.map((d) => d.path), ...replicaPaths];
  const hashes = files.map(sha256);
  const allEqual = settled && hashes.every((h) => h === hashes[0]);
  const count = (d: Device): number => d.db.prepare('select count(*) from expenses').pluck().get() as number;
  for (const d of devices) {
    const mine = d.db.prepare('select count(*) from expenses where device = ?').pluck().get(d.name) as number;
    say(
      `  ${d.name.padEnd(6)} txid ${d.db.position().txid}, ${count(d)} expenses (${mine} written here), ${d.conflicts} conflicts, ${d.rejected} rejected, sha256 ${sha256(d.path).slice(0, 16)}`,
    );
  }
  for (const [i, r] of replicas.entries()) {
    say(`  replica-${i + 1} txid ${r.position()?.txid ?? 0n}, sha256 ${hashes[2 + i]!.slice(0, 16)}`);
  }
  const limit = devices[0]!.db
    .prepare("select cents, set_by from budget where key = 'monthly-limit'")
    .get() as {
    cents: number;
    set_by: string;
  };
  say(
    `  budget limit ${(limit.cents / 100).toFixed(2)}, last set by the ${limit.set_by} (the later sync wins)`,
  );
  if (allEqual) say('  all four files are byte-for-byte equal');
  else {
    say(
      `  the files DIFFER${settled ? '' : " (the devices did not reach the hub's head within 30 s)"}; where each stands:`,
    );
    await explain(devices, replicas, client);
  }
  say();

  // Time travel: restore the state of a few seconds ago from a replica's own journal.
  const then = marks[Math.max(0, marks.length - 4)] ?? marks[0];
  if (then) {
    const out = path.join(dir, 'then.db');
    const at = new Date(then.at).toISOString();
    say(
      `Time travel: replica-1.db as it was at ${at} (\`mycelite restore replica-1.db --output then.db --at ${at}\`):`,
    );
    const s = await restoreDatabase(nodeRuntime.fs, replicaPaths[0]!, out, { target: { at: then.at } });
    const old = await openReadonly(out);
    const nowDb = await openReadonly(replicaPaths[0]!);
    const q = 'select count(*) as n, coalesce(sum(amount_cents), 0) / 100.0 as total from expenses';
    const a = old.prepare(q).get() as { n: number; total: number };
    const b = nowDb.prepare(q).get() as { n: number; total: number };
    old.close();
    nowDb.close();
    say(`  then (txid ${s?.txid}): ${a.n} expenses, ${a.total.toFixed(2)} spent`);
    say(`  now  (txid ${final}): ${b.n} expenses, ${b.total.toFixed(2)} spent`);
    say();
  }

  for (const r of replicas) await r.close();
  for (const d of devices) {
    await d.db.sync!.close();
    d.db.close();
  }
  await hub.close();
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);

  say('What happened:');
  say('  - SQLite ran as WebAssembly over the Mycelite VFS, which saw every page each transaction wrote;');
  say('    each commit became one snapshot (the changed bytes of those pages) in DB-mycelite/journal, and');
  say('    on a shared database also a logical change (an SQLite session changeset) kept until synced.');
  say('  - Each device pushed its snapshots under a short lease; when the other had pushed first, it put');
  say("    its file at the hub's state and applied its own changes again on top (a rebase); an edit of a");
  say('    row the other device had changed too is a conflict: the later sync wins, and it is reported.');
  say('  - The hub streamed every snapshot to both replicas, which applied it in one SQLite transaction,');
  say(
    "    RANDOM() and CURRENT_TIMESTAMP's results included; any retained moment can be restored from any copy.",
  );
  say(
    allEqual
      ? '  - At the end, both devices and both replicas held byte-for-byte the same file.'
      : '  - At the end the files DIFFERED.',
  );
  if (args.keep) say(`Files kept in ${dir}`);
  else fs.rmSync(dir, { recursive: true, force: true });
  if (!allEqual) process.exitCode = 1;
}

demo().catch((e: unknown) => {
  console.error('demo failed:', e);
  process.exitCode = 1;
});
