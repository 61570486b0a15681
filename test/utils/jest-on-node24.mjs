// `npm run test:node24`: the unit specs and the HTTP e2e suites again, on Node 24 (see node24.mjs).
// Arguments go to jest. Left out: the suites that open SQLite, whose better-sqlite3 addon is built
// for the Node that ran `npm ci` (a second build for Node 24 would need its headers and a compile
// on every CI run); they run on Node 20, and the packed tarball runs on Node 24 in test/package.
import { spawnSync } from 'node:child_process';
import { node24 } from './node24.mjs';

const SQLITE_SUITES = [
  'test/http/transaction.e2e-spec.ts',
  'test/http/cls-transaction.e2e-spec.ts',
  'test/http/encryption.e2e-spec.ts',
];
const result = spawnSync(
  node24(),
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
