/**
 * The app under test, started by bench/run.ts as a child process. One POST handler that does one
 * small database write, on Express or Fastify, with or without nestjs-idempotency.
 *
 * Environment: BENCH_PORT, BENCH_PLATFORM (express | fastify), BENCH_STORE (none | memory | redis |
 * typeorm | typeorm-tx: transactional mode, the handler's INSERT inside the record's transaction),
 * BENCH_DATABASE_URL, BENCH_REDIS_URL, BENCH_REDIS_PREFIX, BENCH_CLIENT_NAME (Redis client name, so
 * the driver can find this server's connection), BENCH_TTL_MS, BENCH_SWEEP_MS.
 */
import 'reflect-metadata';
import {
  Body,
  type CallHandler,
  Controller,
  type ExecutionContext,
  Get,
  Header,
  type DynamicModule,
  Inject,
  Injectable,
  Module,
  type NestInterceptor,
  Optional,
  Post,
  Query,
} from '@nestjs/common';
import { APP_INTERCEPTOR, NestFactory } from '@nestjs/core';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { getDataSourceToken, TypeOrmModule } from '@nestjs/typeorm';
import {
  Idempotent,
  IdempotencyModule,
  IdempotencyStore,
  MemoryIdempotencyStore,
  parseIdempotencyKey,
  requestFingerprint,
  storageKeyOf,
} from 'nestjs-idempotency';
import { RedisIdempotencyStore } from 'nestjs-idempotency/redis';
import { TypeOrmIdempotencyStore, transactionalEntityManager } from 'nestjs-idempotency/typeorm';
import { Redis } from 'ioredis';
import { randomUUID } from 'node:crypto';
import { Pool } from 'pg';
import { lastValueFrom, type Observable, of } from 'rxjs';
import type { DataSource, Logger as TypeOrmLogger } from 'typeorm';
import { type BenchOrder, echoOrder, ORDERS_TABLE, OrdersDb } from '../common/orders-db';

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
/**
 * Statements the TypeORM DataSource sent, by their first word, the handler's own INSERT left out:
 * what the store costs in round trips, counted where they leave (GET /orders/statements).
 */
const statements: Record<string, number> = {};
const countingLogger: TypeOrmLogger = {
  logQuery(query) {
    if (!query.includes(ORDERS_TABLE)) {
      const word = /^\s*(\w+)/.exec(query)?.[1]?.toUpperCase() ?? '?';
      statements[word] = (statements[word] ?? 0) + 1;
    }
  },
  logQueryError: () => undefined,
  logQuerySlow: () => undefined,
  logSchemaBuild: () => undefined,
  logMigration: () => undefined,
  log: () => undefined,
};

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
    // In transactional mode the INSERT goes through the run's transaction (same statement).
    const manager = transactionalEntityManager();
    return manager
      ? this.orders.create(body, (sql, params) => manager.query(sql, params))
      : this.orders.create(body);
  }

  /** The statements the TypeORM DataSource sent so far, by first word (see `countingLogger`). */
  @Get('statements')
  statements(): Record<string, number> {
    return { ...statements };
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

type OrderInput = { customerId?: string; amount?: number; currency?: string };
/**
 * BENCH_ECHO_REDIS=1: one Redis round trip (a GET on ioredis) before the echo's answer, as a replay
 * makes one: what answering after a round trip costs, with no idempotency.
 */
const echoRedis =
  (STORE === 'echo' || STORE === 'none') && process.env.BENCH_ECHO_REDIS === '1'
    ? new Redis(env('BENCH_REDIS_URL'))
    : undefined;
const ECHO_INTERCEPTOR = process.env.BENCH_ECHO_INTERCEPTOR === '1';
/** BENCH_ECHO_PG=1 (kind `none+ip`): the execute-shaped interceptor writes to PostgreSQL. */
const echoPg =
  STORE === 'none' && process.env.BENCH_ECHO_PG === '1'
    ? new Pool({ connectionString: DATABASE_URL, max: 4, idleTimeoutMillis: 1_000 })
    : undefined;
/** BENCH_ECHO_STORE=1 (kind `none+is`): the execute-shaped interceptor calls the Redis store. */
const echoStore =
  STORE === 'none' && process.env.BENCH_ECHO_STORE === '1' ? redisStore() : undefined;

/**
 * BENCH_STORE=echo: no idempotency and no database, the handler answers what a replay answers (the
 * same order, a Date included, and `Idempotent-Replayed: true`). A reference for profiling a replay:
 * what Nest and the platform cost to answer that response at all.
 */
@Controller('orders')
class EchoOrdersController {
  @Post()
  @Header('Idempotent-Replayed', 'true')
  create(@Body() body: OrderInput): BenchOrder | Promise<BenchOrder> {
    return echoRedis && !ECHO_INTERCEPTOR
      ? echoRedis.get('nestjs-idempotency-bench:echo').then(() => echoOrder(body))
      : echoOrder(body);
  }
}

/**
 * With BENCH_ECHO_INTERCEPTOR=1, the echo app also has a global interceptor shaped like a replay:
 * it awaits (one Redis GET on ioredis with BENCH_ECHO_REDIS=1 too, in bench/app), then answers
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

/**
 * With BENCH_STORE=none and BENCH_ECHO_INTERCEPTOR=1 (bench:cpu kinds `none+i`, `none+ir`): a
 * global interceptor shaped like an execute around the bare handler: it awaits (one Redis GET with
 * BENCH_ECHO_REDIS=1, as a claim), runs the handler, awaits again (a second GET, as a completion)
 * and answers the handler's value. What Nest's pipeline and two round trips cost an execute, with
 * no idempotency logic. With BENCH_ECHO_PG=1 (`none+ip`) the two round trips are the TypeORM
 * store's two writes on PostgreSQL (an INSERT of an in-flight row, an UPDATE completing it), sent
 * as they are with nothing computed: what those statements cost the app and the database. With
 * BENCH_ECHO_STORE=1 (`none+is`) it does what SEMANTICS requires of an execute, inline, on the
 * Redis store: what a correct execute costs without the engine, the context adapter and events.
 */
@Injectable()
class ExecuteShapedInterceptor implements NestInterceptor {
  async intercept(context: ExecutionContext, next: CallHandler): Promise<Observable<unknown>> {
    if (echoPg) {
      return this.aroundPostgres(next);
    }
    if (echoStore) {
      return this.aroundStore(context, next, echoStore);
    }
    await echoRedis?.get('nestjs-idempotency-bench:claim');
    const value = await lastValueFrom(next.handle());
    await echoRedis?.get('nestjs-idempotency-bench:complete');
    return of(value);
  }

  /**
   * What SEMANTICS requires of an execute and nothing else, written inline: the key parsed, the
   * storage key and the fingerprint hashed, the Redis store's atomic claim and fenced completion
   * called directly, a renewal timer armed and cleared, the body JSON-encoded. No engine, no
   * context adapter, no events, no body codec.
   */
  private async aroundStore(
    context: ExecutionContext,
    next: CallHandler,
    store: RedisIdempotencyStore,
  ): Promise<Observable<unknown>> {
    const request = context.getArgByIndex<{
      headers: Record<string, string | undefined>;
      body: unknown;
      params: unknown;
      query: unknown;
    }>(0);
    const route = '/orders';
    const key = storageKeyOf(
      ['endpoint', 'POST', route, 'anonymous'],
      parseIdempotencyKey(request.headers['idempotency-key'] ?? ''),
    );
    const fingerprint = requestFingerprint({
      method: 'POST',
      route,
      params: request.params,
      body: request.body,
      query: request.query,
    });
    const ownerToken = randomUUID();
    const claim = await store.claim({ key, fingerprint, ownerToken, leaseMs: 30_000 });
    if (claim.outcome !== 'acquired') {
      throw new Error('bench: the none+is reference is for new keys only');
    }
    const renewal = setInterval(() => undefined, 10_000).unref();
    const value = await lastValueFrom(next.handle());
    clearInterval(renewal);
    const { statusCode } = context.getArgByIndex<{ statusCode: number }>(1);
    await store.complete({
      key,
      ownerToken,
      response: { status: statusCode, headers: {}, body: JSON.stringify(value) },
      ttlMs: TTL_MS,
    });
    return of(value);
  }

  /** The TypeORM store's two writes on PostgreSQL, as plain prepared statements on a pool. */
  private async aroundPostgres(next: CallHandler): Promise<Observable<unknown>> {
    const key = randomUUID();
    const now = Date.now();
    await echoPg!.query({
      name: 'bench-claim',
      text: `INSERT INTO idempotency_records (storage_key, fingerprint, state, owner_token, lease_expires_at, expires_at, created_at) VALUES ($1, $1, 'in_flight', $1, $2, $2, $3) ON CONFLICT (storage_key) DO NOTHING`,
      values: [key, now + 30_000, now],
    });
    const value = await lastValueFrom(next.handle());
    await echoPg!.query({
      name: 'bench-complete',
      text: `UPDATE idempotency_records SET state = 'completed', owner_token = NULL, lease_expires_at = NULL, response_status = 201, response_headers = '{}', response_body = $2, expires_at = $3 WHERE storage_key = $1 AND owner_token = $1`,
      values: [key, JSON.stringify(value), now + TTL_MS],
    });
    return of(value);
  }
}

/** The Redis store as the benchmark configures it. */
function redisStore(): RedisIdempotencyStore {
  const url = new URL(env('BENCH_REDIS_URL'));
  // Options, not a client: the store creates its client with its documented defaults.
  return new RedisIdempotencyStore({
    client: {
      host: url.hostname,
      port: Number(url.port || 6379),
      connectionName: env('BENCH_CLIENT_NAME'),
    },
    keyPrefix: env('BENCH_REDIS_PREFIX'),
    // BENCH_REDIS_COALESCE=0 (bench:cpu kind redis+nc): every command written at once.
    coalesceWrites: process.env.BENCH_REDIS_COALESCE !== '0',
  });
}

function idempotencyModule(): DynamicModule[] {
  switch (STORE) {
    case 'none':
    case 'echo':
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
    case 'redis':
      return [IdempotencyModule.forRoot({ ttl: TTL_MS, store: redisStore() })];
    case 'typeorm':
    case 'typeorm-tx':
      return [
        TypeOrmModule.forRoot({
          type: 'postgres',
          url: DATABASE_URL,
          // The driver has run the migration; a small pool, as for the handler's own writes. In
          // transactional mode the handler's INSERT uses this pool, not its own: twice the size.
          extra: { max: STORE === 'typeorm-tx' ? 8 : 4, idleTimeoutMillis: 1_000 },
          logger: countingLogger,
        }),
        IdempotencyModule.forRootAsync({
          inject: [getDataSourceToken()],
          useFactory: (dataSource: DataSource) => ({
            ttl: TTL_MS,
            // No purge during the run, so that statement counts are the requests' own.
            store: new TypeOrmIdempotencyStore({ dataSource, purgeIntervalMs: 0 }),
            transaction: STORE === 'typeorm-tx',
          }),
        }),
      ];
    default:
      throw new Error(`bench app: unknown BENCH_STORE ${STORE}`);
  }
}

@Module({
  imports: idempotencyModule(),
  controllers: [STORE === 'echo' ? EchoOrdersController : OrdersController],
  providers: [
    { provide: OrdersDb, useFactory: () => new OrdersDb(DATABASE_URL) },
    ...(STORE === 'echo' && ECHO_INTERCEPTOR
      ? [{ provide: APP_INTERCEPTOR, useClass: EchoInterceptor }]
      : []),
    ...(STORE === 'none' && ECHO_INTERCEPTOR
      ? [{ provide: APP_INTERCEPTOR, useClass: ExecuteShapedInterceptor }]
      : []),
  ],
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
