import { type IdempotencyStore, MemoryIdempotencyStore } from 'nestjs-idempotency';
import { RedisIdempotencyStore } from 'nestjs-idempotency/redis';
import { TypeOrmIdempotencyStore } from 'nestjs-idempotency/typeorm';
import type { DataSource } from 'typeorm';
import type { OrdersApiConfig } from '../config/orders-api.config';

/**
 * The idempotency store chosen by `IDEMPOTENCY_STORE`: the app's own database through TypeORM
 * (the default), Redis, or memory (one process only).
 */
export function createIdempotencyStore(
  config: OrdersApiConfig,
  dataSource: DataSource,
): IdempotencyStore {
  switch (config.idempotencyStore) {
    case 'redis':
      return new RedisIdempotencyStore({ client: config.redisUrl });
    case 'memory':
      return new MemoryIdempotencyStore();
    case 'typeorm':
      return new TypeOrmIdempotencyStore({ dataSource });
  }
}
