import {
  type ArgumentsHost,
  Catch,
  type ExceptionFilter,
  HttpException,
  HttpStatus,
  Logger,
} from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { STATUS_CODES } from 'node:http';
import {
  isConnectionLost,
  isTransientConflict,
  isUnstorableValue,
} from '../database/database-errors';
import { type Problem, problem, PROBLEM_CONTENT_TYPE, ProblemCode } from './problem';

const CODES: Partial<Record<number, ProblemCode>> = {
  [HttpStatus.BAD_REQUEST]: ProblemCode.ValidationFailed,
  [HttpStatus.NOT_FOUND]: ProblemCode.NotFound,
  [HttpStatus.PAYLOAD_TOO_LARGE]: ProblemCode.BodyTooLarge,
  [HttpStatus.UNSUPPORTED_MEDIA_TYPE]: ProblemCode.UnsupportedMediaType,
};

/** What body-parser (Express) and Fastify attach to the errors they throw. */
interface BodyParserError {
  type?: string;
  status?: number;
  statusCode?: number;
  expose?: boolean;
  /** Fastify's error code, e.g. `FST_ERR_CTP_BODY_TOO_LARGE`. */
  code?: unknown;
}

/**
 * Renders every error as `application/problem+json` (RFC 9457): the library's and the app's own
 * problems as they are, Nest's HTTP exceptions and body-parser errors translated, and anything
 * else as a 500 whose details stay in the log.
 */
@Catch()
export class ProblemDetailsFilter implements ExceptionFilter {
  private readonly logger = new Logger('Problem');

  constructor(private readonly adapterHost: HttpAdapterHost) {}

  catch(exception: unknown, host: ArgumentsHost): void {
    const { httpAdapter } = this.adapterHost;
    const response = host.switchToHttp().getResponse();
    const body = this.toProblem(exception);
    // An HttpException of 5xx (503 from the library, 502 from the gateway, a failed health check)
    // is an answer its thrower already logged; anything else is a bug, logged with its stack.
    if (body.status >= 500 && !(exception instanceof HttpException)) {
      this.logger.error(
        body.detail,
        exception instanceof Error ? exception.stack : String(exception),
      );
    }
    httpAdapter.setHeader(response, 'Content-Type', PROBLEM_CONTENT_TYPE);
    httpAdapter.reply(response, body, body.status);
  }

  private toProblem(exception: unknown): Problem {
    if (exception instanceof HttpException) {
      return httpExceptionProblem(exception);
    }
    // Validation passed but the database refused the value (a NUL character, a string longer
    // than its column as the database counts characters): the request's fault, not the server's.
    if (isUnstorableValue(exception)) {
      return problem(
        HttpStatus.BAD_REQUEST,
        ProblemCode.ValidationFailed,
        'Invalid request',
        'A value of the request cannot be stored: too long or too large for its field, or holding a character that is not accepted (such as U+0000).',
      );
    }
    if (isTransientConflict(exception)) {
      return problem(
        HttpStatus.SERVICE_UNAVAILABLE,
        ProblemCode.DatabaseConflict,
        'Database conflict',
        'The request met a deadlock or a serialization failure and was rolled back; nothing was done. Retry with the same Idempotency-Key.',
      );
    }
    if (isConnectionLost(exception)) {
      return problem(
        HttpStatus.SERVICE_UNAVAILABLE,
        ProblemCode.DatabaseUnavailable,
        'Database unavailable',
        'The database connection was lost; nothing was done. Retry shortly.',
      );
    }
    return (
      bodyParserProblem(exception) ??
      problem(
        HttpStatus.INTERNAL_SERVER_ERROR,
        ProblemCode.InternalError,
        'Internal server error',
        'The server could not process the request.',
      )
    );
  }
}

/** The problem for an `HttpException`: its own when it holds one, else one made from it. */
export function httpExceptionProblem(exception: HttpException): Problem {
  const status = exception.getStatus();
  const response = exception.getResponse();
  if (isProblem(response)) {
    return response;
  }
  // Fastify's 413 reaches the filter as Nest's PayloadTooLargeException: the same problem as Express's.
  if (status === HttpStatus.PAYLOAD_TOO_LARGE) {
    return bodyParserProblem({ expose: true, status, type: 'entity.too.large' })!;
  }
  const title = STATUS_CODES[status] ?? 'Error';
  const message =
    typeof response === 'string'
      ? response
      : ((response as { message?: unknown }).message ?? exception.message);
  const code = CODES[status] ?? (status >= 500 ? ProblemCode.InternalError : ProblemCode.HttpError);
  return problem(
    status,
    code,
    title,
    status >= 500
      ? 'The server could not process the request.'
      : Array.isArray(message)
        ? message.join('; ')
        : String(message),
  );
}

/**
 * The problem for an error of Express's body parser or of Fastify's request handling (malformed
 * JSON, too large, bad charset or content length), or `undefined` when `error` is not one.
 */
export function bodyParserProblem(error: unknown): Problem | undefined {
  const parserError = error as BodyParserError | undefined;
  const status = parserError?.status ?? parserError?.statusCode;
  if (typeof status !== 'number' || status < 400 || status >= 500) {
    return undefined;
  }
  if (typeof parserError?.code === 'string' && parserError.code.startsWith('FST_')) {
    return fastifyProblem(parserError.code, status);
  }
  if (!parserError?.expose) {
    return undefined;
  }
  switch (parserError.type) {
    case 'entity.too.large':
      return problem(
        HttpStatus.PAYLOAD_TOO_LARGE,
        ProblemCode.BodyTooLarge,
        'Request body too large',
        'The request body is larger than this server accepts.',
      );
    case 'encoding.unsupported':
    case 'charset.unsupported':
      return problem(
        HttpStatus.UNSUPPORTED_MEDIA_TYPE,
        ProblemCode.UnsupportedMediaType,
        'Unsupported media type',
        'The request body must be JSON in UTF-8.',
      );
    default:
      return problem(
        status,
        ProblemCode.MalformedBody,
        'Malformed request body',
        'The request body is not valid JSON.',
      );
  }
}

/** A 4xx error of Fastify: the body limit, a content length or type it refused, a bad URL. */
function fastifyProblem(code: string, status: number): Problem {
  switch (code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return bodyParserProblem({ expose: true, status, type: 'entity.too.large' })!;
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return problem(
        HttpStatus.UNSUPPORTED_MEDIA_TYPE,
        ProblemCode.UnsupportedMediaType,
        'Unsupported media type',
        'Send the request body as JSON with Content-Type: application/json.',
      );
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return bodyParserProblem({ expose: true, status, type: 'entity.parse.failed' })!;
    default:
      return problem(
        status,
        CODES[status] === ProblemCode.NotFound ? ProblemCode.NotFound : ProblemCode.HttpError,
        STATUS_CODES[status] ?? 'Error',
        'The server could not process the request as sent.',
      );
  }
}

function isProblem(value: unknown): value is Problem {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Problem).type === 'string' &&
    typeof (value as Problem).title === 'string' &&
    typeof (value as Problem).status === 'number'
  );
}
