export {
  RedisIdempotencyStore,
  type RedisIdempotencyStoreOptions,
  RedisReplicationError,
  type RedisReplicationOptions,
} from './redis-idempotency.store';
