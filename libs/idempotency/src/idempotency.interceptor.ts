import {
  type CallHandler,
  type ExecutionContext,
  Injectable,
  type NestInterceptor,
  type Type,
} from '@nestjs/common';
import { EMPTY, lastValueFrom, type Observable, of, throwError } from 'rxjs';
import type { IdempotencyContextAdapter } from './contexts/context-adapter';
import { HttpContextAdapter } from './contexts/http/http-context.adapter';
import { RpcContextAdapter } from './contexts/rpc/rpc-context.adapter';
import { type IdempotentHandler, IdempotentHandlers } from './contexts/idempotent-handlers';
import { IdempotencyEngine, type IdempotencyOutcome } from './engine/idempotency.engine';
import { channels, type IdempotencyExecutedEvent } from './engine/idempotency.events';
import type { IdempotencyRejection } from './engine/idempotency-rejection';

/** What the handler's observable gave when it completed without a value. */
const NO_RESULT = Symbol('no result');

/**
 * The global interceptor registered by `IdempotencyModule`. On handlers marked `@Idempotent()` it
 * lets the context's adapter read the call (key, scope, fingerprint), hands the call to the
 * {@link IdempotencyEngine}, and renders the outcome through the adapter: the handler's own
 * result, a replay, or a rejection. Other handlers, and contexts without an adapter, pass through.
 */
@Injectable()
export class IdempotencyInterceptor implements NestInterceptor {
  private readonly adapters: Readonly<Record<string, IdempotencyContextAdapter | undefined>>;

  constructor(
    private readonly engine: IdempotencyEngine,
    private readonly handlers: IdempotentHandlers,
    http: HttpContextAdapter,
    rpc: RpcContextAdapter,
  ) {
    this.adapters = { http, rpc };
  }

  async intercept(context: ExecutionContext, next: CallHandler): Promise<Observable<unknown>> {
    const adapter = this.adapters[context.getType()];
    const handler = adapter && this.handlers.get(context.getClass() as Type, context.getHandler());
    const call = handler ? adapter.describe(context, handler) : undefined;
    if (!handler || !call) {
      return next.handle();
    }
    if (call === 'unprotected') {
      return adapter!.unprotected
        ? adapter!.unprotected(context, handler, next.handle())
        : next.handle();
    }
    if ('rejection' in call) {
      const error = this.refuse(adapter!, context, handler, call.target, call.rejection);
      adapter!.finish?.(context, handler, { outcome: 'rejected', rejection: call.rejection });
      throw error;
    }
    let record: IdempotencyExecutedEvent['record'] | undefined;
    let outcome: IdempotencyOutcome<unknown>;
    try {
      // Awaited here, not subscribed to: the work runs to completion and settles the record even
      // if the caller goes away and Nest unsubscribes, since releasing the key while the handler
      // still runs would let a retry run it twice.
      outcome = await this.engine.process({
        key: call.key,
        fingerprint: call.fingerprint,
        target: call.target,
        options: handler.options,
        context: adapter!.type,
        work: () =>
          adapter!.collect
            ? adapter!.collect(context, next.handle())
            : lastValueFrom(next.handle(), { defaultValue: NO_RESULT }),
        capture: (value) =>
          value === NO_RESULT ? null : adapter!.capture(context, handler, value),
        captureError: (error) => adapter!.captureError(error),
        onSettled: (settled) => {
          record = settled;
        },
      });
    } catch (error) {
      adapter!.finish?.(context, handler, { outcome: 'failed', record });
      throw error;
    }
    adapter!.finish?.(
      context,
      handler,
      outcome.type === 'rejected'
        ? { outcome: 'rejected', rejection: outcome.rejection }
        : { outcome: outcome.type },
    );
    return this.render(adapter!, context, handler, outcome);
  }

  private render(
    adapter: IdempotencyContextAdapter,
    context: ExecutionContext,
    handler: IdempotentHandler,
    outcome: IdempotencyOutcome<unknown>,
  ): Observable<unknown> {
    switch (outcome.type) {
      case 'executed':
        if (adapter.emit) {
          return adapter.emit(context, outcome.value);
        }
        return outcome.value === NO_RESULT ? EMPTY : of(outcome.value);
      case 'replayed':
        return adapter.replay(context, outcome.result);
      case 'rejected':
        return throwError(() => adapter.reject(context, handler, outcome.rejection));
    }
  }

  /** A rejection of the adapter's (bad key, no key), before the engine ran: published too. */
  private refuse(
    adapter: IdempotencyContextAdapter,
    context: ExecutionContext,
    handler: IdempotentHandler,
    target: string,
    rejection: IdempotencyRejection,
  ): Error {
    if (channels.rejected.hasSubscribers) {
      channels.rejected.publish({
        key: null,
        context: adapter.type,
        target,
        store: this.engine.store.constructor.name,
        code: rejection.code,
        claimMs: 0,
      });
    }
    return adapter.reject(context, handler, rejection);
  }
}
