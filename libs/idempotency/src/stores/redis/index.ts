export {
  RedisIdempotencyStore,
  type RedisIdempotencyStoreOptions,
} from './redis-idempotency.store';
