import ms from 'ms';
import type { Duration } from './idempotency.options';

/**
 * Converts a duration option to milliseconds. Throws at bootstrap (or on first use of a route) with
 * the option's name when the value is not a positive duration.
 */
export function toMs(value: Duration, option: string): number {
  let result: number | undefined;
  try {
    result = typeof value === 'number' ? value : ms(value as ms.StringValue);
  } catch {
    result = undefined;
  }
  if (typeof result !== 'number' || !Number.isFinite(result) || result <= 0) {
    throw new Error(
      `nestjs-idempotency: option "${option}" must be a positive number of milliseconds or a duration string such as '30s' or '24h'; got ${JSON.stringify(value)}.`,
    );
  }
  return result;
}
