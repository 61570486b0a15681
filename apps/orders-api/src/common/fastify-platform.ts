import { HttpException, HttpStatus, type INestApplication } from '@nestjs/common';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import type { IncomingHttpHeaders } from 'node:http';
import type { Readable, Transform } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import { type Problem, problem, PROBLEM_CONTENT_TYPE, ProblemCode } from './problem';
import { bodyParserProblem, httpExceptionProblem } from './problem-details.filter';
import { mediaTypeProblem, parseJsonBody } from './request-guards';

/**
 * What the sample adds to Fastify so that it answers as on Express: the request guards around
 * body parsing, and problems for the errors Fastify answers itself. Express's counterparts are
 * middleware (see app.setup.ts).
 */

/** Sends `body` as Express's `sendProblem()` does. */
export function replyProblem(reply: FastifyReply, body: Problem): FastifyReply {
  return reply
    .code(body.status)
    .type(`${PROBLEM_CONTENT_TYPE}; charset=utf-8`)
    .send(JSON.stringify(body));
}

/**
 * Fastify's `frameworkErrors`: a URL that does not decode (400, as Express's router answers) and
 * the errors Fastify would otherwise answer in its own JSON shape, before any route or hook runs.
 */
export function frameworkErrors(
  error: FastifyError,
  _request: FastifyRequest,
  reply: FastifyReply,
) {
  if (error.code === 'FST_ERR_BAD_URL') {
    return replyProblem(
      reply,
      problem(HttpStatus.BAD_REQUEST, ProblemCode.ValidationFailed, 'Bad Request', error.message),
    );
  }
  return replyProblem(
    reply,
    bodyParserProblem(error) ??
      problem(
        HttpStatus.INTERNAL_SERVER_ERROR,
        ProblemCode.InternalError,
        'Internal server error',
        'The server could not process the request.',
      ),
  );
}

const DECODERS: Partial<Record<string, () => Transform>> = {
  gzip: createGunzip,
  'x-gzip': createGunzip,
  deflate: createInflate,
  br: createBrotliDecompress,
};

/**
 * Replaces Fastify's body parsing with Express's: 415 for a body that is not JSON (for every
 * method and route, before anything is read), `Content-Encoding` gzip, deflate and br inflated
 * (within the body limit, counted inflated as body-parser does) and others refused (415), and
 * the JSON parsed as body-parser does, nesting limit included. What these throw reaches the
 * problem filter through Nest's error handler, as Fastify's own 413 does.
 */
export function installFastifyBodyParsing(app: NestFastifyApplication, bodyLimit: number): void {
  const fastify = app.getHttpAdapter().getInstance();
  fastify.removeAllContentTypeParsers();
  fastify.addHook('onRequest', async (request) => {
    const refusal = mediaTypeProblem(request.headers);
    if (refusal) {
      throw new HttpException(refusal, refusal.status);
    }
  });
  fastify.addHook('preParsing', async (request, _reply, payload) =>
    decode(request.headers, payload),
  );
  app.useBodyParser(
    '*',
    { bodyLimit },
    async (request: { headers: IncomingHttpHeaders }, body: Buffer) =>
      parseJsonBody(request.headers['content-type'], body),
  );
}

function decode(headers: IncomingHttpHeaders, payload: Readable): Readable {
  const encoding = (headers['content-encoding'] ?? 'identity').trim().toLowerCase();
  if (encoding === 'identity') {
    return payload;
  }
  const createDecoder = DECODERS[encoding];
  if (!createDecoder) {
    const refusal = bodyParserProblem({ expose: true, status: 415, type: 'encoding.unsupported' })!;
    throw new HttpException(refusal, refusal.status);
  }
  // Fastify checks Content-Length and the limit against what arrived, not what it inflated to.
  const decoder = Object.assign(createDecoder(), { receivedEncodedLength: 0 });
  payload.on('data', (chunk: Buffer) => (decoder.receivedEncodedLength += chunk.length));
  payload.on('error', (error) => decoder.destroy(error));
  // A corrupt body is the client's: rendered as body-parser's failed parse (400).
  decoder.on('error', (error) =>
    Object.assign(error, { expose: true, status: 400, statusCode: 400 }),
  );
  return payload.pipe(decoder);
}

/** The part of Nest's HTTP adapter Swagger's page routes use. */
type Routes = Pick<ReturnType<INestApplication['getHttpAdapter']>, 'get'>;

/**
 * Routes added to Fastify before `init()` keep Fastify's default error handler, so errors of the
 * handlers registered through the returned adapter (Swagger's page, its assets) are rendered
 * here, as the problem filter would.
 */
export function withProblemReplies<T extends Routes>(adapter: T): T {
  return Object.assign(Object.create(adapter) as T, {
    get: (path: string, handler: (request: FastifyRequest, reply: FastifyReply) => unknown) =>
      adapter.get(path, async (request: FastifyRequest, reply: FastifyReply) => {
        try {
          return await handler(request, reply);
        } catch (error) {
          if (!(error instanceof HttpException)) {
            throw error;
          }
          return replyProblem(reply, httpExceptionProblem(error));
        }
      }),
  });
}
