import { HttpStatus } from '@nestjs/common';
import type { NextFunction, Request, Response } from 'express';
import { type Problem, problem, PROBLEM_CONTENT_TYPE, ProblemCode } from './problem';
import { bodyParserProblem } from './problem-details.filter';

/** Deepest nesting of arrays and objects accepted in a JSON body. */
export const MAX_BODY_DEPTH = 32;

/** Sends a problem straight from an Express middleware (Nest's filters do not see these). */
export function sendProblem(res: Response, body: Problem): void {
  res.status(body.status).type(PROBLEM_CONTENT_TYPE).send(JSON.stringify(body));
}

/**
 * 415 for a request body that is not JSON: the API speaks JSON only, and a form or text body would
 * otherwise reach validation as an empty object.
 */
export function requireJsonBody(req: Request, res: Response, next: NextFunction): void {
  const hasBody =
    req.headers['transfer-encoding'] !== undefined ||
    (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
  if (hasBody && !req.is(['application/json', 'application/*+json'])) {
    return sendProblem(
      res,
      problem(
        HttpStatus.UNSUPPORTED_MEDIA_TYPE,
        ProblemCode.UnsupportedMediaType,
        'Unsupported media type',
        'Send the request body as JSON with Content-Type: application/json.',
      ),
    );
  }
  next();
}

/** 400 for JSON nested deeper than {@link MAX_BODY_DEPTH}, before anything walks it recursively. */
export function limitBodyDepth(req: Request, res: Response, next: NextFunction): void {
  if (depthExceeds(req.body, MAX_BODY_DEPTH)) {
    return sendProblem(
      res,
      problem(
        HttpStatus.BAD_REQUEST,
        ProblemCode.MalformedBody,
        'Request body too deeply nested',
        `JSON nested more than ${MAX_BODY_DEPTH} levels deep is not accepted.`,
      ),
    );
  }
  next();
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
