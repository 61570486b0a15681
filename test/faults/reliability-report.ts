/**
 * Writes docs/reliability.md from the outcomes the fault suite recorded in its last run
 * (test/faults/results/*.json). `npm run test:faults` runs the suite, then this.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import type { Outcome } from './outcomes';

const RESULTS = join(process.cwd(), 'test/faults/results');
const DOC = join(process.cwd(), 'docs/reliability.md');

type Recorded = Outcome & { recordedAt: string; id: string };

const cell = (text: string) => text.replace(/\|/g, '\\|').replace(/\s*\n\s*/g, ' ');

/** The scenarios that counted effects per key, one row each. */
function effectsTable(outcomes: Recorded[]): string[] {
  const counted = outcomes.filter((o) => o.effectsPerKey !== undefined);
  if (counted.length === 0) {
    return [];
  }
  return [
    '## Effects per key',
    '',
    'What one idempotency key left behind in the database, in the scenarios where a holder is frozen,',
    'killed or cut off between its write and its COMMIT (transactional mode). Exactly once is 1.',
    '',
    '| fault | effects per key | reproduce |',
    '| --- | ---: | --- |',
    ...counted.map((o) => `| ${cell(o.fault)} | ${o.effectsPerKey} | \`npm test -- ${o.file}\` |`),
    '',
  ];
}

function main(): void {
  if (!existsSync(RESULTS)) {
    throw new Error('No results: run the fault suite first (npm run test:faults).');
  }
  const outcomes: Recorded[] = readdirSync(RESULTS)
    .filter((name) => name.endsWith('.json'))
    .sort()
    .map((name) => ({
      ...(JSON.parse(readFileSync(join(RESULTS, name), 'utf8')) as Outcome & {
        recordedAt: string;
      }),
      id: name.replace(/\.json$/, ''),
    }));
  const dates = outcomes.map((o) => o.recordedAt).sort();
  const lines = [
    '# Reliability: faults tried and what they did',
    '',
    'Every row is an automated test in `test/faults/` that fails if exactly-once breaks; CI runs them',
    'with the rest of `npm test`. The figures are those its last passing run measured, written by the',
    'test itself (`test/faults/results/*.json`) and turned into this page by',
    '`npm run test:faults` (which runs the fault suite, then `test/faults/reliability-report.ts`).',
    '',
    `Last run: ${dates[0]?.slice(0, 16).replace('T', ' ')} to ${dates.at(-1)?.slice(0, 16).replace('T', ' ')} UTC,`,
    `Node ${process.version}, ${cpus().length} cores, PostgreSQL, MariaDB and Redis on loopback;`,
    'app instances are real child processes of the sample started as `npm start` does.',
    '',
    '| fault | how the test triggers it | measured | outcome | reproduce |',
    '| --- | --- | --- | --- | --- |',
    ...outcomes.map((o) => {
      const measured = Object.entries(o.measured)
        .map(([name, value]) => `${name}: ${String(value)}`)
        .join('<br>');
      return `| ${cell(o.fault)} | ${cell(o.trigger)} | ${cell(measured)} | ${cell(o.outcome)} | \`npm test -- ${o.file}\` |`;
    }),
    '',
    ...effectsTable(outcomes),
  ];
  mkdirSync(join(process.cwd(), 'docs'), { recursive: true });
  writeFileSync(DOC, lines.join('\n'));
  console.log(`wrote ${DOC} from ${outcomes.length} outcomes`);
}

main();
