import type { ExecutionContext } from '@nestjs/common';
import type { Observable } from 'rxjs';
import type { Capture, CapturedError, ReplayedResult } from '../engine/idempotency.engine';
import type { IdempotencyContextType } from '../engine/idempotency.events';
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
 * Everything that differs from one entry point to another. The interceptor finds the adapter of
 * the call's context type, and the engine does the rest.
 */
export interface IdempotencyContextAdapter {
  readonly type: IdempotencyContextType;
  /**
   * Reads the call: where the key comes from, what the scope and the fingerprint cover. Answers
   * `undefined` when the handler runs untouched (a verb it does not cover, no key where none is
   * required, or a second pass of the same call).
   */
  describe(context: ExecutionContext, handler: IdempotentHandler): CallDescription | undefined;
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
}
