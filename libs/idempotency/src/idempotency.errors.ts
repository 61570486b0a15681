import { HttpException, HttpStatus } from '@nestjs/common';

/** Stable, machine-readable codes carried in the `code` member of every problem answer. */
export const IdempotencyErrorCode = {
  KeyMissing: 'IDEMPOTENCY_KEY_MISSING',
  KeyInvalid: 'IDEMPOTENCY_KEY_INVALID',
  KeyReused: 'IDEMPOTENCY_KEY_REUSED',
  RequestInProgress: 'IDEMPOTENCY_REQUEST_IN_PROGRESS',
  StoreUnavailable: 'IDEMPOTENCY_STORE_UNAVAILABLE',
  FingerprintFailed: 'IDEMPOTENCY_FINGERPRINT_FAILED',
} as const;

/** One of {@link IdempotencyErrorCode}. */
export type IdempotencyErrorCode = (typeof IdempotencyErrorCode)[keyof typeof IdempotencyErrorCode];

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
  ) {
    const problem: IdempotencyProblem = {
      type: PROBLEM_TYPE_BASE + code.toLowerCase().replace(/_/g, '-'),
      title,
      status,
      detail,
      code,
    };
    super(problem, status);
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

/** 409 with `Retry-After`: a request with this key is still being processed. */
export class IdempotencyRequestInProgressException extends IdempotencyException {
  constructor(retryAfterSeconds: number) {
    super(
      IdempotencyErrorCode.RequestInProgress,
      HttpStatus.CONFLICT,
      'Request in progress',
      'A request with this idempotency key is still being processed; retry later.',
      { 'Retry-After': String(retryAfterSeconds) },
    );
  }
}

/** 503: the store failed, so the request was not run (fail closed). */
export class IdempotencyStoreUnavailableException extends IdempotencyException {
  constructor() {
    super(
      IdempotencyErrorCode.StoreUnavailable,
      HttpStatus.SERVICE_UNAVAILABLE,
      'Idempotency store unavailable',
      'The request was not processed because its idempotency could not be guaranteed; retry later.',
      { 'Retry-After': '1' },
    );
  }
}
