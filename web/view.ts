/** What the demo shows: the sync indicator and its banner, the entries, the totals. */
import type { BrowserStatus, Row } from '../src/browser/index.js';
import { fmt } from './reports.js';

/** Why the page has no hub: `offline` when it could not be reached at all. */
export interface HubProblem {
  message: string;
  offline: boolean;
}

export const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;

/** Shows an error of the page (an action that failed); undefined hides it. */
export function notice(text: string | undefined): void {
  const n = $('notice');
  n.hidden = !text;
  n.textContent = text ?? '';
}

/** What the indicator says: online when sync works, else why not. */
function stateWord(s: BrowserStatus): string {
  if (s.state === 'local') return 'offline';
  if (!s.online) return s.state;
  if (s.state === 'synced' || s.state === 'live') return 'online';
  return s.state;
}

/**
 * The sync banner: visible while sync does not work (offline, stopped), saying what that means and
 * the last error; hidden as soon as it works again. `hubError`: why there is no hub yet (no token).
 */
function banner(s: BrowserStatus, hubError: HubProblem | undefined): string | undefined {
  const keep =
    s.role === 'writer'
      ? 'changes are kept on this device and sync when the hub is reachable'
      : 'this copy shows what it last received';
  if (s.state === 'local') {
    if (hubError === undefined) return undefined;
    return `${hubError.offline ? 'Offline' : 'Not syncing'}: ${keep}. (${hubError.message})`;
  }
  if (s.state === 'error')
    return `Sync stopped: ${s.lastError ?? 'unknown error'}. Reload the page to try again.`;
  if (s.state === 'offline' || (s.state === 'connecting' && s.lastError)) {
    return `Offline: ${keep}.${s.lastError ? ` (${s.lastError})` : ''}`;
  }
  return undefined;
}

export function showStatus(s: BrowserStatus, o: { leader: boolean; hubError: HubProblem | undefined }): void {
  const el = $('sync');
  el.dataset.state = s.state === 'local' ? 'offline' : s.state;
  el.dataset.online = String(s.online);
  $('sync-state').textContent = stateWord(s);
  $('sync-txid').textContent = String(s.txid);
  $('sync-hub').textContent = s.hubTxid === undefined ? '–' : String(s.hubTxid);
  if (s.role === 'writer') {
    $('sync-lag-name').textContent = 'to push';
    $('sync-lag').textContent = String(s.pending);
  } else {
    $('sync-lag-name').textContent = 'lag';
    $('sync-lag').textContent = s.pending > 0 ? `${s.pending} behind` : `${Math.round(s.lagMs)} ms`;
  }
  const trouble = banner(s, o.hubError);
  const b = $('sync-error');
  b.hidden = trouble === undefined;
  b.textContent = trouble ?? '';
  b.dataset.state = s.state;
  el.title = trouble ?? `${s.role}${s.shared ? ' (shared)' : ''}: ${s.state}`;
  const tab = o.leader ? 'this tab holds the database' : 'another tab holds the database';
  const kind =
    s.role === 'writer' ? (s.shared ? 'shared: every device writes' : 'writer') : 'read-only follower';
  $('who').textContent = `${s.name} · ${kind} · ${tab}`;
}

/** Renders the entries; `writable`: with edit and delete buttons. */
export function render(
  rows: Row[],
  totals: Row | undefined,
  o: { past: boolean; writable: boolean; onEdit(r: Row): void; onDelete(r: Row): void },
): void {
  const body = $('entries');
  body.replaceChildren(
    ...rows.map((r) => {
      const tr = document.createElement('tr');
      tr.dataset.id = String(r.id);
      const cell = (className: string, text = ''): HTMLTableCellElement =>
        Object.assign(document.createElement('td'), { className, textContent: text });
      const what = cell('what');
      what.append(
        Object.assign(document.createElement('span'), { className: 'label', textContent: String(r.label) }),
        Object.assign(document.createElement('small'), {
          className: 'cat-inline',
          textContent: String(r.category),
        }),
      );
      const amount = cell(`num ${Number(r.cents) < 0 ? 'neg' : 'pos'}`, fmt(r.cents));
      const act = cell('act');
      if (!o.past && o.writable) {
        const button = (
          text: string,
          title: string,
          className: string,
          fn: () => void,
        ): HTMLButtonElement => {
          const b = Object.assign(document.createElement('button'), {
            textContent: text,
            title,
            type: 'button',
          });
          b.className = className;
          b.setAttribute('aria-label', `${title} ${String(r.label)}`);
          b.onclick = fn;
          return b;
        };
        act.append(
          button('✎', 'edit', 'edit', () => o.onEdit(r)),
          button('×', 'delete', 'del', () => o.onDelete(r)),
        );
      }
      tr.append(cell('day', String(r.day)), what, cell('cat', String(r.category)), amount, act);
      return tr;
    }),
  );
  $('empty').hidden = rows.length > 0;
  $('balance').textContent = fmt(totals?.balance ?? 0);
  $('income').textContent = fmt(totals?.income ?? 0);
  $('spending').textContent = fmt(totals?.spending ?? 0);
  $('count').textContent = String(totals?.n ?? 0);
  document.body.classList.toggle('past', o.past);
}
