/**
 * The demo: a household budget kept in SQLite in this browser (OPFS), shared with every other device
 * through the hub that serves this page. Every browser writes, also offline; entries have random ids
 * (crypto.randomUUID()) so devices never mint the same one; a change that met another device's is shown
 * under "Sync activity". URL parameters: `db` (default demo; names start with "demo"), `role=replica`
 * for a read-only follower. The page opens without the network (sw.js keeps its files) and syncs once
 * the hub answers. `window.mycelite` exposes the database and a few helpers to tests and the console.
 */
import {
  type BrowserDatabase,
  type BrowserStatus,
  connect,
  type HubTarget,
  type Role,
  type Row,
  type SyncReport,
} from '../src/browser/index.js';
import { HubUnreachable, hubTarget, keepAsking, offlineReady } from './hub.js';
import { showReport } from './reports.js';
import { $, type HubProblem, notice, render, showStatus } from './view.js';

const params = new URLSearchParams(location.search);
const name = params.get('db') ?? 'demo';
const role: Role = params.get('role') === 'replica' ? 'replica' : 'writer';
const tokenRole = role === 'writer' ? 'writer' : 'reader';

const SCHEMA = `create table if not exists entries(
  id text primary key,
  day text not null,
  label text not null,
  category text not null,
  cents integer not null
)`;
const LIST = 'select id, day, label, category, cents from entries order by day desc, rowid desc limit 500';
const TOTALS = `select count(*) as n,
  coalesce(sum(cents), 0) as balance,
  coalesce(sum(case when cents > 0 then cents end), 0) as income,
  coalesce(sum(case when cents < 0 then -cents end), 0) as spending
  from entries`;

let db: BrowserDatabase;
/** Selected txid of the time-travel slider; undefined: now. */
let travelTxid: bigint | undefined;
/** The id of the entry the form edits; undefined: the form adds. */
let editing: string | undefined;
/** Why the page has no hub yet (no token: offline, or the hub refuses one). */
let hubError: HubProblem | undefined;
const offline = offlineReady().catch(() => false);

/** A random id (crypto.randomUUID where the page may use it). */
function newId(): string {
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

async function open(): Promise<BrowserDatabase> {
  let hub: HubTarget | undefined;
  try {
    hub = await hubTarget(name, tokenRole);
  } catch (e) {
    hubError = { message: (e as Error).message, offline: e instanceof HubUnreachable };
  }
  const opened = await connect({ name, role, shared: role === 'writer', hub });
  if (!hub) {
    // Local only for now: sync starts once the hub hands out a token.
    keepAsking(
      name,
      tokenRole,
      async (h) => {
        hubError = undefined;
        show(await opened.setHub(h));
      },
      (e) => {
        hubError = { message: e.message, offline: e instanceof HubUnreachable };
        if (db) show(db.status());
      },
    );
  }
  return opened;
}

function show(s: BrowserStatus): void {
  showStatus(s, { leader: db?.leader ?? false, hubError });
  const slider = $<HTMLInputElement>('travel');
  slider.min = String(s.firstTxid);
  slider.max = String(s.txid);
  // A replica that started from the hub's image holds no point before it: nothing to travel to.
  slider.disabled = s.firstTxid >= s.txid;
  if (travelTxid === undefined) slider.value = String(s.txid);
}

/** The form: enabled only for a writer looking at now; why not, when not. */
function updateForm(): void {
  const why =
    role !== 'writer'
      ? 'This page is a read-only follower (?role=replica): it shows the shared database as the hub has it and does not write. Open it without ?role=replica to add and edit entries.'
      : travelTxid !== undefined
        ? `You are looking at the past (txid ${travelTxid}): go back to now to add or edit entries.`
        : undefined;
  $<HTMLFieldSetElement>('add-fields').disabled = why !== undefined;
  $('add-why').hidden = why === undefined;
  $('add-why').textContent = why ?? '';
  $('add-button').textContent = editing ? 'Save' : 'Add';
  $('edit-cancel').hidden = editing === undefined;
}

function startEdit(r: Row): void {
  editing = String(r.id);
  const cents = Number(r.cents);
  $<HTMLInputElement>('label').value = String(r.label);
  $<HTMLInputElement>('amount').value = (Math.abs(cents) / 100).toFixed(2);
  $<HTMLSelectElement>('category').value = String(r.category);
  (
    document.querySelector(`input[name=kind][value=${cents < 0 ? 'out' : 'in'}]`) as HTMLInputElement
  ).checked = true;
  updateForm();
  $<HTMLInputElement>('amount').focus();
}

function endEdit(): void {
  editing = undefined;
  $<HTMLInputElement>('label').value = '';
  $<HTMLInputElement>('amount').value = '';
  updateForm();
}

async function hasTable(txid?: bigint): Promise<boolean> {
  const sql = "select count(*) as n from sqlite_master where name = 'entries'";
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
  const actions = {
    writable: role === 'writer',
    onEdit: startEdit,
    onDelete: (r: Row) => void remove(String(r.id)).catch(fail),
  };
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
        render(list?.rows ?? [], totals, { ...actions, past: true });
      } else {
        const ok = await hasTable();
        const rows = ok ? await db.query(LIST) : [];
        render(rows, ok ? (await db.query(TOTALS))[0] : undefined, { ...actions, past: false });
        $('travel-label').textContent = 'now';
      }
      $('travel-now').hidden = t === undefined;
      updateForm();
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
  const r = await db.run('insert into entries(id, day, label, category, cents) values (?, ?, ?, ?, ?)', [
    newId(),
    day,
    label,
    category,
    cents,
  ]);
  return r.txid;
}

/** Changes an entry (what the form does in edit mode); resolves with the txid of its commit. */
async function edit(id: string, e: { label: string; cents: number; category: string }): Promise<bigint> {
  const r = await db.run('update entries set label = ?, category = ?, cents = ? where id = ?', [
    e.label,
    e.category,
    e.cents,
    id,
  ]);
  if (r.changes === 0) throw new Error('that entry is gone: it was deleted (here or on another device)');
  return r.txid;
}

async function remove(id: string): Promise<bigint> {
  if (editing === id) endEdit();
  return (await db.run('delete from entries where id = ?', [id])).txid;
}

function wire(): void {
  $<HTMLFormElement>('add').onsubmit = (e) => {
    e.preventDefault();
    // Enter in a field submits even when the form looks disabled: only a writer looking at now writes.
    if (role !== 'writer' || travelTxid !== undefined) return;
    const label = $<HTMLInputElement>('label').value.trim();
    const amount = Math.round(Number($<HTMLInputElement>('amount').value) * 100);
    const kind = (document.querySelector('input[name=kind]:checked') as HTMLInputElement).value;
    if (!label || !(amount > 0)) return;
    const cents = kind === 'in' ? amount : -amount;
    const category = $<HTMLSelectElement>('category').value;
    const done = editing ? edit(editing, { label, cents, category }) : add(label, cents, category);
    done
      .then(() => {
        notice(undefined);
        endEdit();
        $<HTMLInputElement>('label').focus();
      })
      .catch(fail);
  };
  $('edit-cancel').onclick = endEdit;
  let timer: ReturnType<typeof setTimeout> | undefined;
  $<HTMLInputElement>('travel').oninput = () => {
    // Taken at once: a status event meanwhile moves the slider back to now while travelTxid is unset.
    const v = BigInt($<HTMLInputElement>('travel').value);
    travelTxid = v >= db.status().txid ? undefined : v;
    if (travelTxid !== undefined && editing) endEdit();
    updateForm();
    clearTimeout(timer);
    timer = setTimeout(() => void refresh(), 40);
  };
  $('travel-now').onclick = () => {
    travelTxid = undefined;
    show(db.status());
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

/** Each report once (a kept one may also have come as an event). */
const shown = new Set<string>();
function report(r: SyncReport): void {
  const key = `${r.event}:${r.detail.seq}:${r.event === 'conflict' ? JSON.stringify(r.detail.conflict.key) : ''}`;
  if (shown.has(key)) return;
  shown.add(key);
  showReport(r);
}

async function main(): Promise<void> {
  wire();
  updateForm();
  // A read-only follower makes no changes: it has no sync activity to report.
  $('sync-log').hidden = role !== 'writer';
  void offline.then((ok) => {
    $('offline-ready').textContent = ok ? 'opens offline' : '';
  });
  void (navigator.storage as StorageManager & { persist?: () => Promise<boolean> }).persist?.();
  db = await open();
  db.on('change', (s) => {
    show(s);
    void refresh();
  });
  db.on('status', show);
  db.on('tab', () => show(db.status()));
  db.on('conflict', (detail) => report({ event: 'conflict', at: Date.now(), detail }));
  db.on('rejected', (detail) => report({ event: 'rejected', at: Date.now(), detail }));
  for (const r of await db.syncReports()) report(r);
  if (role === 'writer') await db.exec(SCHEMA);
  show(await db.refreshStatus());
  await refresh();
  document.body.dataset.ready = 'true';
}

Object.assign(window, {
  mycelite: {
    get db() {
      return db;
    },
    add,
    edit,
    remove,
    entries: () => db.query(LIST),
    role: () => role,
    status: () => db.refreshStatus(),
    sha256: () => db.sha256(),
    bench: (n: number) => db.bench(n),
    /** Resolves true once the service worker keeps the app's files (the page then opens offline). */
    offlineReady: () => offline,
  },
});

main().catch((e: unknown) => {
  fail(e);
  document.body.dataset.ready = 'error';
});
