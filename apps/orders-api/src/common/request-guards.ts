import { HttpException, HttpStatus } from '@nestjs/common';
import type { NextFunction, Request, Response } from 'express';
import type { IncomingHttpHeaders } from 'node:http';
import {
  type Problem,
  problem,
  PROBLEM_CONTENT_TYPE,
  ProblemCode,
  ProblemException,
} from './problem';
import { bodyParserProblem } from './problem-details.filter';

/**
 * The request guards of both platforms. The checks are functions of the request's headers and
 * body; Express runs them as middleware around body-parser, Fastify as an `onRequest` hook and
 * the JSON content-type parser (see fastify-platform.ts), so both answer the same problems.
 */

/** Deepest nesting of arrays and objects accepted in a JSON body. */
export const MAX_BODY_DEPTH = 32;

/** `application/json` or any `application/*+json` (e.g. `application/merge-patch+json`). */
const JSON_MEDIA_TYPE = /^application\/(?:[\w.!#$&^-]+\+)?json$/;

/** Sends a problem straight from an Express middleware (Nest's filters do not see these). */
export function sendProblem(res: Response, body: Problem): void {
  res.status(body.status).type(PROBLEM_CONTENT_TYPE).send(JSON.stringify(body));
}

/**
 * 415 for a request body that is not JSON: the API speaks JSON only, and a form or text body would
 * otherwise reach validation as an empty object.
 */
export function requireJsonBody(req: Request, res: Response, next: NextFunction): void {
  const refusal = mediaTypeProblem(req.headers);
  return refusal ? sendProblem(res, refusal) : next();
}

/** 400 for JSON nested deeper than {@link MAX_BODY_DEPTH}, before anything walks it recursively. */
export function limitBodyDepth(req: Request, res: Response, next: NextFunction): void {
  const refusal = depthProblem(req.body);
  return refusal ? sendProblem(res, refusal) : next();
}

/** The 415 problem for a request with a body that is not JSON, or `undefined`. */
export function mediaTypeProblem(headers: IncomingHttpHeaders): Problem | undefined {
  const hasBody =
    headers['transfer-encoding'] !== undefined ||
    (headers['content-length'] !== undefined && headers['content-length'] !== '0');
  const mediaType = headers['content-type']?.split(';')[0].trim().toLowerCase();
  if (!hasBody || (mediaType !== undefined && JSON_MEDIA_TYPE.test(mediaType))) {
    return undefined;
  }
  return problem(
    HttpStatus.UNSUPPORTED_MEDIA_TYPE,
    ProblemCode.UnsupportedMediaType,
    'Unsupported media type',
    'Send the request body as JSON with Content-Type: application/json.',
  );
}

/** The 400 problem for a body nested deeper than {@link MAX_BODY_DEPTH}, or `undefined`. */
export function depthProblem(body: unknown): Problem | undefined {
  if (!depthExceeds(body, MAX_BODY_DEPTH)) {
    return undefined;
  }
  return problem(
    HttpStatus.BAD_REQUEST,
    ProblemCode.MalformedBody,
    'Request body too deeply nested',
    `JSON nested more than ${MAX_BODY_DEPTH} levels deep is not accepted.`,
  );
}

/**
 * Parses a JSON request body as Express's body parser does (for Fastify, whose own parser differs:
 * it accepts any JSON value, ignores the charset and nests without limit): an empty body is `{}`,
 * only an object or an array is accepted (400), the charset must be a UTF one (415), and the
 * nesting is limited (400). Throws a {@link ProblemException}.
 */
export function parseJsonBody(contentType: string | undefined, raw: Buffer): unknown {
  const charset =
    /;\s*charset\s*=\s*"?([^";\s]+)"?/i.exec(contentType ?? '')?.[1]?.toLowerCase() ?? 'utf-8';
  let text: string;
  try {
    if (!charset.startsWith('utf-')) {
      throw new RangeError(charset);
    }
    text = new TextDecoder(charset).decode(raw);
  } catch {
    throw new ProblemException(
      HttpStatus.UNSUPPORTED_MEDIA_TYPE,
      ProblemCode.UnsupportedMediaType,
      'Unsupported media type',
      'The request body must be JSON in UTF-8.',
    );
  }
  if (raw.length === 0) {
    return {};
  }
  const first = /^[\x20\x09\x0a\x0d]*(.)/.exec(text)?.[1];
  let body: unknown;
  try {
    if (first !== '{' && first !== '[') {
      throw new SyntaxError('not an object or an array');
    }
    body = JSON.parse(text);
  } catch {
    throw new ProblemException(
      HttpStatus.BAD_REQUEST,
      ProblemCode.MalformedBody,
      'Malformed request body',
      'The request body is not valid JSON.',
    );
  }
  const tooDeep = depthProblem(body);
  if (tooDeep) {
    throw new HttpException(tooDeep, tooDeep.status);
  }
  return body;
}

/** Renders the body parser's errors (malformed JSON, too large, bad charset) as problems. */
export function bodyParserErrors(
  error: unknown,
  _req: Request,
  res: Response,
  next: NextFunction,
): void {
  const body = bodyParserProblem(error);
  if (!body) {
    return next(error);
  }
  sendProblem(res, body);
}

/** Iterative, so a hostile body cannot overflow the stack here. */
function depthExceeds(value: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [current, depth] = stack.pop()!;
    if (typeof current !== 'object' || current === null) {
      continue;
    }
    if (depth >= max) {
      return true;
    }
    for (const child of Object.values(current)) {
      stack.push([child, depth + 1]);
    }
  }
  return false;
}
