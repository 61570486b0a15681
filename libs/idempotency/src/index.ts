export * from './idempotency.constants';
export * from './idempotency.errors';
export { IdempotencyInterceptor } from './idempotency.interceptor';
export type { ResolvedIdempotencyOptions } from './idempotency.interceptor';
export { IdempotencyModule } from './idempotency.module';
export {
  type IdempotencyModuleAsyncOptions,
  type IdempotencyModuleExtras,
  type IdempotencyModuleSyncOptions,
} from './idempotency.module-definition';
export type * from './idempotency.options';
export * from './idempotency-store';
export { MAX_KEY_LENGTH, parseIdempotencyKey } from './idempotency-key';
export { Idempotent } from './idempotent.decorator';
export {
  MemoryIdempotencyStore,
  type MemoryIdempotencyStoreOptions,
} from './memory/memory-idempotency.store';
