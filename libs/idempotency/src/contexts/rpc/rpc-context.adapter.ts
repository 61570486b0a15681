import {
  type ExecutionContext,
  HttpException,
  Injectable,
  Logger,
  type OnModuleInit,
} from '@nestjs/common';
import type { RpcException } from '@nestjs/microservices';
import { EMPTY, from, lastValueFrom, type Observable, tap, throwError, toArray } from 'rxjs';
import type { Capture, CapturedError, ReplayedResult } from '../../engine/idempotency.engine';
import { canonicalPattern, messageFingerprint } from '../../engine/idempotency.hashing';
import {
  InvalidKeyError,
  keyAtPath,
  keyFromFunction,
  parseIdempotencyKey,
  validateIdempotencyKey,
} from '../../engine/idempotency-key';
import {
  IdempotencyErrorCode,
  type IdempotencyRejection,
} from '../../engine/idempotency-rejection';
import type { ResolvedIdempotencyOptions } from '../../engine/resolved-options';
import { exceptionOf, type IdempotencyProblem } from '../../idempotency.errors';
import { IdempotencyKeyIssuer } from '../../idempotency-key-issuer';
import { isNotFound } from '../../observability/optional-peer';
import { describeCall } from '../call-description';
import type { CallDescription, CallEnd, IdempotencyContextAdapter } from '../context-adapter';
import type { IdempotentHandler } from '../idempotent-handlers';
import { type RpcTransport, transportOf } from './rpc-transports';

/**
 * The error object a rejected microservice call carries: the `RpcException`'s `getError()` on the
 * server, and what a `ClientProxy.send()` caller receives as its error. The problem details of the
 * HTTP answer (`status` is the HTTP-equivalent status), with `message` (Nest's RPC convention) and,
 * for a call in flight, `retryAfterMs`.
 */
export interface IdempotencyRpcError extends IdempotencyProblem {
  /** The `detail`, under the name Nest's RPC errors use. */
  message: string;
  /** With `IDEMPOTENCY_REQUEST_IN_PROGRESS`: milliseconds to wait before sending it again. */
  retryAfterMs?: number;
}

/**
 * Whether `error` (what a `ClientProxy.send()` observable errors with, or an `RpcException`'s
 * `getError()`) is the library's rejection of a microservice call.
 *
 * @example
 * catchError((error) => isIdempotencyRpcError(error) && error.retryAfterMs ? retryLater() : ...)
 */
export function isIdempotencyRpcError(error: unknown): error is IdempotencyRpcError {
  return (
    typeof error === 'object' &&
    error !== null &&
    typeof (error as { code?: unknown }).code === 'string' &&
    (error as { code: string }).code.startsWith('IDEMPOTENCY_') &&
    typeof (error as { status?: unknown }).status === 'number'
  );
}

/** The HTTP-equivalent status an `RpcException` of a handler stands for (stored by default). */
export const RPC_EXCEPTION_STATUS = 400;

/** `@nestjs/microservices` metadata keys, as the package defines them. */
const PATTERN_METADATA = 'microservices:pattern';
const PATTERN_HANDLER_METADATA = 'microservices:handler_type';
const EVENT_HANDLER = 2;

/** Marks an RPC context object with the handlers already claimed for it (one claim per pass). */
const HANDLED = Symbol('nestjs-idempotency:handled');

/** What the adapter derives once per handler from its pattern metadata. */
interface PatternFacts {
  /** The declared patterns, strings as they are, objects as canonical JSON. */
  patterns: readonly string[];
  /** `@EventPattern` (nothing is replied) rather than `@MessagePattern`. */
  event: boolean;
}

/** How the stored result of a handler's error says which error to throw again. */
type StoredError =
  { rpc: unknown } | { http: string | Record<string, unknown> } | { error: string };

/**
 * `@MessagePattern` and `@EventPattern` handlers of `@nestjs/microservices` (context type `rpc`):
 * the key from the transport (AMQP header or `messageId`, NATS header, MQTT 5 user property,
 * Redis or TCP packet metadata, Kafka header), a field of the message data or a function; the
 * pattern as scope; the pattern and the data as fingerprint; every value a message handler emits
 * as the stored reply; rejections as `RpcException`s carrying an {@link IdempotencyRpcError}; and,
 * with `acknowledge`, the RabbitMQ ack or nack once the outcome is known.
 *
 * `@nestjs/microservices` is an optional peer: it is loaded when the module starts, if installed.
 */
@Injectable()
export class RpcContextAdapter implements IdempotencyContextAdapter, OnModuleInit {
  readonly type = 'rpc';
  private readonly logger = new Logger('Idempotency');
  private readonly facts = new WeakMap<IdempotentHandler, PatternFacts>();
  /** Messages already acked or nacked: a pattern with several event handlers settles once. */
  private readonly settled = new WeakSet<object>();
  private rpcException?: new (error: string | object) => RpcException;

  constructor(private readonly issuer: IdempotencyKeyIssuer) {}

  async onModuleInit(): Promise<void> {
    try {
      const microservices = await import('@nestjs/microservices');
      this.rpcException = microservices.RpcException;
    } catch (error) {
      // Without the package there is no RPC context to serve.
      if (!isNotFound(error, '@nestjs/microservices')) {
        throw error;
      }
    }
  }

  describe(
    context: ExecutionContext,
    handler: IdempotentHandler,
  ): CallDescription | 'unprotected' | undefined {
    const rpc = context.switchToRpc();
    const ctx = rpc.getContext<Record<symbol, Set<unknown> | undefined>>();
    if (typeof ctx === 'object' && ctx !== null) {
      // Registered globally and with @UseInterceptors() too, it must claim once, not twice; several
      // event handlers of one pattern share the context and each claims for itself.
      const handled = (ctx[HANDLED] ??= new Set());
      if (handled.has(handler.handler)) {
        return undefined;
      }
      handled.add(handler.handler);
    }
    const { options } = handler;
    const transport = transportOf(ctx);
    const target = this.patternOf(handler, transport);
    const data = rpc.getData<unknown>();
    return describeCall(
      context,
      options,
      this.issuer,
      {
        target,
        readKey: () => readKey(context, transport, data, options),
        fingerprint: () => messageFingerprint(target, data),
        scopeParts: () => scopeParts(context, options, target),
      },
      'unprotected' as const,
    );
  }

  /** Every value the handler emits, in order: Nest replies each of them, and so does a replay. */
  collect(_context: ExecutionContext, output: Observable<unknown>): Promise<unknown> {
    return lastValueFrom(output.pipe(toArray()));
  }

  emit(_context: ExecutionContext, value: unknown): Observable<unknown> {
    return from(value as unknown[]);
  }

  capture(_context: ExecutionContext, handler: IdempotentHandler, value: unknown): Capture {
    return { status: 200, body: this.factsOf(handler).event ? null : value };
  }

  captureError(error: unknown): CapturedError {
    if (this.rpcException && error instanceof this.rpcException) {
      return { status: RPC_EXCEPTION_STATUS, body: { rpc: error.getError() } };
    }
    if (error instanceof HttpException) {
      return { status: error.getStatus(), body: { http: error.getResponse() } };
    }
    return {
      status: 500,
      body: { error: error instanceof Error ? error.message : String(error) },
    };
  }

  replay(context: ExecutionContext, result: ReplayedResult): Observable<unknown> {
    if (result.error) {
      return throwError(() => this.storedError(result.body as StoredError, result.status));
    }
    return Array.isArray(result.body) ? from(result.body) : EMPTY;
  }

  reject(
    _context: ExecutionContext,
    handler: IdempotentHandler,
    rejection: IdempotencyRejection,
  ): Error {
    const { headerName, mismatchStatus } = handler.options;
    const problem = exceptionOf(rejection, headerName, mismatchStatus).getResponse();
    const error: IdempotencyRpcError = {
      ...(problem as IdempotencyProblem),
      message: (problem as IdempotencyProblem).detail,
    };
    if (rejection.code === IdempotencyErrorCode.KeyMissing) {
      error.detail =
        error.message = `This message handler requires an idempotency key: a ${headerName} header (or packet metadata entry, or MQTT 5 user property), or an AMQP messageId.`;
    }
    if (rejection.code === IdempotencyErrorCode.RequestInProgress) {
      error.retryAfterMs = rejection.retryAfterMs;
    }
    return this.rpcError(error);
  }

  /**
   * With `acknowledge` on RabbitMQ: acks what is done and rejects for good what can never be
   * processed (a bad key). What may still need to run is requeued for an event, after
   * `retryAfter` so that a duplicate does not spin between the broker and the consumers while the
   * first attempt runs; a request has been answered (the requester holds the retry and got the
   * error, with `retryAfterMs` when in flight), so it is acked rather than run again unasked.
   */
  finish(context: ExecutionContext, handler: IdempotentHandler, end: CallEnd): void {
    const amqp = this.acknowledging(context, handler);
    if (!amqp) {
      return;
    }
    const retry = (delayMs: number) =>
      this.factsOf(handler).event ? amqp.settle('requeue', delayMs) : amqp.settle('ack');
    switch (end.outcome) {
      case 'executed':
      case 'replayed':
        return amqp.settle('ack');
      case 'failed':
        return end.record === 'stored' || end.record === 'unreplayable'
          ? amqp.settle('ack')
          : retry(handler.options.retryAfterMs);
      case 'rejected':
        switch (end.rejection.code) {
          case IdempotencyErrorCode.ResponseNotReplayable:
            return amqp.settle('ack');
          case IdempotencyErrorCode.RequestInProgress:
            return retry(end.rejection.retryAfterMs);
          case IdempotencyErrorCode.StoreUnavailable:
            return retry(handler.options.retryAfterMs);
          default:
            return amqp.settle('reject');
        }
    }
  }

  /** With `acknowledge`, a run without a key (`required: false`) is acked once it completes. */
  unprotected(
    context: ExecutionContext,
    handler: IdempotentHandler,
    output: Observable<unknown>,
  ): Observable<unknown> {
    const amqp = this.acknowledging(context, handler);
    return amqp
      ? output.pipe(
          tap({
            complete: () => amqp.settle('ack'),
            error: () =>
              this.factsOf(handler).event
                ? amqp.settle('requeue', handler.options.retryAfterMs)
                : amqp.settle('ack'),
          }),
        )
      : output;
  }

  /** The ack or nack of this message, when the library acknowledges it. */
  private acknowledging(
    context: ExecutionContext,
    handler: IdempotentHandler,
  ): { settle(how: 'ack' | 'requeue' | 'reject', delayMs?: number): void } | undefined {
    if (!handler.options.acknowledge) {
      return undefined;
    }
    const { amqp } = transportOf(context.switchToRpc().getContext());
    if (!amqp) {
      return undefined;
    }
    const { message, channel } = amqp;
    return {
      settle: (how, delayMs = 0) => {
        if (this.settled.has(message)) {
          return;
        }
        this.settled.add(message);
        const apply = () => {
          try {
            if (how === 'ack') {
              channel.ack(message);
            } else {
              channel.nack(message, false, how === 'requeue');
            }
          } catch (error) {
            // A closed channel: the broker requeues every unacked message of it anyway.
            this.logger.warn(`Could not ${how} a RabbitMQ message: ${String(error)}`);
          }
        };
        if (delayMs > 0) {
          setTimeout(apply, delayMs).unref();
        } else {
          apply();
        }
      },
    };
  }

  private storedError(stored: StoredError, status: number): Error {
    if ('rpc' in stored) {
      return this.rpcError(stored.rpc as string | object);
    }
    if ('http' in stored) {
      return new HttpException(stored.http, status);
    }
    return new Error(stored.error);
  }

  private rpcError(error: string | object): Error {
    if (!this.rpcException) {
      // Only reachable when the module has not initialised: say so rather than answer wrongly.
      throw new Error(
        'nestjs-idempotency: @nestjs/microservices was not loaded; IdempotencyModule must be initialised (app.init() or listen()) before microservice handlers run.',
      );
    }
    return new this.rpcException(error);
  }

  /** The pattern the handler declares (its one pattern, or the one this message came on). */
  private patternOf(handler: IdempotentHandler, transport: RpcTransport): string {
    const { patterns } = this.factsOf(handler);
    if (patterns.length === 1 || transport.pattern === undefined) {
      return patterns[0] ?? handler.name;
    }
    let concrete: unknown = transport.pattern;
    try {
      concrete = JSON.parse(transport.pattern);
    } catch {
      // A plain string pattern.
    }
    return canonicalPattern(concrete);
  }

  private factsOf(handler: IdempotentHandler): PatternFacts {
    let facts = this.facts.get(handler);
    if (!facts) {
      const declared: unknown[] = Reflect.getMetadata(PATTERN_METADATA, handler.handler) ?? [];
      facts = {
        patterns: declared.map(canonicalPattern),
        event: Reflect.getMetadata(PATTERN_HANDLER_METADATA, handler.handler) === EVENT_HANDLER,
      };
      this.facts.set(handler, facts);
    }
    return facts;
  }
}

/**
 * The message's key: from the handler's key function, a field of the data, or the transport (the
 * `headerName` entry, else the AMQP `messageId`). `undefined` when absent; throws
 * {@link InvalidKeyError} when invalid or carried twice with different values.
 */
function readKey(
  context: ExecutionContext,
  transport: RpcTransport,
  data: unknown,
  options: ResolvedIdempotencyOptions,
): string | undefined {
  if (typeof options.key === 'function') {
    return keyFromFunction(options.key, context);
  }
  if (typeof options.key === 'object') {
    return keyAtPath(data, options.key.path);
  }
  const values = transport.values(options.headerName);
  if (values.length === 0) {
    if (transport.fallback === undefined || transport.fallback === null) {
      return undefined;
    }
    if (typeof transport.fallback !== 'string') {
      throw new InvalidKeyError('The AMQP messageId must be a string.');
    }
    validateIdempotencyKey(transport.fallback);
    return transport.fallback;
  }
  const keys = values.map((value) => {
    const text = Buffer.isBuffer(value) ? value.toString('utf8') : value;
    if (typeof text !== 'string') {
      throw new InvalidKeyError(
        `The ${options.headerName} ${transport.name} header must be a string; got ${typeof text}.`,
      );
    }
    return parseIdempotencyKey(text);
  });
  if (keys.some((key) => key !== keys[0])) {
    throw new InvalidKeyError(
      `The ${options.headerName} ${transport.name} header was sent more than once with different values.`,
    );
  }
  return keys[0];
}

/** What the key is unique within: by default the pattern (and the principal, when resolved). */
function scopeParts(
  context: ExecutionContext,
  options: ResolvedIdempotencyOptions,
  pattern: string,
): readonly string[] {
  if (typeof options.scope === 'function') {
    return ['custom', ...options.scope(context)];
  }
  if (options.scope === 'global') {
    return ['global'];
  }
  const principal = options.principal?.(context);
  const who =
    principal === undefined || principal === null ? 'anonymous' : `principal:${principal}`;
  return options.scope === 'user' ? ['user', who] : ['rpc', pattern, who];
}
