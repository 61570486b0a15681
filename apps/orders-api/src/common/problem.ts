import { HttpException, HttpStatus } from '@nestjs/common';

/** Media type of every error answer (RFC 9457). */
export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

/** Stable, machine-readable codes of the app's own errors (the library has its own). */
export const ProblemCode = {
  ValidationFailed: 'VALIDATION_FAILED',
  MalformedBody: 'MALFORMED_BODY',
  BodyTooLarge: 'BODY_TOO_LARGE',
  UnsupportedMediaType: 'UNSUPPORTED_MEDIA_TYPE',
  NotFound: 'NOT_FOUND',
  OrderNotFound: 'ORDER_NOT_FOUND',
  OrderAlreadyPaid: 'ORDER_ALREADY_PAID',
  PaymentInProgress: 'PAYMENT_IN_PROGRESS',
  PaymentNotFound: 'PAYMENT_NOT_FOUND',
  EmailNotFound: 'EMAIL_NOT_FOUND',
  AmountMismatch: 'AMOUNT_MISMATCH',
  PreconditionFailed: 'PRECONDITION_FAILED',
  ConcurrentChange: 'CONCURRENT_CHANGE',
  PaymentGatewayFailed: 'PAYMENT_GATEWAY_FAILED',
  HealthCheckFailed: 'HEALTH_CHECK_FAILED',
  HttpError: 'HTTP_ERROR',
  DatabaseUnavailable: 'DATABASE_UNAVAILABLE',
  DatabaseConflict: 'DATABASE_CONFLICT',
  InternalError: 'INTERNAL_ERROR',
} as const;
export type ProblemCode = (typeof ProblemCode)[keyof typeof ProblemCode];

/** An RFC 9457 problem details body with a stable `code`. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  [extension: string]: unknown;
}

/** Builds a problem body; `type` is a URN derived from the code. */
export function problem(
  status: number,
  code: ProblemCode,
  title: string,
  detail: string,
  extensions: Record<string, unknown> = {},
): Problem {
  return {
    type: `urn:orders-api:problem:${code.toLowerCase().replace(/_/g, '-')}`,
    title,
    status,
    detail,
    code,
    ...extensions,
  };
}

/** An `HttpException` whose response is a problem; the filter renders it as is. */
export class ProblemException extends HttpException {
  constructor(
    status: number,
    code: ProblemCode,
    title: string,
    detail: string,
    extensions?: Record<string, unknown>,
  ) {
    super(problem(status, code, title, detail, extensions), status);
  }
}

export const orderNotFound = (id: string) =>
  new ProblemException(
    HttpStatus.NOT_FOUND,
    ProblemCode.OrderNotFound,
    'Order not found',
    `There is no order ${id}.`,
  );

export const orderAlreadyPaid = (id: string, what: string) =>
  new ProblemException(
    HttpStatus.CONFLICT,
    ProblemCode.OrderAlreadyPaid,
    'Order already paid',
    `Order ${id} is paid, so it cannot be ${what}.`,
  );

export const paymentInProgress = (id: string) =>
  new ProblemException(
    HttpStatus.CONFLICT,
    ProblemCode.PaymentInProgress,
    'Payment in progress',
    `A payment for order ${id} is being processed; retry once it has finished.`,
  );

export const preconditionFailed = (id: string, header: 'If-Match' | 'If-Unmodified-Since') =>
  new ProblemException(
    HttpStatus.PRECONDITION_FAILED,
    ProblemCode.PreconditionFailed,
    'Precondition failed',
    header === 'If-Match'
      ? `Order ${id} has changed since the If-Match ETag was read; fetch it again.`
      : `Order ${id} has changed since the If-Unmodified-Since date; fetch it again.`,
  );

export const concurrentChange = (id: string) =>
  new ProblemException(
    HttpStatus.CONFLICT,
    ProblemCode.ConcurrentChange,
    'Concurrent change',
    `Order ${id} kept changing while this request tried to change it; retry.`,
  );
