import { type ExecutionContext, HttpException, Injectable, StreamableFile } from '@nestjs/common';
import {
  PATH_METADATA,
  RESPONSE_PASSTHROUGH_METADATA,
  ROUTE_ARGS_METADATA,
} from '@nestjs/common/constants';
import { RouteParamtypes } from '@nestjs/common/enums/route-paramtypes.enum';
import { HttpAdapterHost } from '@nestjs/core';
import { type Observable, of, throwError } from 'rxjs';
import type { Capture, CapturedError, ReplayedResult } from '../../engine/idempotency.engine';
import { requestFingerprint } from '../../engine/idempotency.hashing';
import type { IdempotencyRejection } from '../../engine/idempotency-rejection';
import { headerKey, keyAtPath, keyFromFunction } from '../../engine/idempotency-key';
import type { ResolvedIdempotencyOptions } from '../../engine/resolved-options';
import { IDEMPOTENT_REPLAYED_HEADER, PROBLEM_CONTENT_TYPE } from '../../idempotency.constants';
import { IdempotencyKeyIssuer } from '../../idempotency-key-issuer';
import { exceptionOf } from '../../idempotency.errors';
import { describeCall } from '../call-description';
import type { CallDescription, IdempotencyContextAdapter } from '../context-adapter';
import type { IdempotentHandler } from '../idempotent-handlers';

type HttpRequest = {
  method: string;
  body?: unknown;
  query?: unknown;
  params?: unknown;
  headers: Record<string, string | string[] | undefined>;
  rawHeaders?: string[];
  raw?: { rawHeaders?: string[] };
  route?: { path?: unknown };
  routeOptions?: { url?: string };
  user?: { id?: string | number; sub?: string | number };
};

type HttpResponse = {
  statusCode: number;
  getHeaders(): Record<string, number | string | string[] | undefined>;
};

/** What the adapter derives once per handler from its route metadata. */
interface RouteFacts {
  /** Route template from metadata, for a platform that does not expose the matched one. */
  template: string;
  /** The handler writes the response itself (`@Res()` / `@Next()` without passthrough). */
  respondsItself: boolean;
}

const NEVER_PROTECTED = new Set(['GET', 'HEAD', 'OPTIONS']);
/**
 * Requests already described, so that a second pass of the same call (the interceptor registered
 * globally and with `@UseInterceptors()` too) claims once, not twice. A set rather than a property
 * on the request: adding a property to Node's request object changes its shape on every request,
 * which a profile showed costing more than the rest of `describe` on Express.
 */
const HANDLED = new WeakSet<object>();
/** What Nest's exception filter answers for an error that is not an `HttpException`. */
const INTERNAL_ERROR_BODY = { statusCode: 500, message: 'Internal server error' };

/**
 * HTTP routes, on Express and Fastify alike: the key from the `Idempotency-Key` header (or the
 * route's key function; with `key: 'issued'`, checked to be one this server issued), the endpoint
 * and principal as scope, a fingerprint of the verb, route, path parameters, body and query; the
 * status, allow-listed headers and body as the stored result; rejections as problem+json answers.
 * Headers are written through `HttpAdapterHost`.
 */
@Injectable()
export class HttpContextAdapter implements IdempotencyContextAdapter {
  readonly type = 'http';
  private readonly routes = new WeakMap<IdempotentHandler, RouteFacts>();

  constructor(
    private readonly adapterHost: HttpAdapterHost,
    private readonly issuer: IdempotencyKeyIssuer,
  ) {}

  describe(context: ExecutionContext, handler: IdempotentHandler): CallDescription | undefined {
    const request = requestOf(context);
    const method = request.method.toUpperCase();
    if (
      NEVER_PROTECTED.has(method) ||
      HANDLED.has(request) ||
      (handler.methods && !handler.methods.has(method))
    ) {
      return undefined;
    }
    // Registered globally and with @UseInterceptors() too, it must claim once, not twice.
    HANDLED.add(request);
    const { options } = handler;
    const matched = request.routeOptions?.url ?? request.route?.path;
    const route = typeof matched === 'string' ? matched : this.facts(handler).template;
    const target = `${method} ${route}`;
    return describeCall(
      context,
      options,
      this.issuer,
      {
        target,
        readKey: () => this.readKey(context, request, options),
        fingerprint: () => defaultFingerprint(request, method, route),
        scopeParts: () => this.scopeParts(context, request, options, method, route),
      },
      undefined,
    );
  }

  capture(context: ExecutionContext, handler: IdempotentHandler, value: unknown): Capture {
    const response = responseOf<HttpResponse>(context);
    const status = response.statusCode;
    if (this.facts(handler).respondsItself) {
      return { status, unreplayable: 'it writes the response itself (@Res() without passthrough)' };
    }
    if (value instanceof StreamableFile) {
      return { status, unreplayable: 'its response is a stream' };
    }
    return {
      status,
      headers: pickHeaders(response.getHeaders(), handler.options.replayHeaders),
      body: value,
    };
  }

  captureError(error: unknown): CapturedError {
    return error instanceof HttpException
      ? { status: error.getStatus(), body: error.getResponse() }
      : { status: 500, body: INTERNAL_ERROR_BODY };
  }

  replay(context: ExecutionContext, result: ReplayedResult): Observable<unknown> {
    const adapter = this.adapterHost.httpAdapter;
    const response = responseOf(context);
    const { headers } = result;
    for (const name in headers) {
      adapter.setHeader(response, name, headers[name] as string);
    }
    adapter.setHeader(response, IDEMPOTENT_REPLAYED_HEADER, 'true');
    if (result.error) {
      // Re-thrown, so the application's exception filters render it as they did the first time.
      const body = result.body as string | Record<string, unknown>;
      return throwError(() => new HttpException(body, result.status));
    }
    adapter.status(response, result.status);
    return of(result.body);
  }

  /** A problem+json answer: its Content-Type and headers (Retry-After) are set on the response. */
  reject(
    context: ExecutionContext,
    handler: IdempotentHandler,
    rejection: IdempotencyRejection,
  ): Error {
    const { headerName, mismatchStatus } = handler.options;
    const exception = exceptionOf(rejection, headerName, mismatchStatus);
    const adapter = this.adapterHost.httpAdapter;
    const response = responseOf(context);
    adapter.setHeader(response, 'Content-Type', PROBLEM_CONTENT_TYPE);
    for (const [name, value] of Object.entries(exception.headers)) {
      adapter.setHeader(response, name, value);
    }
    return exception;
  }

  /**
   * The client's key: from the route's key function, a field of the body, or the header parsed as
   * a Structured Field string or a bare token. `undefined` when absent; throws {@link InvalidKeyError} when invalid
   * or sent twice with different values.
   */
  private readKey(
    context: ExecutionContext,
    request: HttpRequest,
    options: ResolvedIdempotencyOptions,
  ): string | undefined {
    if (typeof options.key === 'function') {
      return keyFromFunction(options.key, context);
    }
    if (typeof options.key === 'object') {
      return keyAtPath(request.body, options.key.path);
    }
    return headerKey(request, options.headerName);
  }

  /** What the key is unique within, as string parts hashed into the storage key. */
  private scopeParts(
    context: ExecutionContext,
    request: HttpRequest,
    options: ResolvedIdempotencyOptions,
    method: string,
    route: string,
  ): readonly string[] {
    if (typeof options.scope === 'function') {
      return ['custom', ...options.scope(context)];
    }
    if (options.scope === 'global') {
      return ['global'];
    }
    const principal = options.principal
      ? options.principal(context)
      : (request.user?.id ?? request.user?.sub);
    const who =
      principal === undefined || principal === null ? 'anonymous' : `principal:${principal}`;
    return options.scope === 'user' ? ['user', who] : ['endpoint', method, route, who];
  }

  private facts(handler: IdempotentHandler): RouteFacts {
    let facts = this.routes.get(handler);
    if (!facts) {
      const { controller, handler: fn } = handler;
      const routeArgs: Record<string, unknown> =
        Reflect.getMetadata(ROUTE_ARGS_METADATA, controller, fn.name) ?? {};
      const passthrough =
        Reflect.getMetadata(RESPONSE_PASSTHROUGH_METADATA, controller, fn.name) === true;
      const takesResponse = Object.keys(routeArgs).some((key) => {
        const type = Number(key.split(':')[0]);
        return type === RouteParamtypes.RESPONSE || type === RouteParamtypes.NEXT;
      });
      facts = {
        template: metadataRoute(controller, fn),
        respondsItself: takesResponse && !passthrough,
      };
      this.routes.set(handler, facts);
    }
    return facts;
  }
}

/**
 * The request and response of an HTTP call: what `switchToHttp().getRequest()` and
 * `getResponse()` answer, without the closures `switchToHttp()` builds on every call.
 */
function requestOf(context: ExecutionContext): HttpRequest {
  return context.getArgByIndex<HttpRequest>(0);
}

function responseOf<T = unknown>(context: ExecutionContext): T {
  return context.getArgByIndex<T>(1);
}

function defaultFingerprint(request: HttpRequest, method: string, route: string): string {
  return requestFingerprint({
    method,
    route,
    params: request.params,
    body: request.body,
    query: request.query,
  });
}

function pickHeaders(
  headers: Record<string, number | string | string[] | undefined>,
  allowed: ReadonlySet<string>,
): Record<string, string | string[]> {
  const picked: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (value !== undefined && allowed.has(lower)) {
      picked[lower] = typeof value === 'number' ? String(value) : value;
    }
  }
  return picked;
}

function metadataRoute(controller: object, handler: object): string {
  const first = (path: unknown): string =>
    String((Array.isArray(path) ? path[0] : path) ?? '').replace(/^\/+|\/+$/g, '');
  const parts = [
    first(Reflect.getMetadata(PATH_METADATA, controller)),
    first(Reflect.getMetadata(PATH_METADATA, handler)),
  ];
  return `/${parts.filter(Boolean).join('/')}`;
}
