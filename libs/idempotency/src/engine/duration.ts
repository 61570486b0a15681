import ms from 'ms';
import type { Duration } from '../idempotency.options';

/** An option that is not valid; `option` names it, `problem` says what it must be. */
export class IdempotencyOptionError extends Error {
  constructor(
    readonly option: string,
    readonly problem: string,
  ) {
    super(`nestjs-idempotency: option "${option}" ${problem}`);
    this.name = 'IdempotencyOptionError';
  }
}

/**
 * Converts a duration option to milliseconds. Throws {@link IdempotencyOptionError}, naming the
 * option, when the value is not a positive duration.
 */
export function toMs(value: Duration, option: string): number {
  let result: number | undefined;
  try {
    result = typeof value === 'number' ? value : ms(value as ms.StringValue);
  } catch {
    result = undefined;
  }
  if (typeof result !== 'number' || !Number.isFinite(result) || result <= 0) {
    throw new IdempotencyOptionError(
      option,
      `must be a positive number of milliseconds or a duration string such as '30s' or '24h'; got ${JSON.stringify(value)}.`,
    );
  }
  return result;
}
