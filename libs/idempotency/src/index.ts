export * from './idempotency.constants';
export * from './idempotency.errors';
export { IdempotencyInterceptor } from './idempotency.interceptor';
export { IdempotencyService } from './idempotency.service';
export {
  DEFAULT_ISSUED_KEY_SCOPE,
  IdempotencyKeyIssuer,
  type IssuedIdempotencyKey,
  type IssuedKeyRejection,
  type IssuedKeyVerification,
  type IssueIdempotencyKeyOptions,
} from './idempotency-key-issuer';
export { IdempotencyModule } from './idempotency.module';
export {
  type IdempotencyModuleAsyncOptions,
  type IdempotencyModuleExtras,
  type IdempotencyModuleSyncOptions,
} from './idempotency.module-definition';
export type * from './idempotency.options';
export { Idempotent } from './idempotent.decorator';
export {
  IdempotencyEngine,
  type Capture,
  type CapturedError,
  type IdempotencyOutcome,
  type IdempotentCall,
  type ReplayedResult,
} from './engine/idempotency.engine';
export {
  IdempotencyChannel,
  type IdempotencyContextType,
  type IdempotencyEventBase,
  type IdempotencyExecutedEvent,
  type IdempotencyLeaseLostEvent,
  type IdempotencyRejectedEvent,
  type IdempotencyReplayedEvent,
  type IdempotencyStoreErrorEvent,
} from './engine/idempotency.events';
export type { IdempotencyRejection } from './engine/idempotency-rejection';
export type { ResolvedIdempotencyOptions } from './engine/resolved-options';
export { IdempotencyOptionError } from './engine/duration';
export { MAX_KEY_LENGTH, parseIdempotencyKey } from './engine/idempotency-key';
export { requestFingerprint, storageKeyOf } from './engine/idempotency.hashing';
export type {
  CallDescription,
  CallEnd,
  IdempotencyContextAdapter,
} from './contexts/context-adapter';
export {
  type IdempotencyRpcError,
  isIdempotencyRpcError,
  RPC_EXCEPTION_STATUS,
} from './contexts/rpc/rpc-context.adapter';
export type { IdempotentHandler } from './contexts/idempotent-handlers';
export * from './stores/idempotency-store';
export {
  MemoryIdempotencyStore,
  type MemoryIdempotencyStoreOptions,
} from './stores/memory/memory-idempotency.store';
