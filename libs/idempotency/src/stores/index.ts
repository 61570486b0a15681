/**
 * `nestjs-idempotency/store`: what a store author needs, without Nest. The store contract
 * (`IdempotencyStore` and its types) and the memory store load no Nest package, so a custom store
 * and its contract suite (`nestjs-idempotency/testing`) run under any test runner, Jest's
 * CommonJS mode on Node 20 included, where the main entry's ESM-only `@nestjs/common` cannot load.
 * The classes are the same as the main entry's: `IdempotencyStore` stays the injection token.
 */
export * from './idempotency-store';
export {
  MemoryIdempotencyStore,
  type MemoryIdempotencyStoreOptions,
} from './memory/memory-idempotency.store';
