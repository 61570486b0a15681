/**
 * The app under test, started by bench/run.ts as a child process. One POST handler that does one
 * small database write, on Express or Fastify, with or without nestjs-idempotency.
 *
 * Environment: BENCH_PORT, BENCH_PLATFORM (express | fastify), BENCH_STORE (none | memory | redis |
 * typeorm), BENCH_DATABASE_URL, BENCH_REDIS_URL, BENCH_REDIS_PREFIX, BENCH_CLIENT_NAME (Redis client
 * name, so the driver can find this server's connection), BENCH_TTL_MS, BENCH_SWEEP_MS.
 */
import 'reflect-metadata';
import {
  Body,
  Controller,
  Get,
  type DynamicModule,
  Inject,
  Module,
  Optional,
  Post,
  Query,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { getDataSourceToken, TypeOrmModule } from '@nestjs/typeorm';
import {
  Idempotent,
  IdempotencyModule,
  IdempotencyStore,
  MemoryIdempotencyStore,
} from 'nestjs-idempotency';
import { RedisIdempotencyStore } from 'nestjs-idempotency/redis';
import { TypeOrmIdempotencyStore } from 'nestjs-idempotency/typeorm';
import type { DataSource } from 'typeorm';
import { type BenchOrder, OrdersDb } from '../common/orders-db';

const env = (name: string, fallback?: string): string => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) {
    throw new Error(`bench app: ${name} is required`);
  }
  return value;
};

const PLATFORM = env('BENCH_PLATFORM', 'express');
const STORE = env('BENCH_STORE', 'none');
const DATABASE_URL = env('BENCH_DATABASE_URL');
const TTL_MS = Number(env('BENCH_TTL_MS', String(10 * 60_000)));
/** Added to the memory store's clock by GET /orders/clock, so the memory run expires keys at once. */
let clockOffsetMs = 0;

@Controller('orders')
class OrdersController {
  constructor(
    private readonly orders: OrdersDb,
    @Optional() @Inject(IdempotencyStore) private readonly store?: IdempotencyStore,
  ) {}

  /** Inert without IdempotencyModule (the bare scenario): the decorator only sets metadata. */
  @Post()
  @Idempotent()
  create(
    @Body() body: { customerId?: string; amount?: number; currency?: string },
  ): Promise<BenchOrder> {
    return this.orders.create(body);
  }

  /** Moves the memory store's clock forward by `ms`: records expire as if that time had passed. */
  @Get('clock')
  advanceClock(@Query('ms') ms: string): { offsetMs: number } {
    clockOffsetMs += Number(ms);
    return { offsetMs: clockOffsetMs };
  }

  /** Memory figures after a full GC (the driver starts the memory run with --expose-gc). */
  @Get('memory')
  memory(): { rss: number; heapUsed: number; records: number | null } {
    (globalThis as { gc?: () => void }).gc?.();
    const { rss, heapUsed } = process.memoryUsage();
    const records = this.store instanceof MemoryIdempotencyStore ? this.store.size : null;
    return { rss, heapUsed, records };
  }
}

function idempotencyModule(): DynamicModule[] {
  switch (STORE) {
    case 'none':
      return [];
    case 'memory':
      return [
        IdempotencyModule.forRoot({
          ttl: TTL_MS,
          store: new MemoryIdempotencyStore({
            sweepIntervalMs: Number(env('BENCH_SWEEP_MS', '60000')),
            now: () => Date.now() + clockOffsetMs,
          }),
        }),
      ];
    case 'redis': {
      const url = new URL(env('BENCH_REDIS_URL'));
      return [
        IdempotencyModule.forRoot({
          ttl: TTL_MS,
          // Options, not a client: the store creates its client with its documented defaults.
          store: new RedisIdempotencyStore({
            client: {
              host: url.hostname,
              port: Number(url.port || 6379),
              connectionName: env('BENCH_CLIENT_NAME'),
            },
            keyPrefix: env('BENCH_REDIS_PREFIX'),
          }),
        }),
      ];
    }
    case 'typeorm':
      return [
        TypeOrmModule.forRoot({
          type: 'postgres',
          url: DATABASE_URL,
          // The driver has run the migration; a small pool, as for the handler's own writes.
          extra: { max: 4, idleTimeoutMillis: 1_000 },
          logging: false,
        }),
        IdempotencyModule.forRootAsync({
          inject: [getDataSourceToken()],
          useFactory: (dataSource: DataSource) => ({
            ttl: TTL_MS,
            // No purge during the run, so that statement counts are the requests' own.
            store: new TypeOrmIdempotencyStore({ dataSource, purgeIntervalMs: 0 }),
          }),
        }),
      ];
    default:
      throw new Error(`bench app: unknown BENCH_STORE ${STORE}`);
  }
}

@Module({
  imports: idempotencyModule(),
  controllers: [OrdersController],
  providers: [{ provide: OrdersDb, useFactory: () => new OrdersDb(DATABASE_URL) }],
})
class BenchModule {}

async function bootstrap(): Promise<void> {
  const logger: ('error' | 'warn')[] = ['error', 'warn'];
  const app =
    PLATFORM === 'fastify'
      ? await NestFactory.create(BenchModule, new FastifyAdapter(), { logger })
      : await NestFactory.create(BenchModule, { logger });
  // Exit normally on SIGTERM (not by the re-raised signal of enableShutdownHooks), so that a
  // --cpu-prof profile is written.
  process.once('SIGTERM', () => {
    void app.close().finally(() => process.exit(0));
  });
  await app.listen(Number(env('BENCH_PORT')), '127.0.0.1');
  process.stdout.write(`BENCH_READY ${process.pid}\n`);
}

bootstrap().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
