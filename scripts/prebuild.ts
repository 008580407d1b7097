/**
 * Puts this machine's build of the file-lock addon (native/build/Release/, from `node-gyp rebuild`) where
 * node-gyp-build finds it in an installed package: native/prebuilds/PLATFORM-ARCH/, named for N-API (one
 * binary serves every Node version) and, on Linux, for the C library it links. `npm pack` runs it
 * (`prepack`), so a package holds the prebuilt addon of the machine that packed it.
 *
 *   node-gyp rebuild --directory=native && node dist/scripts/prebuild.js
 */
import { copyFileSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const NATIVE = resolve(fileURLToPath(new URL('../../native', import.meta.url)));
const NAME = 'mycelite_file_lock';

function libc(): string {
  if (process.platform !== 'linux') return '';
  const report = process.report.getReport() as { header?: { glibcVersionRuntime?: string } };
  return report.header?.glibcVersionRuntime ? '.glibc' : '.musl';
}

const dir = join(NATIVE, 'prebuilds', `${process.platform}-${process.arch}`);
rmSync(dir, { recursive: true, force: true });
mkdirSync(dir, { recursive: true });
const file = `${NAME}.napi${libc()}.node`;
copyFileSync(join(NATIVE, 'build', 'Release', `${NAME}.node`), join(dir, file));
console.log(
  `prebuilt addon: ${join(dir, file)}; prebuilds: ${readdirSync(join(NATIVE, 'prebuilds')).join(', ')}`,
);
