/**
 * The programmatic benchmark's worker for nestjs-idempotency: `IdempotencyService.run()` in a Nest
 * application context, on the Redis store (a client of its own, named BENCH_CLIENT_NAME so that
 * bench/run.ts can count its commands). See bench/common/service-worker.ts for the protocol.
 *
 * Environment: BENCH_REDIS_URL, BENCH_REDIS_PREFIX, BENCH_CLIENT_NAME, BENCH_TTL_MS.
 */
import 'reflect-metadata';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { IdempotencyModule, IdempotencyService } from 'nestjs-idempotency';
import { RedisIdempotencyStore } from 'nestjs-idempotency/redis';
import { makeWork, serveWorker } from '../common/service-worker';

async function main(): Promise<void> {
  const url = new URL(process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379');
  @Module({
    imports: [
      IdempotencyModule.forRoot({
        ttl: Number(process.env.BENCH_TTL_MS ?? 15 * 60_000),
        store: new RedisIdempotencyStore({
          client: {
            host: url.hostname,
            port: Number(url.port || 6379),
            connectionName: process.env.BENCH_CLIENT_NAME,
          },
          keyPrefix: process.env.BENCH_REDIS_PREFIX,
        }),
      }),
    ],
  })
  class ServiceBenchModule {}

  const app = await NestFactory.createApplicationContext(ServiceBenchModule, {
    logger: ['error', 'warn'],
  });
  const service = app.get(IdempotencyService);
  const { work, executed } = makeWork();
  // No payload, so no fingerprint: the peer's Redis layer cannot validate one (see its worker).
  await serveWorker(
    (key, order) => service.run(key, () => work(order), { scope: 'orders' }),
    executed,
  );
  await app.close();
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
