// `npm pack` / `npm publish` of nestjs-idempotency: a clean build of dist (no source maps: the
// sources are not shipped), and the repository's README, LICENSE and CHANGELOG beside it, so the
// npm page and the tarball carry them. The copies are not committed (see .gitignore).
import { execFileSync } from 'node:child_process';
import { copyFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
rmSync(join(here, 'dist'), { recursive: true, force: true });
const tsc = createRequire(join(root, 'package.json')).resolve('typescript/bin/tsc');
execFileSync(process.execPath, [tsc, '-p', join(here, 'tsconfig.lib.json')], { stdio: 'inherit' });
for (const file of ['README.md', 'LICENSE', 'CHANGELOG.md']) {
  copyFileSync(join(root, file), join(here, file));
}
