// `npm run test:node24`: the unit specs and the HTTP e2e suites again, on Node 24 (see node24.mjs).
// Arguments go to jest. The SQLite cases inside them are skipped, with one line saying so: the
// better-sqlite3 addon is built for the Node that ran `npm ci` (a second build for Node 24 would
// need its headers, which no registry package ships). They run on Node 20 (`npm test`).
import { spawnSync } from 'node:child_process';
import { node24 } from './node24.mjs';

const result = spawnSync(
  node24(),
  [
    '--experimental-vm-modules',
    '--disable-warning=ExperimentalWarning',
    'node_modules/jest/bin/jest.js',
    '--runInBand',
    'libs/',
    'test/http/',
    'test/graphql/',
    ...process.argv.slice(2),
  ],
  { stdio: 'inherit', env: { ...process.env, IDEMPOTENCY_TEST_SQLITE: 'optional' } },
);
process.exit(result.status ?? 1);
