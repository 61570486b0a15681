import { HttpException, HttpStatus } from '@nestjs/common';
import { IdempotencyErrorCode, type IdempotencyRejection } from './engine/idempotency-rejection';

export { IdempotencyErrorCode } from './engine/idempotency-rejection';

/** The body of every error answer: an RFC 9457 problem details object with a stable `code`. */
export interface IdempotencyProblem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: IdempotencyErrorCode;
}

const PROBLEM_TYPE_BASE = 'urn:nestjs-idempotency:problem:';

/**
 * Base class of the library's errors. Its response is a problem details object; the interceptor
 * sets `Content-Type: application/problem+json` before throwing it.
 */
export abstract class IdempotencyException extends HttpException {
  /** Response headers that go with this error (for example `Retry-After`). */
  readonly headers: Readonly<Record<string, string>>;

  protected constructor(
    readonly code: IdempotencyErrorCode,
    status: number,
    title: string,
    detail: string,
    headers: Record<string, string> = {},
    cause?: unknown,
  ) {
    const problem: IdempotencyProblem = {
      type: PROBLEM_TYPE_BASE + code.toLowerCase().replace(/_/g, '-'),
      title,
      status,
      detail,
      code,
    };
    super(problem, status, cause === undefined ? undefined : { cause });
    this.headers = headers;
  }
}

/** 400: the route requires a key and the request sent none. */
export class IdempotencyKeyMissingException extends IdempotencyException {
  constructor(headerName: string) {
    super(
      IdempotencyErrorCode.KeyMissing,
      HttpStatus.BAD_REQUEST,
      'Idempotency key missing',
      `This operation requires an ${headerName} header.`,
    );
  }
}

/** 400: the key is empty, too long, not printable ASCII, malformed, or sent twice differently. */
export class IdempotencyKeyInvalidException extends IdempotencyException {
  constructor(detail: string) {
    super(
      IdempotencyErrorCode.KeyInvalid,
      HttpStatus.BAD_REQUEST,
      'Idempotency key invalid',
      detail,
    );
  }
}

/**
 * 400: the route accepts only keys this server issued (`key: 'issued'`), and this one is not: not
 * an issued key, a forged or altered one, one signed by a secret no longer in `issuedKeys.secrets`,
 * or one issued for another scope. The client should get a new key from the issuing endpoint.
 */
export class IdempotencyKeyNotIssuedException extends IdempotencyException {
  constructor(detail: string) {
    super(
      IdempotencyErrorCode.KeyNotIssued,
      HttpStatus.BAD_REQUEST,
      'Idempotency key not issued',
      detail,
    );
  }
}

/**
 * 400: the key was issued by this server but its lifetime (`issuedKeys.ttl`) has passed. Nothing
 * ran for this request; the client should get a new key for a new attempt.
 */
export class IdempotencyKeyExpiredException extends IdempotencyException {
  constructor(readonly expiredAt: Date) {
    super(
      IdempotencyErrorCode.KeyExpired,
      HttpStatus.BAD_REQUEST,
      'Idempotency key expired',
      `This idempotency key expired at ${expiredAt.toISOString()}; request a new one.`,
    );
  }
}

/** 400: the request body cannot be fingerprinted (JSON nested too deeply to walk). */
export class IdempotencyFingerprintFailedException extends IdempotencyException {
  constructor() {
    super(
      IdempotencyErrorCode.FingerprintFailed,
      HttpStatus.BAD_REQUEST,
      'Request cannot be fingerprinted',
      'The request body is nested too deeply to be checked against its idempotency key.',
    );
  }
}

/** 422 (configurable): the key was used before for a request with another payload. */
export class IdempotencyKeyReusedException extends IdempotencyException {
  constructor(status: number = HttpStatus.UNPROCESSABLE_ENTITY) {
    super(
      IdempotencyErrorCode.KeyReused,
      status,
      'Idempotency key reused',
      'This idempotency key was already used for a request with a different payload.',
    );
  }
}

/**
 * 409 with `Retry-After`: a request with this key is still being processed. `retryAfterMs` says
 * when to try again (the header carries it in whole seconds, rounded up).
 */
export class IdempotencyRequestInProgressException extends IdempotencyException {
  constructor(readonly retryAfterMs: number) {
    super(
      IdempotencyErrorCode.RequestInProgress,
      HttpStatus.CONFLICT,
      'Request in progress',
      'A request with this idempotency key is still being processed; retry later.',
      { 'Retry-After': String(Math.max(1, Math.ceil(retryAfterMs / 1000))) },
    );
  }
}

/**
 * 409: the first request with this key ran, but its result could not be stored (a stream, a body
 * over `maxResponseBytes`, `@Res()`), so there is nothing to replay, and it must not run again.
 */
export class IdempotencyResponseNotReplayableException extends IdempotencyException {
  constructor() {
    super(
      IdempotencyErrorCode.ResponseNotReplayable,
      HttpStatus.CONFLICT,
      'Response not replayable',
      'A request with this idempotency key was already processed, but its response cannot be replayed; it will not be processed again.',
    );
  }
}

/** 503: the store failed, so the request was not run (fail closed). `cause` is the store's error. */
export class IdempotencyStoreUnavailableException extends IdempotencyException {
  constructor(cause?: unknown) {
    super(
      IdempotencyErrorCode.StoreUnavailable,
      HttpStatus.SERVICE_UNAVAILABLE,
      'Idempotency store unavailable',
      'The request was not processed because its idempotency could not be guaranteed; retry later.',
      { 'Retry-After': '1' },
      cause,
    );
  }
}

/** The exception of a rejection: what every context but a native one throws. */
export function exceptionOf(
  rejection: IdempotencyRejection,
  headerName: string,
  mismatchStatus: number,
): IdempotencyException {
  switch (rejection.code) {
    case IdempotencyErrorCode.KeyMissing:
      return new IdempotencyKeyMissingException(headerName);
    case IdempotencyErrorCode.KeyInvalid:
      return new IdempotencyKeyInvalidException(rejection.detail);
    case IdempotencyErrorCode.FingerprintFailed:
      return new IdempotencyFingerprintFailedException();
    case IdempotencyErrorCode.KeyNotIssued:
      return new IdempotencyKeyNotIssuedException(rejection.detail);
    case IdempotencyErrorCode.KeyExpired:
      return new IdempotencyKeyExpiredException(rejection.expiredAt);
    case IdempotencyErrorCode.KeyReused:
      return new IdempotencyKeyReusedException(mismatchStatus);
    case IdempotencyErrorCode.RequestInProgress:
      return new IdempotencyRequestInProgressException(rejection.retryAfterMs);
    case IdempotencyErrorCode.ResponseNotReplayable:
      return new IdempotencyResponseNotReplayableException();
    case IdempotencyErrorCode.StoreUnavailable:
      return new IdempotencyStoreUnavailableException(rejection.cause);
  }
}
