/** Stable, machine-readable codes carried in the `code` member of every problem answer. */
export const IdempotencyErrorCode = {
  KeyMissing: 'IDEMPOTENCY_KEY_MISSING',
  KeyInvalid: 'IDEMPOTENCY_KEY_INVALID',
  KeyReused: 'IDEMPOTENCY_KEY_REUSED',
  RequestInProgress: 'IDEMPOTENCY_REQUEST_IN_PROGRESS',
  ResponseNotReplayable: 'IDEMPOTENCY_RESPONSE_NOT_REPLAYABLE',
  StoreUnavailable: 'IDEMPOTENCY_STORE_UNAVAILABLE',
  FingerprintFailed: 'IDEMPOTENCY_FINGERPRINT_FAILED',
  KeyNotIssued: 'IDEMPOTENCY_KEY_NOT_ISSUED',
  KeyExpired: 'IDEMPOTENCY_KEY_EXPIRED',
} as const;

/** One of {@link IdempotencyErrorCode}. */
export type IdempotencyErrorCode = (typeof IdempotencyErrorCode)[keyof typeof IdempotencyErrorCode];

/**
 * Why a call was refused, in no protocol's terms. The engine decides the last four; a context
 * adapter decides the key (issued keys included) and fingerprint ones, before the engine runs.
 * Each context renders it natively (a problem answer over HTTP, a typed error from
 * `IdempotencyService.run()`).
 */
export type IdempotencyRejection =
  | { code: typeof IdempotencyErrorCode.KeyMissing }
  | { code: typeof IdempotencyErrorCode.KeyInvalid; detail: string }
  | { code: typeof IdempotencyErrorCode.FingerprintFailed }
  | {
      code: typeof IdempotencyErrorCode.KeyNotIssued;
      /** Why: not an issued key, a bad signature, a retired secret, or another scope. */
      detail: string;
    }
  | {
      code: typeof IdempotencyErrorCode.KeyExpired;
      /** When the key stopped being accepted. */
      expiredAt: Date;
    }
  | { code: typeof IdempotencyErrorCode.KeyReused }
  | {
      code: typeof IdempotencyErrorCode.RequestInProgress;
      /** When to try again: the `retryAfter` option, never more than the remaining lease. */
      retryAfterMs: number;
    }
  | { code: typeof IdempotencyErrorCode.ResponseNotReplayable }
  | { code: typeof IdempotencyErrorCode.StoreUnavailable; cause: unknown };
