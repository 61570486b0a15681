import { IntrinsicException } from '@nestjs/common';
import type { IdempotencyErrorCode } from '../../engine/idempotency-rejection';

/** The `extensions` of the GraphQL error of a refused mutation. */
export interface IdempotencyGraphQLErrorExtensions {
  /** The stable code, as over HTTP (`IdempotencyErrorCode`). */
  code: IdempotencyErrorCode;
  /** The status the same refusal answers over HTTP: 400, 409, 422 (or `mismatchStatus`) or 503. */
  status: number;
  /** With `IDEMPOTENCY_REQUEST_IN_PROGRESS`: when to retry, in milliseconds. */
  retryAfterMs?: number;
  /** With `IDEMPOTENCY_KEY_EXPIRED`: when the issued key expired (ISO 8601). */
  expiredAt?: string;
}

/**
 * A mutation refused by the library (no key, an invalid or reused one, one still in flight, the
 * store unavailable...). GraphQL puts it in the response's `errors` array, at the field's path,
 * with its message and its `extensions` (`code`, `status`, `retryAfterMs`); the mutation did not
 * run.
 *
 * It is not a `GraphQLError` (the `graphql` package is an optional peer): GraphQL wraps it in one,
 * keeping its message and extensions, so a `formatError` finds it as the wrapper's
 * `originalError`. It extends Nest's `IntrinsicException`, so Nest does not log it as an
 * unexpected error, and it is not an `HttpException`, so Apollo's transformation of HTTP errors
 * leaves its code alone.
 *
 * @example
 * { "message": "A request with this idempotency key is still being processed; retry later.",
 *   "path": ["placeOrder"],
 *   "extensions": { "code": "IDEMPOTENCY_REQUEST_IN_PROGRESS", "status": 409, "retryAfterMs": 1000 } }
 */
export class IdempotencyGraphQLError extends IntrinsicException {
  constructor(
    message: string,
    readonly extensions: IdempotencyGraphQLErrorExtensions,
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'IdempotencyGraphQLError';
  }

  /** The stable code (`extensions.code`). */
  get code(): IdempotencyErrorCode {
    return this.extensions.code;
  }
}
