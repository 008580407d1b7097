/**
 * The demo's sync activity: what became of this device's changes when they met other devices' (a
 * conflict, a rejection), in words a user reads.
 */
import type { ConflictEvent, RejectedEvent, SyncReport } from '../src/browser/index.js';

/** The columns of `entries`, in table order (the order of a conflict's values). */
export const COLUMNS = ['id', 'day', 'label', 'category', 'cents'] as const;

const money = new Intl.NumberFormat(undefined, { style: 'currency', currency: 'EUR' });
export const fmt = (cents: unknown): string => money.format(Number(cents) / 100);

type Column = (typeof COLUMNS)[number];

const col = (values: readonly unknown[] | undefined, name: Column): unknown =>
  values?.[COLUMNS.indexOf(name)];

/** "label, category, amount" of `values`, only of the columns in `only`, and only those it has. */
function describe(values: readonly unknown[] | undefined, only: readonly Column[]): string {
  const out: string[] = [];
  const pick = (name: Column): unknown => (only.includes(name) ? col(values, name) : undefined);
  const label = pick('label');
  const category = pick('category');
  const cents = pick('cents');
  if (label !== undefined) out.push(`“${String(label)}”`);
  if (category !== undefined) out.push(String(category));
  if (cents !== undefined) out.push(fmt(cents));
  return out.join(', ');
}

/** The columns a local change set (its new values; unchanged ones are undefined). */
const changedBy = (c: ConflictEvent['conflict']): Column[] =>
  COLUMNS.filter((name, i) => name !== 'id' && c.new?.[i] !== undefined);

/** The entry a conflict is about, by its label as best known. */
function entryName(c: ConflictEvent['conflict']): string {
  const label = col(c.current, 'label') ?? col(c.new, 'label') ?? col(c.old, 'label');
  return label === undefined ? `entry ${String(c.key[0]).slice(0, 8)}` : `“${String(label)}”`;
}

/** One line for a conflict met while this device's change was applied again on the hub's newer state. */
export function conflictText(e: ConflictEvent): string {
  const c = e.conflict;
  if (c.table !== 'entries') {
    return `Conflict in table ${c.table} (${c.kind} at an ${c.op}): ${e.choice === 'local' ? "this device's change is kept" : "this device's change was dropped"}.`;
  }
  const name = entryName(c);
  switch (c.kind) {
    case 'data': {
      const mine = changedBy(c);
      const theirs = describe(c.current, mine) || 'another value';
      const yours = describe(c.new, mine) || 'your change';
      return e.choice === 'local'
        ? `Edit conflict on ${name}: another device changed it too (to ${theirs}); yours (${yours}) was synced later, so yours is kept on every device.`
        : `Edit conflict on ${name}: another device changed it too; its version (${theirs}) is kept, yours (${yours}) was dropped.`;
    }
    case 'notfound':
      return c.op === 'delete'
        ? `${name} was already deleted on another device.`
        : `Your edit of ${name} was dropped: another device deleted the entry.`;
    case 'conflict':
      return `${name} was added on another device with the same id: ${e.choice === 'hub' ? 'the same entry, kept once' : 'yours was not added'}.`;
    default:
      return `Your change of ${name} broke a rule of the database on the hub's newer state (${c.kind}): it was not applied.`;
  }
}

export function rejectedText(r: RejectedEvent): string {
  return `A change of this device was rejected as a whole (nothing of it stays): ${r.reason}`;
}

/** Adds one report at the top of the log panel. */
export function showReport(r: SyncReport): void {
  const log = document.getElementById('log')!;
  const li = document.createElement('li');
  li.className = r.event;
  const time = Object.assign(document.createElement('time'), {
    textContent: new Date(r.at).toLocaleTimeString(),
  });
  const text = r.event === 'conflict' ? conflictText(r.detail) : rejectedText(r.detail);
  li.append(time, ' ', text);
  log.prepend(li);
  while (log.children.length > 50) log.lastElementChild?.remove();
  document.getElementById('log-empty')!.hidden = true;
}
