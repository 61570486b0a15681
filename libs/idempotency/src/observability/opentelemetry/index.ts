export {
  IdempotencySpanAttribute,
  IdempotencySpanEvent,
  registerIdempotencyTracing,
  type IdempotencyTracingOptions,
} from './idempotency-tracing';
export { IdempotencyTracingModule } from './idempotency-tracing.module';
export {
  IDEMPOTENCY_TRACING_OPTIONS,
  type IdempotencyTracingModuleAsyncOptions,
  type IdempotencyTracingModuleOptions,
  type IdempotencyTracingOptionsFactory,
} from './idempotency-tracing.module-definition';
