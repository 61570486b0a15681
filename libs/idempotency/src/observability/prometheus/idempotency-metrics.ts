import type {
  Counter,
  Histogram,
  OpenMetricsContentType,
  PrometheusContentType,
  Registry,
} from 'prom-client';
import type { IdempotencyEventBase } from '../../engine/idempotency.events';
import { IdempotencyErrorCode } from '../../engine/idempotency-rejection';
import { subscribeToIdempotencyEvents } from '../idempotency-events.subscriber';
import { loadOptionalPeer } from '../optional-peer';

/** A prom-client registry, in either exposition format. */
export type IdempotencyMetricsRegistry =
  Registry<PrometheusContentType> | Registry<OpenMetricsContentType>;

/** Options of {@link registerIdempotencyMetrics} and `IdempotencyPrometheusModule.forRoot()`. */
export interface IdempotencyMetricsOptions {
  /**
   * The registry the metrics are registered in.
   * @default prom-client's default registry (`register`)
   */
  registry?: IdempotencyMetricsRegistry;
  /**
   * Prepended to every metric name, as prom-client's `collectDefaultMetrics({ prefix })` does.
   * @default ''
   * @example 'orders_' // orders_idempotency_requests_total
   */
  prefix?: string;
  /**
   * Upper bounds, in seconds, of the buckets of `idempotency_store_duration_seconds`.
   * @default DEFAULT_STORE_DURATION_BUCKETS
   */
  buckets?: readonly number[];
}

/** Default buckets of `idempotency_store_duration_seconds`, in seconds: 0.5 ms to 5 s. */
export const DEFAULT_STORE_DURATION_BUCKETS: readonly number[] = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
];

/** Names of the metrics, before the `prefix`. */
export const IdempotencyMetricName = {
  /** Counter of calls decided, by `outcome` (`executed`, `replayed`, `rejected`) and `code`. */
  Requests: 'idempotency_requests_total',
  /** Counter of leases found taken over, by `during` (`renewal`, `completion`, `release`). */
  LeaseLost: 'idempotency_lease_lost_total',
  /** Counter of failed store operations, by `operation`. */
  StoreErrors: 'idempotency_store_errors_total',
  /** Histogram of store latency in seconds, by `operation` (`claim`, `settle`). */
  StoreDuration: 'idempotency_store_duration_seconds',
} as const;

/** Labels every metric has. Never the key: it is unbounded, and it is the client's. */
const COMMON = ['target', 'context', 'store'] as const;

/** Rejections decided on the store's answer to the claim, so their `claimMs` is the claim's. */
const ANSWERED_BY_CLAIM = new Set<string>([
  IdempotencyErrorCode.KeyReused,
  IdempotencyErrorCode.RequestInProgress,
  IdempotencyErrorCode.ResponseNotReplayable,
]);

interface Metrics {
  requests: Counter<'outcome' | 'code' | (typeof COMMON)[number]>;
  leaseLost: Counter<'during' | (typeof COMMON)[number]>;
  storeErrors: Counter<'operation' | (typeof COMMON)[number]>;
  storeDuration: Histogram<'operation' | (typeof COMMON)[number]>;
}

/** One subscription per registry and prefix, shared by every registration of that pair. */
interface Registration {
  metrics: Metrics;
  buckets: string;
  refs: number;
  unsubscribe?: () => void;
}

const registrations = new WeakMap<IdempotencyMetricsRegistry, Map<string, Registration>>();

/**
 * Counts the engine's diagnostics-channel events into prom-client metrics (see
 * {@link IdempotencyMetricName}), labelled by `target` (route template, message pattern or
 * `run()` scope), `context` and `store`, never by key. Resolves with a function that stops
 * counting; the metrics stay in the registry with their values.
 *
 * The channels are process-wide: the metrics count every app of the process. Registering the same
 * registry and prefix again (a second app, a second module) shares one subscription, so nothing is
 * counted twice; counting stops when every registration has been disposed. A later registration
 * reuses the metrics already in the registry.
 *
 * @throws Error naming `npm install prom-client` when prom-client is not installed; an error
 * when the registry holds a metric of the same name not registered here, or when the same registry
 * and prefix were registered with other buckets.
 * @example
 * const registry = new Registry();
 * const stop = await registerIdempotencyMetrics({ registry });
 * // ... await registry.metrics()
 * stop();
 */
export async function registerIdempotencyMetrics(
  options: IdempotencyMetricsOptions = {},
): Promise<() => void> {
  const prom = await loadOptionalPeer(
    'prom-client',
    'nestjs-idempotency/prometheus',
    () => import('prom-client'),
  );
  const registry = options.registry ?? prom.register;
  const prefix = options.prefix ?? '';
  const buckets = [...(options.buckets ?? DEFAULT_STORE_DURATION_BUCKETS)];
  let byPrefix = registrations.get(registry);
  if (!byPrefix) {
    byPrefix = new Map();
    registrations.set(registry, byPrefix);
  }
  const bucketList = String(buckets);
  let registration = byPrefix.get(prefix);
  if (
    registration &&
    registration.buckets !== bucketList &&
    registry.getSingleMetric(prefix + IdempotencyMetricName.StoreDuration) ===
      registration.metrics.storeDuration
  ) {
    throw new Error(
      `nestjs-idempotency/prometheus: ${prefix}${IdempotencyMetricName.StoreDuration} is registered already with the buckets [${registration.buckets}]; pass the same buckets, or another prefix or registry.`,
    );
  }
  if (!registration || registration.refs === 0) {
    // Reuses the metrics of an earlier registration still in the registry (it may have been
    // cleared since), so their values carry on.
    registration = {
      metrics: createMetrics(prom, registry, prefix, buckets, registration?.metrics),
      buckets: bucketList,
      refs: 0,
    };
    byPrefix.set(prefix, registration);
  }
  if (registration.refs++ === 0) {
    registration.unsubscribe = subscribe(registration.metrics);
  }
  const shared = registration;
  let disposed = false;
  return () => {
    if (disposed) {
      return;
    }
    disposed = true;
    if (--shared.refs === 0) {
      shared.unsubscribe?.();
      shared.unsubscribe = undefined;
    }
  };
}

type PromClient = typeof import('prom-client');

/** Creates the metrics, or takes those of `previous` that are still in the registry. */
function createMetrics(
  prom: PromClient,
  registry: IdempotencyMetricsRegistry,
  prefix: string,
  buckets: number[],
  previous?: Metrics,
): Metrics {
  const registers = [registry];
  const mine: Record<string, object | undefined> = {
    [IdempotencyMetricName.Requests]: previous?.requests,
    [IdempotencyMetricName.LeaseLost]: previous?.leaseLost,
    [IdempotencyMetricName.StoreErrors]: previous?.storeErrors,
    [IdempotencyMetricName.StoreDuration]: previous?.storeDuration,
  };
  // Checked before anything is created, so a conflict leaves the registry as it was.
  for (const [name, metric] of Object.entries(mine)) {
    const existing = registry.getSingleMetric(prefix + name);
    if (existing !== undefined && existing !== metric) {
      throw new Error(
        `nestjs-idempotency/prometheus: the registry already has a metric named ${prefix + name}, not registered by registerIdempotencyMetrics(); pass another prefix or registry.`,
      );
    }
  }
  const take = <M extends object>(name: string, kept: M | undefined, create: () => M): M =>
    kept !== undefined && registry.getSingleMetric(prefix + name) === kept ? kept : create();
  return {
    requests: take(
      IdempotencyMetricName.Requests,
      previous?.requests,
      () =>
        new prom.Counter({
          name: prefix + IdempotencyMetricName.Requests,
          help: 'Idempotent calls decided, by outcome (executed, replayed, rejected) and, for rejections, code.',
          labelNames: ['outcome', 'code', ...COMMON],
          registers,
        }),
    ),
    leaseLost: take(
      IdempotencyMetricName.LeaseLost,
      previous?.leaseLost,
      () =>
        new prom.Counter({
          name: prefix + IdempotencyMetricName.LeaseLost,
          help: 'Leases found taken over by another holder, by when it was noticed (renewal, completion, release).',
          labelNames: ['during', ...COMMON],
          registers,
        }),
    ),
    storeErrors: take(
      IdempotencyMetricName.StoreErrors,
      previous?.storeErrors,
      () =>
        new prom.Counter({
          name: prefix + IdempotencyMetricName.StoreErrors,
          help: 'Store operations that failed or timed out, by operation (claim, complete, release, renew, transaction).',
          labelNames: ['operation', ...COMMON],
          registers,
        }),
    ),
    storeDuration: take(
      IdempotencyMetricName.StoreDuration,
      previous?.storeDuration,
      () =>
        new prom.Histogram({
          name: prefix + IdempotencyMetricName.StoreDuration,
          help: 'Store latency in seconds, by operation: claim (waiting included) and settle (complete or release).',
          labelNames: ['operation', ...COMMON],
          buckets,
          registers,
        }),
    ),
  };
}

const common = (event: IdempotencyEventBase) => ({
  target: event.target,
  context: event.context,
  store: event.store ?? '',
});

const seconds = (ms: number) => ms / 1000;

function subscribe({ requests, leaseLost, storeErrors, storeDuration }: Metrics): () => void {
  return subscribeToIdempotencyEvents('IdempotencyMetrics', {
    executed(event) {
      const labels = common(event);
      requests.inc({ outcome: 'executed', ...labels });
      if (event.record === 'unprotected') {
        // The claim failed: observed from its store-error event.
        return;
      }
      storeDuration.observe({ operation: 'claim', ...labels }, seconds(event.claimMs));
      // 0 in transactional mode, where the completion is a statement of the transaction; and a
      // failed write is observed from its store-error event.
      if (event.record !== 'store-failed' && event.settleMs > 0) {
        storeDuration.observe({ operation: 'settle', ...labels }, seconds(event.settleMs));
      }
    },
    replayed(event) {
      const labels = common(event);
      requests.inc({ outcome: 'replayed', ...labels });
      storeDuration.observe({ operation: 'claim', ...labels }, seconds(event.claimMs));
    },
    rejected(event) {
      const labels = common(event);
      requests.inc({ outcome: 'rejected', code: event.code, ...labels });
      if (event.key !== null && ANSWERED_BY_CLAIM.has(event.code) && event.claimMs > 0) {
        storeDuration.observe({ operation: 'claim', ...labels }, seconds(event.claimMs));
      }
    },
    leaseLost(event) {
      leaseLost.inc({ during: event.during, ...common(event) });
    },
    storeError(event) {
      const labels = common(event);
      storeErrors.inc({ operation: event.operation, ...labels });
      const operation =
        event.operation === 'claim'
          ? 'claim'
          : event.operation === 'complete' || event.operation === 'release'
            ? 'settle'
            : undefined;
      if (operation) {
        storeDuration.observe({ operation, ...labels }, seconds(event.durationMs));
      }
    },
  });
}
