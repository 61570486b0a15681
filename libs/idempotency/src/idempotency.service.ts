import { HttpException, Injectable } from '@nestjs/common';
import { IdempotentHandlers } from './contexts/idempotent-handlers';
import { type CapturedError, IdempotencyEngine } from './engine/idempotency.engine';
import { payloadFingerprint, storageKeyOf } from './engine/idempotency.hashing';
import { InvalidKeyError, validateIdempotencyKey } from './engine/idempotency-key';
import { exceptionOf, IdempotencyKeyInvalidException } from './idempotency.errors';
import { assertScope, IdempotencyKeyIssuer } from './idempotency-key-issuer';
import type { IdempotencyRunOptions, IdempotencyRunResult } from './idempotency.options';

/**
 * Exactly-once work without a controller: a queue consumer keyed by its job id, a cron job keyed
 * by its schedule slot, a provider webhook keyed by the provider's event id. `run()` follows the
 * rules of an `@Idempotent()` route (one atomic claim, a renewed lease, wait or reject, fencing,
 * encryption, the same retention) through the same engine and store.
 *
 * @example
 * const { value, replayed } = await this.idempotency.run(
 *   event.id,
 *   () => this.payments.capture(event.data.paymentId),
 *   { scope: 'stripe-webhook', payload: event.data, ttl: '7d' },
 * );
 */
@Injectable()
export class IdempotencyService {
  constructor(
    private readonly engine: IdempotencyEngine,
    private readonly handlers: IdempotentHandlers,
    private readonly issuer: IdempotencyKeyIssuer,
  ) {}

  /**
   * Runs `work` once for `key` within `options.scope`, and gives every later call with that key
   * the first run's result. The value is stored in the library's tagged JSON, so `Date` and
   * `Buffer` values come back as such (class instances come back as plain objects).
   *
   * If the work throws, its error is re-thrown and the key released, so a retry runs it again;
   * an `HttpException` below 500 is stored instead and re-thrown on every retry (`storeIf`).
   *
   * @param key 1 to 255 characters of printable ASCII (the rules of the `Idempotency-Key` header).
   * @throws IdempotencyKeyInvalidException the key is not 1 to 255 printable ASCII characters.
   * @throws IdempotencyKeyNotIssuedException with `issued`, the key is not one issued for it.
   * @throws IdempotencyKeyExpiredException with `issued`, the issued key has expired.
   * @throws IdempotencyRequestInProgressException another call with the key is running; retry
   *   after `retryAfterMs` (with `concurrent: 'wait'`, only once `waitTimeout` has passed).
   * @throws IdempotencyKeyReusedException the key was used with another `payload`.
   * @throws IdempotencyResponseNotReplayableException the first run's value could not be stored.
   * @throws IdempotencyStoreUnavailableException the store failed; the work did not run (unless
   *   `onStoreError: 'open'`).
   */
  async run<T>(
    key: string,
    work: () => T | Promise<T>,
    options: IdempotencyRunOptions = {},
  ): Promise<IdempotencyRunResult<T>> {
    const { scope, payload, issued, ...overrides } = options;
    const resolved = Object.values(overrides).some((value) => value !== undefined)
      ? this.handlers.resolve(overrides)
      : this.handlers.moduleOptions;
    try {
      validateIdempotencyKey(key);
    } catch (error) {
      throw error instanceof InvalidKeyError
        ? new IdempotencyKeyInvalidException(error.message)
        : error;
    }
    if (issued !== undefined) {
      assertScope(issued, 'issued of IdempotencyService.run()');
      const verification = this.issuer.verify(key, issued);
      if (!verification.valid) {
        throw exceptionOf(verification.rejection, resolved.headerName, resolved.mismatchStatus);
      }
    }
    const parts: readonly string[] =
      scope === undefined ? [] : typeof scope === 'string' ? [scope] : scope;
    const outcome = await this.engine.process<T>({
      key: storageKeyOf(['run', ...parts], key),
      fingerprint: payload === undefined ? null : payloadFingerprint(payload),
      options: resolved,
      context: 'service',
      target: parts.join(' ') || '(no scope)',
      work: async () => work(),
      capture: (value) => ({ status: 200, body: value }),
      captureError,
    });
    switch (outcome.type) {
      case 'executed':
        return { value: outcome.value, replayed: false };
      case 'replayed': {
        const { result } = outcome;
        if (result.error) {
          throw new HttpException(result.body as string | Record<string, unknown>, result.status);
        }
        return { value: result.body as T, replayed: true };
      }
      case 'rejected':
        throw exceptionOf(outcome.rejection, resolved.headerName, resolved.mismatchStatus);
    }
  }
}

/** An `HttpException` as its status and response; any other error as a 500 with its message. */
function captureError(error: unknown): CapturedError {
  if (error instanceof HttpException) {
    return { status: error.getStatus(), body: error.getResponse() };
  }
  return {
    status: 500,
    body: { statusCode: 500, message: error instanceof Error ? error.message : String(error) },
  };
}
