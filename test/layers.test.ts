/**
 * The layer table of docs/ARCHITECTURE.md ("Layers") against the imports of src/: every import of one
 * folder from another points down the table (to a row above), and the importing folder's row names the
 * folder it imports. The table is a total order, so a folder cycle cannot pass. Imports are read from the
 * TypeScript sources (`import`, `import type`, `export … from`, `import()`), type-only ones included: a
 * type that lives on the wrong floor is the same mistake as a function that does.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SRC = path.join(ROOT, 'src');

/** One row of the table: a folder and what its row lets it import. */
interface Layer {
  folder: string;
  /** The folders of src/ the row names. */
  imports: Set<string>;
  /** Whether the row names `node:*` (Node's own modules). */
  node: boolean;
}

/** An import of a source file: the file (relative to src/) and the specifier as written. */
interface Import {
  file: string;
  specifier: string;
}

/** The rows of the "Layers" table, top (lowest layer) first. */
function readTable(markdown: string): Layer[] {
  const start = markdown.indexOf('\n## Layers\n');
  assert.ok(start >= 0, 'docs/ARCHITECTURE.md has a "## Layers" section');
  const end = markdown.indexOf('\n## ', start + 1);
  const rows = markdown
    .slice(start, end)
    .split('\n')
    .map((line) => /^\| `src\/([a-z-]+)\/` \|.*\| ([^|]*) \|$/.exec(line))
    .filter((m) => m !== null);
  const folders = rows.map((m) => m[1]!);
  return rows.map((m) => {
    const words = m[2]!.split(/[\s,`]+/).filter((w) => w !== '');
    return {
      folder: m[1]!,
      imports: new Set(words.filter((w) => folders.includes(w))),
      node: words.includes('node:*'),
    };
  });
}

/** Every import of every .ts file under src/. */
function readImports(): Import[] {
  const out: Import[] = [];
  const pattern =
    /(?:^|[\s;}])(?:import|export)\b[^'"`;]*?\bfrom\s*['"]([^'"]+)['"]|\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)|^import\s+['"]([^'"]+)['"]/gm;
  for (const file of fs.readdirSync(SRC, { recursive: true, encoding: 'utf8' })) {
    if (!file.endsWith('.ts')) continue;
    const text = fs.readFileSync(path.join(SRC, file), 'utf8');
    for (const m of text.matchAll(pattern)) out.push({ file, specifier: m[1] ?? m[2] ?? m[3]! });
  }
  return out;
}

/** What is wrong with `imports` under the table `layers`: one line each (empty: nothing). */
export function layerProblems(layers: readonly Layer[], imports: readonly Import[]): string[] {
  const rank = new Map(layers.map((l, i) => [l.folder, i]));
  const problems = new Set<string>();
  for (const { file, specifier } of imports) {
    const from = file.split(/[\\/]/)[0]!;
    const row = layers[rank.get(from) ?? -1];
    if (!row) {
      problems.add(`src/${from}/ has no row in the Layers table of docs/ARCHITECTURE.md`);
      continue;
    }
    if (specifier.startsWith('node:')) {
      if (!row.node) {
        problems.add(
          `src/${file} imports ${specifier}, but src/${from}/ runs in a browser too (its row does not name node:*)`,
        );
      }
      continue;
    }
    if (!specifier.startsWith('.')) continue; // a package: the table names those for reading only
    const target = path.posix.normalize(
      path.posix.join(path.posix.dirname(file.replaceAll('\\', '/')), specifier),
    );
    if (target.startsWith('..')) {
      problems.add(`src/${file} imports ${specifier}, outside src/`);
      continue;
    }
    const to = target.split('/')[0]!;
    if (to === from) continue;
    const toRank = rank.get(to);
    if (toRank === undefined) {
      problems.add(`src/${to}/ has no row in the Layers table of docs/ARCHITECTURE.md`);
    } else if (toRank >= rank.get(from)!) {
      problems.add(
        `src/${file} imports ${specifier}: src/${to}/ is not below src/${from}/ in the Layers table (an import pointing up)`,
      );
    } else if (!row.imports.has(to)) {
      problems.add(
        `src/${file} imports ${specifier}: the row of src/${from}/ does not name ${to} (add it to the row)`,
      );
    }
  }
  // A row that names a folder it does not import, or one below it, is out of date too.
  for (const [i, layer] of layers.entries()) {
    const used = new Set(
      imports
        .filter((m) => m.file.split(/[\\/]/)[0] === layer.folder && m.specifier.startsWith('.'))
        .map(
          (m) =>
            path.posix
              .normalize(path.posix.join(path.posix.dirname(m.file.replaceAll('\\', '/')), m.specifier))
              .split('/')[0]!,
        ),
    );
    for (const named of layer.imports) {
      if ((rank.get(named) ?? Infinity) >= i)
        problems.add(`the row of src/${layer.folder}/ names ${named}, which is not above it`);
      else if (!used.has(named))
        problems.add(`the row of src/${layer.folder}/ names ${named}, which it does not import`);
    }
    const usesNode = imports.some(
      (m) => m.file.split(/[\\/]/)[0] === layer.folder && m.specifier.startsWith('node:'),
    );
    if (layer.node && !usesNode)
      problems.add(`the row of src/${layer.folder}/ names node:*, which it does not import`);
  }
  return [...problems];
}

const table = readTable(fs.readFileSync(path.join(ROOT, 'docs', 'ARCHITECTURE.md'), 'utf8'));
const imports = readImports();

test('every folder of src/ has a row in the Layers table, and every row a folder', () => {
  const folders = fs
    .readdirSync(SRC, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
  assert.deepEqual(table.map((l) => l.folder).sort(), folders);
});

test('every import of src/ points down the Layers table, and each row names what its folder imports', () => {
  assert.ok(imports.length > 500, `read ${imports.length} imports`);
  assert.deepEqual(layerProblems(table, imports), []);
});

test('the check finds an import that points up, a cycle between two folders, and Node in a browser layer', () => {
  const up = { file: 'format/file-header.ts', specifier: '../writer/open.js' };
  assert.match(
    layerProblems(table, [...imports, up]).join('\n'),
    /src\/format\/file-header\.ts imports \.\.\/writer\/open\.js: src\/writer\/ is not below src\/format\//,
  );
  // journal → history while history → journal: whichever row is lower, one of the two points up.
  const cycle = { file: 'journal/journal-scan.ts', specifier: '../history/source.js' };
  assert.match(layerProblems(table, [...imports, cycle]).join('\n'), /an import pointing up/);
  const nodeFs = { file: 'capture/capture.ts', specifier: 'node:fs' };
  assert.match(layerProblems(table, [...imports, nodeFs]).join('\n'), /src\/capture\/ runs in a browser too/);
  const unnamed = { file: 'node/index.ts', specifier: '../history/source.js' };
  assert.match(
    layerProblems(table, [...imports, unnamed]).join('\n'),
    /the row of src\/node\/ does not name history/,
  );
});
