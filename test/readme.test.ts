/**
 * README.md's command blocks, run as a reader would copy them, so that the README cannot drift:
 *
 * - ```console blocks: each `$ ` line runs (in one directory for all of them, in order: later blocks go on
 *   from earlier ones), and its output (stdout and stderr) must have the shape the README shows — the same
 *   lines once numbers, hex and times are masked; a line the README ends with `…` only starts the same.
 * - ```sh blocks: each runs as one bash script (`set -e`) in a directory of its own, with the hub's port
 *   replaced by a free one and a wait for a backgrounded `serve` to answer; `sha256sum A B` lines must
 *   print the same sum twice.
 *
 * `npx mycelite` runs this checkout's bin/mycelite.js. A block preceded by
 * `<!-- readme-test: skip: REASON -->` is not run.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { freePort } from './helpers/tcp-proxy.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = path.join(ROOT, 'bin', 'mycelite.js');

interface Block {
  lang: string;
  line: number;
  lines: string[];
  skip?: string;
}

/** The fenced blocks of `text` (indented ones too, indentation removed). */
export function blocks(text: string): Block[] {
  const out: Block[] = [];
  const all = text.split('\n');
  for (let i = 0; i < all.length; i++) {
    const open = /^(\s*)```(\w+)\s*$/.exec(all[i]!);
    if (!open) continue;
    const indent = open[1]!.length;
    const lines: string[] = [];
    let j = i + 1;
    for (; j < all.length && !/^\s*```\s*$/.test(all[j]!); j++) lines.push(all[j]!.slice(indent));
    let k = i - 1;
    while (k >= 0 && all[k]!.trim() === '') k--;
    const skip = k >= 0 ? /<!-- readme-test: skip: (.*) -->/.exec(all[k]!)?.[1] : undefined;
    out.push({ lang: open[2]!, line: i + 1, lines, ...(skip ? { skip } : {}) });
    i = j;
  }
  return out;
}

/** A line with what changes from run to run masked: times, 16-digit hex, numbers. */
export function shape(line: string): string {
  return line
    .replace(/\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z/g, '<time>')
    .replace(/\b[0-9a-f]{16}\b/g, '<hex>')
    .replace(/-?\d+(\.\d+)?/g, '<n>')
    .trimEnd();
}

/** Whether the output lines have the README's shape (a README line ending in `…` is a prefix). */
function sameShape(expected: string[], actual: string[]): boolean {
  if (expected.length !== actual.length) return false;
  return expected.every((e, i) => {
    const a = shape(actual[i]!);
    const want = shape(e);
    return want.endsWith('…') ? a.startsWith(want.slice(0, -1).trimEnd()) : a === want;
  });
}

/** bash functions that make `npx mycelite` (and `mycelite`) this checkout's CLI. */
const PRELUDE = `
mycelite() { node ${JSON.stringify(BIN)} "$@"; }
npx() { if [ "$1" = mycelite ]; then shift; mycelite "$@"; else command npx "$@"; fi; }
wait_for_hub() {
  for _ in $(seq 1 300); do
    node -e "fetch('http://127.0.0.1:$1/healthz').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))" && return 0
    sleep 0.1
  done
  echo "the hub on port $1 did not start" >&2; return 1
}
`;

function bash(script: string, cwd: string): { code: number | null; out: string } {
  const env = { ...process.env };
  delete env['MYCELITE_DEBUG'];
  delete env['MYCELITE_TOKEN'];
  const r = spawnSync('bash', ['-c', script], { cwd, env, encoding: 'utf8', timeout: 120_000 });
  if (r.error) throw r.error;
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const ALL = blocks(README);

describe('README command blocks', { timeout: 600_000 }, () => {
  let consoleDir: string;
  before(() => {
    consoleDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-readme-'));
  });
  after(() => fs.rmSync(consoleDir, { recursive: true, force: true }));

  test('README has the blocks this test runs', () => {
    assert.ok(ALL.filter((b) => b.lang === 'console' && !b.skip).length >= 2);
    assert.ok(ALL.filter((b) => b.lang === 'sh' && !b.skip).length >= 2);
    for (const b of ALL.filter((x) => x.lang === 'sh' || x.lang === 'console')) {
      assert.ok(b.skip === undefined || b.skip.length > 10, `README line ${b.line}: say why it is skipped`);
    }
  });

  for (const block of ALL.filter((b) => b.lang === 'console')) {
    test(`console block at README line ${block.line}`, { skip: block.skip ?? false }, () => {
      const steps: { command: string; expected: string[] }[] = [];
      for (const line of block.lines) {
        if (line.startsWith('$ ')) steps.push({ command: line.slice(2), expected: [] });
        else if (line.trim() !== '') steps.at(-1)?.expected.push(line);
      }
      for (const { command, expected } of steps) {
        const r = bash(`${PRELUDE}\n${command}`, consoleDir);
        const actual = r.out.split('\n').filter((l) => l.trim() !== '');
        const failed = expected.some((l) => l.startsWith('mycelite: ') && !/warning/.test(l));
        assert.equal(r.code, failed ? 1 : 0, `$ ${command}\n${r.out}`);
        assert.ok(
          sameShape(expected, actual),
          `$ ${command} (README line ${block.line})\nREADME shows:\n${expected.join('\n')}\nit printed:\n${r.out}`,
        );
      }
    });
  }

  for (const block of ALL.filter((b) => b.lang === 'sh')) {
    test(`sh block at README line ${block.line}`, { skip: block.skip ?? false }, async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mycelite-readme-sh-'));
      try {
        const ports = new Map<string, number>();
        for (const m of block.lines.join('\n').matchAll(/\b(80\d\d)\b/g)) {
          if (!ports.has(m[1]!)) ports.set(m[1]!, await freePort());
        }
        const lines = block.lines.map((l) => l.replace(/\b80\d\d\b/g, (p) => String(ports.get(p) ?? p)));
        // Job control: each background job (a hub) is its own process group, killed whole at the end.
        const stop = 'for j in $(jobs -p); do kill -- -$j 2>/dev/null || true; done';
        const script: string[] = [PRELUDE, 'set -e -m', `trap '${stop}' EXIT`];
        for (const l of lines) {
          script.push(l);
          const serve = /mycelite serve .*--port (\d+).*&\s*(#.*)?$/.exec(l);
          if (serve) script.push(`wait_for_hub ${serve[1]}`);
        }
        const r = bash(script.join('\n'), dir);
        assert.equal(r.code, 0, `README line ${block.line}:\n${r.out}`);
        for (const l of lines.filter((x) => x.startsWith('sha256sum '))) {
          const files = l.replace(/#.*/, '').trim().split(/\s+/).slice(1);
          const sums = files.map((f) => {
            const s = bash(`sha256sum ${f}`, dir).out.split(/\s+/)[0];
            return s;
          });
          assert.equal(new Set(sums).size, 1, `${l}: ${sums.join(' ')}`);
        }
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
