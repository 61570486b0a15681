import type { Attributes, Span } from '@opentelemetry/api';
import type { IdempotencyEventBase } from '../../engine/idempotency.events';
import { subscribeToIdempotencyEvents } from '../idempotency-events.subscriber';
import { loadOptionalPeer } from '../optional-peer';

/** Options of {@link registerIdempotencyTracing} and `IdempotencyTracingModule.forRoot()`. */
export interface IdempotencyTracingOptions {
  /**
   * Put the hashed storage key on the span (`idempotency.key_hash`), so the trace that stored a
   * record and the traces that replayed it can be found from one another. It is the hex SHA-256
   * of the scope and the key, never the client's key.
   * @default true
   */
  keyHash?: boolean;
}

/** Attributes set on the active span. */
export const IdempotencySpanAttribute = {
  /** `executed`, `replayed` or `rejected`. */
  Outcome: 'idempotency.outcome',
  /** Whether the answer is a replay. */
  Replayed: 'idempotency.replayed',
  /** The code of a rejection (`IDEMPOTENCY_REQUEST_IN_PROGRESS`, ...). */
  Code: 'idempotency.code',
  /** Route template, message pattern or `run()` scope. */
  Target: 'idempotency.target',
  /** `http`, `rpc`, `graphql` or `service`. */
  Context: 'idempotency.context',
  /** Class name of the store. */
  Store: 'idempotency.store',
  /** What became of the record of an executed call (`stored`, `released`, ...). */
  Record: 'idempotency.record',
  /** The hashed storage key, unless `keyHash` is `false`. */
  KeyHash: 'idempotency.key_hash',
  /** Milliseconds spent claiming (waiting included), on the outcome's event. */
  ClaimMs: 'idempotency.claim_ms',
  /** The replayed status, on the `idempotency.replayed` event. */
  Status: 'idempotency.status',
  /** When a lost lease was noticed, on the `idempotency.lease_lost` event. */
  During: 'idempotency.during',
  /** The failed store operation, on the `idempotency.store_error` event. */
  Operation: 'idempotency.operation',
} as const;

/** Events added to the active span. */
export const IdempotencySpanEvent = {
  Executed: 'idempotency.executed',
  Replayed: 'idempotency.replayed',
  Rejected: 'idempotency.rejected',
  LeaseLost: 'idempotency.lease_lost',
  StoreError: 'idempotency.store_error',
} as const;

const A = IdempotencySpanAttribute;

let registration: { refs: number; keyHash: boolean; unsubscribe: () => void } | undefined;

/**
 * Adds attributes and events to the active OpenTelemetry span (`trace.getActiveSpan()`) on each of
 * the engine's diagnostics-channel events: a listener runs synchronously in the publisher's async
 * context, so the active span is the request's (an HTTP server span, or one started around
 * `IdempotencyService.run()`). Nothing is done without an active, recording span. Resolves with a
 * function that stops it.
 *
 * The channels are process-wide: one subscription serves the process, shared by every later
 * registration (which must pass the same options), so no event is added twice.
 *
 * @throws Error naming `npm install @opentelemetry/api` when it is not installed.
 * @example
 * const stop = await registerIdempotencyTracing();
 */
export async function registerIdempotencyTracing(
  options: IdempotencyTracingOptions = {},
): Promise<() => void> {
  const { trace } = await loadOptionalPeer(
    '@opentelemetry/api',
    'nestjs-idempotency/opentelemetry',
    () => import('@opentelemetry/api'),
  );
  const keyHash = options.keyHash ?? true;
  if (registration && registration.keyHash !== keyHash) {
    throw new Error(
      `nestjs-idempotency/opentelemetry: tracing is registered already with keyHash: ${registration.keyHash}; pass the same options everywhere.`,
    );
  }
  if (!registration) {
    registration = {
      refs: 0,
      keyHash,
      unsubscribe: subscribe(() => trace.getActiveSpan(), keyHash),
    };
  }
  registration.refs++;
  const shared = registration;
  let disposed = false;
  return () => {
    if (disposed) {
      return;
    }
    disposed = true;
    if (--shared.refs === 0) {
      shared.unsubscribe();
      if (registration === shared) {
        registration = undefined;
      }
    }
  };
}

function subscribe(activeSpan: () => Span | undefined, keyHash: boolean): () => void {
  const recording = () => {
    const span = activeSpan();
    return span?.isRecording() ? span : undefined;
  };
  const base = (event: IdempotencyEventBase): Attributes => ({
    [A.Target]: event.target,
    [A.Context]: event.context,
    [A.Store]: event.store,
    ...(keyHash && event.key !== null ? { [A.KeyHash]: event.key } : {}),
  });
  return subscribeToIdempotencyEvents('IdempotencyTracing', {
    executed(event) {
      recording()
        ?.setAttributes({
          ...base(event),
          [A.Outcome]: 'executed',
          [A.Replayed]: false,
          [A.Record]: event.record,
        })
        .addEvent(IdempotencySpanEvent.Executed, {
          [A.Record]: event.record,
          [A.ClaimMs]: event.claimMs,
        });
    },
    replayed(event) {
      recording()
        ?.setAttributes({ ...base(event), [A.Outcome]: 'replayed', [A.Replayed]: true })
        .addEvent(IdempotencySpanEvent.Replayed, {
          [A.Status]: event.status,
          [A.ClaimMs]: event.claimMs,
        });
    },
    rejected(event) {
      recording()
        ?.setAttributes({
          ...base(event),
          [A.Outcome]: 'rejected',
          [A.Replayed]: false,
          [A.Code]: event.code,
        })
        .addEvent(IdempotencySpanEvent.Rejected, {
          [A.Code]: event.code,
          [A.ClaimMs]: event.claimMs,
        });
    },
    leaseLost(event) {
      recording()?.addEvent(IdempotencySpanEvent.LeaseLost, { [A.During]: event.during });
    },
    storeError(event) {
      const { error } = event;
      recording()?.addEvent(IdempotencySpanEvent.StoreError, {
        [A.Operation]: event.operation,
        'exception.type': error instanceof Error ? error.constructor.name : typeof error,
        'exception.message': error instanceof Error ? error.message : String(error),
      });
    },
  });
}
