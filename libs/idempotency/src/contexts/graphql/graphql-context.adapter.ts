import { type ExecutionContext, HttpException, Injectable } from '@nestjs/common';
import { type Observable, of, throwError } from 'rxjs';
import type { Capture, CapturedError, ReplayedResult } from '../../engine/idempotency.engine';
import { fieldFingerprint } from '../../engine/idempotency.hashing';
import {
  IdempotencyErrorCode,
  type IdempotencyRejection,
} from '../../engine/idempotency-rejection';
import {
  headerKey,
  InvalidKeyError,
  keyAtPath,
  keyFromFunction,
  type RequestHeaders,
} from '../../engine/idempotency-key';
import type { ResolvedIdempotencyOptions } from '../../engine/resolved-options';
import { IDEMPOTENT_REPLAYED_HEADER } from '../../idempotency.constants';
import { exceptionOf } from '../../idempotency.errors';
import { IdempotencyKeyIssuer } from '../../idempotency-key-issuer';
import { describeCall } from '../call-description';
import type { CallDescription, IdempotencyContextAdapter } from '../context-adapter';
import type { IdempotentHandler } from '../idempotent-handlers';
import {
  IdempotencyGraphQLError,
  type IdempotencyGraphQLErrorExtensions,
} from './idempotency-graphql.error';
import { takesArgument } from './graphql-resolvers';

/** The argument a mutation may take its key in, besides the header. */
export const IDEMPOTENCY_KEY_ARGUMENT = 'idempotencyKey';

type Principal = { id?: string | number; sub?: string | number };

/** Where a response header can be set: Express's response, Fastify's reply. */
type HeaderSink = {
  setHeader?: (name: string, value: string) => unknown;
  headersSent?: boolean;
  header?: (name: string, value: string) => unknown;
  sent?: boolean;
};

/**
 * The GraphQL context as Nest's drivers build it: `req` is the HTTP request (Express with Apollo,
 * Fastify with Mercurius, which also puts its `reply` there, and the request on the reply).
 */
interface GraphqlContext {
  req?: GraphqlRequest;
  res?: HeaderSink;
  reply?: HeaderSink & { request?: GraphqlRequest };
  user?: Principal;
}

type GraphqlRequest = RequestHeaders & { user?: Principal; res?: HeaderSink };

/** What is read here of the resolver's `GraphQLResolveInfo`. */
interface FieldInfo {
  fieldName: string;
  parentType: { name: string };
  path: { key: string | number; prev?: unknown };
  operation: { operation: string };
}

/** Where a key was found. */
interface FoundKey {
  key: string | undefined;
  /** The argument path it was read from: left out of the default fingerprint. */
  path?: readonly string[];
  /** Read from the header: the operation's key, shared by its fields. */
  fromHeader: boolean;
}

/** A stored error of a mutation, as {@link GraphqlContextAdapter.captureError} keeps it. */
type StoredError =
  | { type: 'http'; response: string | Record<string, unknown>; message: string }
  | { type: 'graphql'; message: string; extensions: Record<string, unknown> }
  | { type: 'error'; message: string };

/** A stored GraphQL error, thrown again: GraphQL renders its message and extensions as before. */
class ReplayedGraphQLError extends Error {
  constructor(
    message: string,
    readonly extensions: Record<string, unknown>,
  ) {
    super(message);
  }
}

/**
 * GraphQL root mutation fields (Apollo, Mercurius, any driver of @nestjs/graphql). The key comes
 * from the `Idempotency-Key` header of the HTTP request behind the operation or the mutation's
 * `idempotencyKey` argument (or `key: { path }` in its arguments, or a function); the scope is the
 * field and the principal, plus the field's response key (alias) for a header key, which every
 * mutation of the operation shares; the fingerprint is the field and its arguments. The stored
 * result is the field's value; refusals are {@link IdempotencyGraphQLError}s with
 * `extensions.code`. Queries, subscriptions and nested fields pass through untouched.
 */
@Injectable()
export class GraphqlContextAdapter implements IdempotencyContextAdapter {
  readonly type = 'graphql';
  /**
   * Resolver calls already described (their argument list, one per call): the interceptor
   * registered globally and with `@UseInterceptors()` claims once, not twice.
   */
  private readonly described = new WeakSet<object>();

  constructor(private readonly issuer: IdempotencyKeyIssuer) {}

  describe(context: ExecutionContext, handler: IdempotentHandler): CallDescription | undefined {
    const call = context.getArgs<[unknown, unknown, GraphqlContext?, FieldInfo?]>();
    const [, args, gql, info] = call;
    if (!isRootMutation(info) || this.described.has(call)) {
      return undefined;
    }
    this.described.add(call);
    const { options } = handler;
    const target = `${info.parentType.name}.${info.fieldName}`;
    // With `key: 'fingerprint'` no key is read: the fingerprint covers every argument.
    let found: FoundKey = { key: undefined, fromHeader: false };
    return describeCall(
      context,
      options,
      this.issuer,
      {
        target,
        readKey: () => {
          found = this.readKey(context, gql, args, options);
          return found.key;
        },
        fingerprint: () => fieldFingerprint(target, without(args, found.path)),
        scopeParts: () => this.scopeParts(context, gql, info, options, target, found),
      },
      undefined,
    );
  }

  capture(_context: ExecutionContext, _handler: IdempotentHandler, value: unknown): Capture {
    return { status: 200, body: value };
  }

  /**
   * An `HttpException` stands for its status; an error carrying `extensions.code` (a
   * `GraphQLError` thrown on purpose) for `extensions.http.status`, or 400 (500 when its code is
   * `INTERNAL_SERVER_ERROR`); any other error for 500. What is kept is what GraphQL rendered of it.
   */
  captureError(error: unknown): CapturedError {
    if (error instanceof HttpException) {
      const stored: StoredError = {
        type: 'http',
        response: error.getResponse() as string | Record<string, unknown>,
        message: error.message,
      };
      return { status: error.getStatus(), body: stored };
    }
    const message = error instanceof Error ? error.message : String(error);
    const extensions = extensionsOf(error);
    if (extensions && typeof extensions.code === 'string') {
      const { http, ...rest } = extensions;
      const httpStatus = (http as { status?: unknown } | undefined)?.status;
      const status =
        typeof httpStatus === 'number'
          ? httpStatus
          : extensions.code === 'INTERNAL_SERVER_ERROR'
            ? 500
            : 400;
      // Of Apollo's `http` extension (status and headers of the response), the status is kept: the
      // replay answers with it again. Its headers (a Map) are not stored.
      const stored: StoredError = {
        type: 'graphql',
        message,
        extensions:
          typeof httpStatus === 'number' ? { ...rest, http: { status: httpStatus } } : rest,
      };
      return { status, body: stored };
    }
    const stored: StoredError = { type: 'error', message };
    return { status: 500, body: stored };
  }

  replay(context: ExecutionContext, result: ReplayedResult): Observable<unknown> {
    markReplayed(context.getArgByIndex<GraphqlContext | undefined>(2));
    if (result.error) {
      return throwError(() => storedError(result.body as StoredError, result.status));
    }
    return of(result.body);
  }

  reject(
    _context: ExecutionContext,
    handler: IdempotentHandler,
    rejection: IdempotencyRejection,
  ): Error {
    const { headerName, mismatchStatus } = handler.options;
    const exception = exceptionOf(rejection, headerName, mismatchStatus);
    const extensions: IdempotencyGraphQLErrorExtensions = {
      code: rejection.code,
      status: exception.getStatus(),
    };
    if (rejection.code === IdempotencyErrorCode.RequestInProgress) {
      extensions.retryAfterMs = rejection.retryAfterMs;
    } else if (rejection.code === IdempotencyErrorCode.KeyExpired) {
      extensions.expiredAt = rejection.expiredAt.toISOString();
    }
    const message =
      rejection.code === IdempotencyErrorCode.KeyMissing
        ? missingKeyMessage(handler)
        : (exception.getResponse() as { detail: string }).detail;
    return new IdempotencyGraphQLError(
      message,
      extensions,
      rejection.code === IdempotencyErrorCode.StoreUnavailable ? rejection.cause : undefined,
    );
  }

  /**
   * The client's key: from the key function, `key.path` in the arguments, or (by default) the
   * header and the `idempotencyKey` argument, which must agree when both are sent.
   */
  private readKey(
    context: ExecutionContext,
    gql: GraphqlContext | undefined,
    args: unknown,
    options: ResolvedIdempotencyOptions,
  ): FoundKey {
    if (typeof options.key === 'function') {
      return { key: keyFromFunction(options.key, context), fromHeader: false };
    }
    if (typeof options.key === 'object') {
      return { key: keyAtPath(args, options.key.path), path: options.key.path, fromHeader: false };
    }
    const path = [IDEMPOTENCY_KEY_ARGUMENT];
    const argument = keyAtPath(args, path);
    const request = requestOf(gql);
    const header = request?.headers ? headerKey(request, options.headerName) : undefined;
    if (argument !== undefined && header !== undefined && argument !== header) {
      throw new InvalidKeyError(
        `The ${options.headerName} header and the ${IDEMPOTENCY_KEY_ARGUMENT} argument hold different keys; send the key once, or the same key in both.`,
      );
    }
    return { key: argument ?? header, path, fromHeader: argument === undefined };
  }

  /**
   * What the key is unique within. A header key is the operation's: each field it covers keeps
   * its own record, told apart by its response key (its alias, or its name).
   */
  private scopeParts(
    context: ExecutionContext,
    gql: GraphqlContext | undefined,
    info: FieldInfo,
    options: ResolvedIdempotencyOptions,
    target: string,
    found: FoundKey,
  ): readonly string[] {
    const field = found.fromHeader ? [`response:${String(info.path.key)}`] : [];
    if (typeof options.scope === 'function') {
      return ['custom', ...options.scope(context), ...field];
    }
    if (options.scope === 'global') {
      return ['global', ...field];
    }
    const user = requestOf(gql)?.user ?? gql?.user;
    const principal = options.principal ? options.principal(context) : (user?.id ?? user?.sub);
    const who =
      principal === undefined || principal === null ? 'anonymous' : `principal:${principal}`;
    return options.scope === 'user'
      ? ['user', who, ...field]
      : ['endpoint', 'GRAPHQL', target, who, ...field];
  }
}

/** The HTTP request behind the operation: `req`, or the request of Mercurius's `reply`. */
function requestOf(gql: GraphqlContext | undefined): GraphqlRequest | undefined {
  return gql?.req ?? gql?.reply?.request;
}

/** A root field of a mutation operation: never a query, a subscription or a nested field. */
function isRootMutation(info: FieldInfo | undefined): info is FieldInfo {
  return (
    typeof info === 'object' &&
    info !== null &&
    info.operation?.operation === 'mutation' &&
    info.path !== undefined &&
    info.path.prev === undefined
  );
}

/** `args` without the field at `path` (the key, which is not what the mutation asks for). */
function without(args: unknown, path: readonly string[] | undefined): unknown {
  if (!path || path.length === 0 || typeof args !== 'object' || args === null) {
    return args;
  }
  const [head, ...rest] = path;
  if (!Object.hasOwn(args, head)) {
    return args;
  }
  const copy: Record<string, unknown> = { ...(args as Record<string, unknown>) };
  if (rest.length === 0) {
    delete copy[head];
  } else {
    copy[head] = without(copy[head], rest);
  }
  return copy;
}

function extensionsOf(error: unknown): Record<string, unknown> | undefined {
  const extensions =
    typeof error === 'object' && error !== null
      ? (error as { extensions?: unknown }).extensions
      : undefined;
  return typeof extensions === 'object' && extensions !== null
    ? (extensions as Record<string, unknown>)
    : undefined;
}

/** The error a stored one is thrown again as, rendered by GraphQL as the first one was. */
function storedError(stored: StoredError, status: number): Error {
  switch (stored?.type) {
    case 'http': {
      const exception = new HttpException(stored.response, status);
      exception.message = stored.message;
      return exception;
    }
    case 'graphql':
      return new ReplayedGraphQLError(stored.message, stored.extensions);
    default:
      return new Error(stored?.message ?? 'Internal server error');
  }
}

/** `Idempotent-Replayed: true` on the HTTP response behind the operation, when it is reachable. */
function markReplayed(gql: GraphqlContext | undefined): void {
  const reply = gql?.reply;
  if (typeof reply?.header === 'function') {
    if (!reply.sent) {
      reply.header(IDEMPOTENT_REPLAYED_HEADER, 'true');
    }
    return;
  }
  const response = gql?.res ?? requestOf(gql)?.res;
  if (typeof response?.setHeader === 'function' && !response.headersSent) {
    response.setHeader(IDEMPOTENT_REPLAYED_HEADER, 'true');
  }
}

function missingKeyMessage({ options, controller, handler }: IdempotentHandler): string {
  if (typeof options.key === 'object') {
    return `This mutation requires an idempotency key in its argument ${options.key.path.join('.')}.`;
  }
  if (options.key === 'header') {
    return takesArgument(controller, handler.name, IDEMPOTENCY_KEY_ARGUMENT)
      ? `This mutation requires an idempotency key: the ${options.headerName} header or the ${IDEMPOTENCY_KEY_ARGUMENT} argument.`
      : `This mutation requires an idempotency key in the ${options.headerName} header.`;
  }
  return 'This mutation requires an idempotency key.';
}
