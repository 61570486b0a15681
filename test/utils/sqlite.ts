import { spawnSync } from 'node:child_process';

let checked: boolean | undefined;

/**
 * Whether better-sqlite3's addon loads in this Node.js. `npm ci` builds it for the Node that ran
 * it (20), and `npm run test:node24` runs the suites again on Node 24, which cannot load that
 * build: a second one would need Node 24's headers, which no registry package ships. Only there
 * (`IDEMPOTENCY_TEST_SQLITE=optional`, which `jest-on-node24.mjs` sets) does a build for another
 * Node skip the SQLite cases, with one line saying so; any other failure to load throws.
 *
 * The addon is tried in a child process: a failed load would leave this one unable to load it
 * again (`Module did not self-register`), in the next suite as in this one.
 */
export function sqliteAvailable(): boolean {
  if (checked === undefined) {
    const probe = spawnSync(
      process.execPath,
      ['-e', "new (require('better-sqlite3'))(':memory:').close()"],
      { cwd: process.cwd(), encoding: 'utf8' },
    );
    checked = probe.status === 0;
    if (!checked) {
      if (
        process.env.IDEMPOTENCY_TEST_SQLITE !== 'optional' ||
        !probe.stderr.includes('NODE_MODULE_VERSION')
      ) {
        throw new Error(
          `better-sqlite3 does not load in Node.js ${process.versions.node}:\n${probe.stderr}`,
        );
      }
      console.warn(
        `skipping the SQLite cases on Node.js ${process.versions.node}: better-sqlite3 is built for the Node.js that ran npm ci; they run there (npm test)`,
      );
    }
  }
  return checked;
}

/** `describe` when better-sqlite3 loads, else `describe.skip` (see {@link sqliteAvailable}). */
export function describeWithSqlite(): jest.Describe {
  return sqliteAvailable() ? describe : describe.skip;
}
