/**
 * The demo: a household budget kept in SQLite in this browser (OPFS), synced through the hub that serves
 * this page. URL parameters: `db` (default demo; names start with "demo"), `role` (writer, the default,
 * or replica). A writer that finds another device holding the hub's write lease follows it as a replica.
 * `window.mycelite` exposes the database and a few helpers to tests and the console.
 */
import {
  type BrowserDatabase,
  type BrowserStatus,
  connect,
  type Role,
  type Row,
} from '../src/browser/index.js';

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const params = new URLSearchParams(location.search);
const name = params.get('db') ?? 'demo';
let role: Role = params.get('role') === 'replica' ? 'replica' : 'writer';

const SCHEMA = `create table if not exists entry(
  id integer primary key,
  day text not null,
  label text not null,
  category text not null,
  cents integer not null
)`;
const LIST = 'select id, day, label, category, cents from entry order by day desc, id desc limit 500';
const TOTALS = `select count(*) as n,
  coalesce(sum(cents), 0) as balance,
  coalesce(sum(case when cents > 0 then cents end), 0) as income,
  coalesce(sum(case when cents < 0 then -cents end), 0) as spending
  from entry`;

let db: BrowserDatabase;
/** Selected txid of the time-travel slider; undefined: now. */
let travelTxid: bigint | undefined;

const money = new Intl.NumberFormat(undefined, { style: 'currency', currency: 'EUR' });
const fmt = (cents: unknown): string => money.format(Number(cents) / 100);

async function token(r: 'writer' | 'reader'): Promise<string> {
  const res = await fetch(`/demo/token?db=${encodeURIComponent(name)}&role=${r}`);
  const j = (await res.json()) as { token?: string; message?: string };
  if (!res.ok || !j.token) throw new Error(j.message ?? `the hub gave no token (${res.status})`);
  return j.token;
}

async function open(): Promise<BrowserDatabase> {
  const hub = async (r: 'writer' | 'reader') => ({ url: location.origin, db: name, token: await token(r) });
  if (role === 'writer') {
    try {
      return await connect({ name, role, hub: await hub('writer') });
    } catch (e) {
      if (!/lease|another writer/i.test((e as Error).message)) throw e;
      notice(`Another device is the writer of “${name}”: this one follows it, read-only.`);
      role = 'replica';
    }
  }
  return connect({ name, role, hub: await hub('reader') });
}

function notice(text: string | undefined): void {
  const n = $('notice');
  n.hidden = !text;
  n.textContent = text ?? '';
}

function showStatus(s: BrowserStatus): void {
  const el = $('sync');
  el.dataset.state = s.state;
  el.dataset.online = String(s.online);
  $('sync-state').textContent = s.online
    ? s.state === 'synced' || s.state === 'live'
      ? 'online'
      : s.state
    : s.state;
  $('sync-txid').textContent = String(s.txid);
  $('sync-hub').textContent = s.hubTxid === undefined ? '–' : String(s.hubTxid);
  $('sync-lag').textContent =
    s.role === 'writer' ? (s.pending ? `${s.pending} to push` : '0') : `${Math.round(s.lagMs)} ms`;
  el.title = s.lastError ?? `${s.role}: ${s.state}`;
  const tab = db?.leader ? 'this tab holds the database' : 'another tab holds the database';
  $('who').textContent = `${name} · ${s.role} · ${tab}`;
  const slider = $<HTMLInputElement>('travel');
  slider.min = String(s.firstTxid);
  slider.max = String(s.txid);
  slider.disabled = s.txid === 0n;
  if (travelTxid === undefined) slider.value = String(s.txid);
  $<HTMLButtonElement>('add-button').disabled = s.role !== 'writer';
}

function render(rows: Row[], totals: Row | undefined, past: boolean): void {
  const body = $('entries');
  body.replaceChildren(
    ...rows.map((r) => {
      const tr = document.createElement('tr');
      tr.dataset.id = String(r.id);
      const cells = [String(r.day), String(r.label), String(r.category)];
      for (const c of cells) tr.appendChild(Object.assign(document.createElement('td'), { textContent: c }));
      const amount = Object.assign(document.createElement('td'), { textContent: fmt(r.cents) });
      amount.className = `num ${Number(r.cents) < 0 ? 'neg' : 'pos'}`;
      tr.appendChild(amount);
      const del = document.createElement('td');
      if (!past && role === 'writer') {
        const b = Object.assign(document.createElement('button'), { textContent: '×', title: 'delete' });
        b.className = 'del';
        b.onclick = () => void db.run('delete from entry where id = ?', [Number(r.id)]).catch(fail);
        del.appendChild(b);
      }
      tr.appendChild(del);
      return tr;
    }),
  );
  $('empty').hidden = rows.length > 0;
  $('balance').textContent = fmt(totals?.balance ?? 0);
  $('income').textContent = fmt(totals?.income ?? 0);
  $('spending').textContent = fmt(totals?.spending ?? 0);
  $('count').textContent = String(totals?.n ?? 0);
  document.body.classList.toggle('past', past);
}

async function hasTable(txid?: bigint): Promise<boolean> {
  const sql = "select count(*) as n from sqlite_master where name = 'entry'";
  const rows = txid === undefined ? await db.query(sql) : (await db.at(txid, sql)).rows;
  return Number(rows[0]?.n) > 0;
}

let refreshing = false;
let again = false;
/** Re-reads what is shown (coalesced: one refresh at a time, one more if asked meanwhile). */
async function refresh(): Promise<void> {
  if (refreshing) {
    again = true;
    return;
  }
  refreshing = true;
  try {
    do {
      again = false;
      const t = travelTxid;
      if (t !== undefined) {
        const ok = await hasTable(t);
        const list = ok ? await db.at(t, LIST) : undefined;
        const totals = ok ? (await db.at(t, TOTALS)).rows[0] : undefined;
        const when = list ? new Date(list.timestamp).toLocaleString() : '';
        $('travel-label').textContent = `as of txid ${t}${when ? ` · ${when}` : ''} (read-only)`;
        render(list?.rows ?? [], totals, true);
      } else {
        const ok = await hasTable();
        render(ok ? await db.query(LIST) : [], ok ? (await db.query(TOTALS))[0] : undefined, false);
        $('travel-label').textContent = 'now';
      }
      $('travel-now').hidden = t === undefined;
    } while (again);
  } catch (e) {
    fail(e);
  } finally {
    refreshing = false;
  }
}

function fail(e: unknown): void {
  notice(`Error: ${(e as Error)?.message ?? String(e)}`);
}

/** Adds one entry (what the form does); resolves with the txid of its commit. */
async function add(label: string, cents: number, category = 'Other'): Promise<bigint> {
  const day = new Date().toISOString().slice(0, 10);
  const r = await db.run('insert into entry(day, label, category, cents) values (?, ?, ?, ?)', [
    day,
    label,
    category,
    cents,
  ]);
  return r.txid;
}

function wire(): void {
  $<HTMLFormElement>('add').onsubmit = (e) => {
    e.preventDefault();
    const label = $<HTMLInputElement>('label').value.trim();
    const amount = Math.round(Number($<HTMLInputElement>('amount').value) * 100);
    const kind = (document.querySelector('input[name=kind]:checked') as HTMLInputElement).value;
    if (!label || !(amount > 0)) return;
    add(label, kind === 'in' ? amount : -amount, $<HTMLSelectElement>('category').value)
      .then(() => {
        $<HTMLInputElement>('label').value = '';
        $<HTMLInputElement>('amount').value = '';
        $<HTMLInputElement>('label').focus();
      })
      .catch(fail);
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  $<HTMLInputElement>('travel').oninput = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      const v = BigInt($<HTMLInputElement>('travel').value);
      travelTxid = v >= db.status().txid ? undefined : v;
      void refresh();
    }, 40);
  };
  $('travel-now').onclick = () => {
    travelTxid = undefined;
    showStatus(db.status());
    void refresh();
  };
  $('hash').onclick = () => {
    db.sha256()
      .then((h) => {
        $('hash-out').textContent = `${h.sha256} (txid ${h.txid}, ${h.size} bytes)`;
      })
      .catch(fail);
  };
}

async function main(): Promise<void> {
  wire();
  void (navigator.storage as StorageManager & { persist?: () => Promise<boolean> }).persist?.();
  db = await open();
  db.on('change', (s) => {
    showStatus(s);
    void refresh();
  });
  db.on('status', showStatus);
  db.on('tab', () => showStatus(db.status()));
  if (role === 'writer') await db.exec(SCHEMA);
  showStatus(await db.refreshStatus());
  await refresh();
  document.body.dataset.ready = 'true';
}

Object.assign(window, {
  mycelite: {
    get db() {
      return db;
    },
    add,
    role: () => role,
    status: () => db.refreshStatus(),
    sha256: () => db.sha256(),
    bench: (n: number) => db.bench(n),
  },
});

main().catch((e: unknown) => {
  fail(e);
  document.body.dataset.ready = 'error';
});
