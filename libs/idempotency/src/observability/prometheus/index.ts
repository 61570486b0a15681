export {
  DEFAULT_STORE_DURATION_BUCKETS,
  IdempotencyMetricName,
  registerIdempotencyMetrics,
  type IdempotencyMetricsOptions,
  type IdempotencyMetricsRegistry,
} from './idempotency-metrics';
export { IdempotencyPrometheusModule } from './idempotency-prometheus.module';
export {
  IDEMPOTENCY_PROMETHEUS_OPTIONS,
  type IdempotencyMetricsOptionsFactory,
  type IdempotencyPrometheusModuleAsyncOptions,
  type IdempotencyPrometheusModuleOptions,
} from './idempotency-prometheus.module-definition';
