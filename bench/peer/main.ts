/**
 * The peer's app, started by bench/run.ts as a child process: the same handler as bench/app (one
 * small database write) behind `@node-idempotency/nestjs` with its Redis adapter, on Nest 10 from
 * this folder's own node_modules.
 *
 * Environment: BENCH_PORT, BENCH_PLATFORM (express | fastify), BENCH_DATABASE_URL,
 * BENCH_REDIS_URL, BENCH_REDIS_PREFIX, BENCH_CLIENT_NAME, BENCH_TTL_MS, BENCH_STORE (peer, or
 * nest10 for the bare handler on Nest 10).
 */
import 'reflect-metadata';
import {
  Body,
  Controller,
  type ExecutionContext,
  Header,
  Injectable,
  Module,
  type NestInterceptor,
  Post,
} from '@nestjs/common';
import { Redis } from 'ioredis';
import { type Observable, of } from 'rxjs';
import { APP_INTERCEPTOR, NestFactory } from '@nestjs/core';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { Idempotent, NodeIdempotencyModule } from '@node-idempotency/nestjs';
import { type BenchOrder, echoOrder, OrdersDb } from '../common/orders-db';

const env = (name: string, fallback?: string): string => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) {
    throw new Error(`bench peer app: ${name} is required`);
  }
  return value;
};

const DATABASE_URL = env('BENCH_DATABASE_URL');

type OrderInput = { customerId?: string; amount?: number; currency?: string };

@Controller('orders')
class OrdersController {
  constructor(private readonly orders: OrdersDb) {}

  @Post()
  @Idempotent()
  create(@Body() body: OrderInput): Promise<BenchOrder> {
    return this.orders.create(body);
  }
}

/** The same handler on Nest 10 without the peer (BENCH_STORE=nest10): the peer's own baseline. */
@Controller('orders')
class BareOrdersController {
  constructor(private readonly orders: OrdersDb) {}

  @Post()
  create(@Body() body: OrderInput): Promise<BenchOrder> {
    return this.orders.create(body);
  }
}

/** BENCH_STORE=echo10: what a replay answers, with no idempotency and no database (see bench/app). */
@Controller('orders')
class EchoOrdersController {
  @Post()
  @Header('Idempotent-Replayed', 'true')
  create(@Body() body: OrderInput): BenchOrder {
    return echoOrder(body);
  }
}

/**
 * BENCH_ECHO_REDIS=1 (with the interceptor): one Redis GET on ioredis (the root's copy) first.
 */
const echoRedis =
  process.env.BENCH_STORE === 'echo10' && process.env.BENCH_ECHO_REDIS === '1'
    ? new Redis(env('BENCH_REDIS_URL'))
    : undefined;

/**
 * With BENCH_ECHO_INTERCEPTOR=1, the echo app also has a global interceptor shaped like a replay:
 * it awaits (one Redis GET on ioredis with BENCH_ECHO_REDIS=1 too), then answers
 * the same order without calling the handler. What Nest's interceptor pipeline (and a round trip)
 * cost a replay, without any idempotency logic.
 */
@Injectable()
class EchoInterceptor implements NestInterceptor {
  async intercept(context: ExecutionContext): Promise<Observable<unknown>> {
    await echoRedis?.get('nestjs-idempotency-bench:echo');
    const body = context.getArgByIndex<{ body: OrderInput }>(0).body;
    return of(echoOrder(body));
  }
}
const ECHO_INTERCEPTOR = process.env.BENCH_ECHO_INTERCEPTOR === '1';
const ECHO = process.env.BENCH_STORE === 'echo10';
const BARE = process.env.BENCH_STORE === 'nest10' || ECHO;

@Module({
  imports: BARE
    ? []
    : [
        NodeIdempotencyModule.forRootAsync({
          storage: {
            adapter: 'redis',
            options: { url: env('BENCH_REDIS_URL'), name: env('BENCH_CLIENT_NAME') },
          },
          cacheKeyPrefix: env('BENCH_REDIS_PREFIX'),
          cacheTTLMS: Number(env('BENCH_TTL_MS', String(10 * 60_000))),
          // The key is required, as it is by default in nestjs-idempotency.
          enforceIdempotency: true,
        } as Parameters<typeof NodeIdempotencyModule.forRootAsync>[0]),
      ],
  controllers: [ECHO ? EchoOrdersController : BARE ? BareOrdersController : OrdersController],
  providers: [
    { provide: OrdersDb, useFactory: () => new OrdersDb(DATABASE_URL) },
    ...(ECHO && ECHO_INTERCEPTOR ? [{ provide: APP_INTERCEPTOR, useClass: EchoInterceptor }] : []),
  ],
})
class PeerModule {}

async function bootstrap(): Promise<void> {
  const logger: ('error' | 'warn')[] = ['error', 'warn'];
  const app =
    env('BENCH_PLATFORM', 'express') === 'fastify'
      ? await NestFactory.create(PeerModule, new FastifyAdapter(), { logger })
      : await NestFactory.create(PeerModule, { logger });
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
