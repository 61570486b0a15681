import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Where each scenario writes what it measured; `docs/reliability.md` is made from these files. */
export const OUTCOMES_DIR = join(process.cwd(), 'test/faults/results');

/** What one fault scenario measured in a real run. */
export interface Outcome {
  /** Short name of the fault, e.g. "kill -9 during a payment". */
  fault: string;
  /** How the test triggers it. */
  trigger: string;
  /** The figures measured: executions, records, 5xx answers, statuses seen... */
  measured: Record<string, number | string>;
  /**
   * For the scenarios about effects (transactional mode): how many effect rows (orders, emails)
   * one key left behind. Exactly once means 1.
   */
  effectsPerKey?: number;
  /** What the run proves, in one sentence (checked by the test's assertions). */
  outcome: string;
  /** The jest test file that reproduces it. */
  file: string;
}

/**
 * Writes a scenario's outcome to `test/faults/results/<id>.json`. Call it after the assertions
 * passed, so only figures of a passing run are ever reported.
 */
export function recordOutcome(id: string, outcome: Outcome): void {
  mkdirSync(OUTCOMES_DIR, { recursive: true });
  writeFileSync(
    join(OUTCOMES_DIR, `${id}.json`),
    `${JSON.stringify({ ...outcome, recordedAt: new Date().toISOString() }, null, 2)}\n`,
  );
}
