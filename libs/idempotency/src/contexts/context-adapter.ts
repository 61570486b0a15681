import type { ExecutionContext } from '@nestjs/common';
import type { Observable } from 'rxjs';
import type { Capture, CapturedError, ReplayedResult } from '../engine/idempotency.engine';
import type {
  IdempotencyContextType,
  IdempotencyExecutedEvent,
} from '../engine/idempotency.events';
import type { IdempotencyRejection } from '../engine/idempotency-rejection';
import type { IdempotentHandler } from './idempotent-handlers';

/**
 * What the engine needs to know of one call, as its context adapter reads it: the hashed storage
 * key and the fingerprint, or the rejection of bad input (a missing or invalid key).
 */
export type CallDescription = {
  /** Route template, pattern or field, for events and logs. */
  target: string;
} & (
  | {
      /** The hashed storage key: scope parts and the client's key (see `storageKeyOf`). */
      key: string;
      /** Fingerprint of what the call asks for, or `null` when it is not checked. */
      fingerprint: string | null;
    }
  | { rejection: IdempotencyRejection }
);

/**
 * How a covered call ended, once its record is settled: the handler ran (`executed`), a stored
 * result was given (`replayed`), the call was refused (`rejected`), or the handler (or the engine)
 * threw (`failed`, with what became of the record when it got that far).
 */
export type CallEnd =
  | { outcome: 'executed' | 'replayed' }
  | { outcome: 'rejected'; rejection: IdempotencyRejection }
  | { outcome: 'failed'; record: IdempotencyExecutedEvent['record'] | undefined };

/**
 * Everything that differs from one entry point to another. The interceptor finds the adapter of
 * the call's context type, and the engine does the rest.
 */
export interface IdempotencyContextAdapter {
  readonly type: IdempotencyContextType;
  /**
   * Reads the call: where the key comes from, what the scope and the fingerprint cover. Answers
   * `undefined` when the handler runs untouched (a verb it does not cover, or a second pass of the
   * same call), and `'unprotected'` when it runs without protection (no key where none is
   * required: see `unprotected`).
   */
  describe(
    context: ExecutionContext,
    handler: IdempotentHandler,
  ): CallDescription | 'unprotected' | undefined;
  /** What to store of the handler's value (see {@link Capture}). */
  capture(context: ExecutionContext, handler: IdempotentHandler, value: unknown): Capture;
  /** The status and stored body an error of the handler stands for. */
  captureError(error: unknown): CapturedError;
  /** Gives the caller the stored result, as the first run gave it. */
  replay(context: ExecutionContext, result: ReplayedResult): Observable<unknown>;
  /** The error that renders a rejection natively in this context. */
  reject(
    context: ExecutionContext,
    handler: IdempotentHandler,
    rejection: IdempotencyRejection,
  ): Error;
  /**
   * Turns the handler's output into the one value the engine captures. Without it, the last value
   * the output emits (a context that replies once).
   */
  collect?(context: ExecutionContext, output: Observable<unknown>): Promise<unknown>;
  /** Gives the caller the handler's own value, as `collect` made it. Without it, that value. */
  emit?(context: ExecutionContext, value: unknown): Observable<unknown>;
  /** Called once per covered call when it has ended and its record is settled (see {@link CallEnd}). */
  finish?(context: ExecutionContext, handler: IdempotentHandler, end: CallEnd): void;
  /**
   * The output of a handler `@Idempotent()` covers but that runs unprotected this time (no key
   * where none is required); a second pass of the same call is not given here.
   */
  unprotected?(
    context: ExecutionContext,
    handler: IdempotentHandler,
    output: Observable<unknown>,
  ): Observable<unknown>;
}
