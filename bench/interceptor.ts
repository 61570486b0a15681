/**
 * `npm run bench:interceptor`: the library's own CPU per request, without HTTP, a network or a
 * database. The interceptor of a real Nest application (memory store) is called in process with a
 * stand-in ExecutionContext, in batches; each batch reports CPU time per call, and the minimum over
 * the batches is printed, since on a shared machine noise only ever adds time. Use it to compare two
 * versions of the library: run it on each, alternately, a few times.
 *
 * BENCH_PLATFORM: express | fastify (default both). BENCH_PATH: replay | execute (default both).
 * BENCH_CALLS: calls per batch (default 20000). BENCH_BATCHES (default 7).
 */
import 'reflect-metadata';
import { Body, Controller, Module, Post, type INestApplication } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import {
  Idempotent,
  IdempotencyInterceptor,
  IdempotencyModule,
  MemoryIdempotencyStore,
} from 'nestjs-idempotency';
import { lastValueFrom, type Observable, of } from 'rxjs';

@Controller('orders')
class OrdersController {
  @Post()
  @Idempotent()
  create(@Body() body: unknown) {
    return body;
  }
}

@Module({
  imports: [
    IdempotencyModule.forRoot({ store: new MemoryIdempotencyStore({ sweepIntervalMs: 0 }) }),
  ],
  controllers: [OrdersController],
})
class BenchModule {}

const CALLS = Number(process.env.BENCH_CALLS ?? 20_000);
const BATCHES = Number(process.env.BENCH_BATCHES ?? 7);
const BODY = { customerId: 'c1', amount: 10, currency: 'EUR', items: [{ sku: 'a', quantity: 1 }] };

/** A request and response pair with what the interceptor and both platform adapters touch. */
function contextFor(key: string) {
  const request = {
    method: 'POST',
    url: '/orders',
    headers: { 'idempotency-key': key, 'content-type': 'application/json' },
    rawHeaders: ['Idempotency-Key', key, 'Content-Type', 'application/json'],
    body: BODY,
    query: {},
    params: {},
    route: { path: '/orders' },
    routeOptions: { url: '/orders' },
  };
  const headers: Record<string, string> = { 'content-type': 'application/json; charset=utf-8' };
  const response = {
    statusCode: 201,
    getHeaders: () => headers,
    header(name: string, value: string) {
      headers[name.toLowerCase()] = value;
      return response;
    },
    set(name: string, value: string) {
      return response.header(name, value);
    },
    code(status: number) {
      response.statusCode = status;
      return response;
    },
    status(status: number) {
      return response.code(status);
    },
  };
  const http = { getRequest: () => request, getResponse: () => response, getNext: () => undefined };
  return {
    getType: () => 'http',
    getClass: () => OrdersController,
    getHandler: () => OrdersController.prototype.create,
    switchToHttp: () => http,
    getArgs: () => [request, response],
    getArgByIndex: (index: number) => [request, response][index],
  };
}

async function measure(app: INestApplication, path: 'replay' | 'execute'): Promise<number[]> {
  const interceptor = app.get(IdempotencyInterceptor);
  const next = { handle: () => of({ id: 'ord_1', createdAt: new Date(), ...BODY }) };
  let n = 0;
  const call = async () => {
    const key = path === 'replay' ? `replay-${n++ % 64}` : `execute-${n++}`;
    const result = await interceptor.intercept(contextFor(key) as never, next);
    return lastValueFrom(result as Observable<unknown>);
  };
  for (let i = 0; i < CALLS; i++) {
    await call();
  }
  const perCall: number[] = [];
  for (let batch = 0; batch < BATCHES; batch++) {
    const start = process.cpuUsage();
    for (let i = 0; i < CALLS; i++) {
      await call();
    }
    const used = process.cpuUsage(start);
    perCall.push((used.user + used.system) / CALLS);
  }
  return perCall.sort((a, b) => a - b);
}

async function main(): Promise<void> {
  const platforms = process.env.BENCH_PLATFORM
    ? [process.env.BENCH_PLATFORM]
    : ['express', 'fastify'];
  const paths = (process.env.BENCH_PATH ? [process.env.BENCH_PATH] : ['replay', 'execute']) as (
    'replay' | 'execute'
  )[];
  for (const platform of platforms) {
    const app =
      platform === 'fastify'
        ? await NestFactory.create(BenchModule, new FastifyAdapter(), { logger: false })
        : await NestFactory.create(BenchModule, { logger: false });
    await app.init();
    for (const path of paths) {
      const perCall = await measure(app, path);
      const median = perCall[Math.floor(perCall.length / 2)];
      console.log(
        `${platform} ${path}: ${perCall[0].toFixed(2)} µs CPU per call (min of ${BATCHES} batches of ${CALLS}; median ${median.toFixed(2)})`,
      );
    }
    await app.close();
  }
}

void main();
