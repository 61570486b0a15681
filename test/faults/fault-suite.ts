import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { storageKeyOf } from 'nestjs-idempotency';
import request, { type Response } from 'supertest';
import { DataSource } from 'typeorm';
import { type AppProcess, spawnOrdersApi } from '../../apps/orders-api/test/orders-api.process';
import { POSTGRES_URL, REDIS_URL } from '../utils/databases';
import { type Child, freePort } from '../utils/processes';
import { describeWithRedisServer } from '../utils/redis-server';
import { describeWithServers } from '../utils/services';

/**
 * What the fault scenarios share: the orders API as real child processes (reusing the process
 * e2e helpers), a `redis-server` of the suite's own that a test may stop, a SQL connection that
 * counts what the handlers created, and the tallies each scenario records.
 */

/** ts-node starts the app in several seconds on a small machine; three at once take longer. */
export const START_MS = 180_000;
export const PROBLEM = /^application\/problem\+json/;

/** An idempotency key no other run or suite can have sent. */
export const key = (label: string) => `fault-${label}-${randomUUID()}`;

export const orderFor = (customerId: string) => ({
  customerId,
  items: [{ sku: 'SKU-1', quantity: 2, unitPrice: 9.99 }],
});

export const emailFor = (tag: string) => ({
  to: `${tag}@example.com`,
  subject: 'Receipt',
  body: 'Thanks.',
});

export const postOrder = (app: AppProcess, k: string, body: object) =>
  request(app.url).post('/orders').set('Idempotency-Key', k).send(body);

export const postPayment = (app: AppProcess, k: string, orderId: string, amount: number) =>
  request(app.url).post('/payments').set('Idempotency-Key', k).send({ orderId, amount });

/**
 * The two effects of the sample that commit with their record in transactional mode: where each
 * lands, how a scenario sends one, and the column value that tells one key's rows from the others
 * (each scenario uses its own `tag`).
 */
export const EFFECTS = {
  orders: {
    table: 'orders',
    route: '/orders',
    column: 'customer_id',
    value: (tag: string) => tag,
    body: orderFor,
    post: (app: AppProcess, k: string, tag: string) => postOrder(app, k, orderFor(tag)),
  },
  emails: {
    table: 'outbox_messages',
    route: '/emails',
    column: 'recipient',
    value: (tag: string) => `${tag}@example.com`,
    body: emailFor,
    post: (app: AppProcess, k: string, tag: string) =>
      request(app.url).post('/emails').set('Idempotency-Key', k).send(emailFor(tag)),
  },
} as const;
export type Effect = keyof typeof EFFECTS;

/** The storage key the sample's POST route gives an anonymous client's key. */
export const storageKeyOfRoute = (route: string, k: string) =>
  storageKeyOf(['endpoint', 'POST', route, 'anonymous'], k);

/** The payments of an order, as the app lists them. */
export async function paymentsOf(
  app: AppProcess,
  orderId: string,
): Promise<{ id: string; status: string }[]> {
  const res = await request(app.url).get('/payments').query({ orderId }).expect(200);
  return res.body;
}

/** Whether an answer is the library's "the first request with this key is still running". */
export const inProgress = (res: { status: number; body?: { code?: unknown } }) =>
  res.status === 409 && res.body?.code === 'IDEMPOTENCY_REQUEST_IN_PROGRESS';

/** Counts of answers by status, written as `201: 30, 409: 12` for the outcome files. */
export class StatusTally {
  private readonly counts = new Map<number, number>();

  add(status: number): void {
    this.counts.set(status, (this.count(status) ?? 0) + 1);
  }

  count(status: number): number {
    return this.counts.get(status) ?? 0;
  }

  /** How many answers had a status from `from` to `to` inclusive. */
  between(from: number, to: number): number {
    let total = 0;
    for (const [status, count] of this.counts) {
      if (status >= from && status <= to) {
        total += count;
      }
    }
    return total;
  }

  get total(): number {
    return this.between(0, 999);
  }

  toString(): string {
    return [...this.counts]
      .sort(([a], [b]) => a - b)
      .map(([status, count]) => `${status}: ${count}`)
      .join(', ');
  }
}

/**
 * Starts the app on a free port. Other suites on the machine pick ports from the same range, so
 * one may take the port between the check and the listen: then it starts again on another.
 */
export async function startApp(env: NodeJS.ProcessEnv, name: string): Promise<AppProcess> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const app = await spawnOrdersApi({
      env: { ...env, PORT: String(port) },
      name: `${name}:${port}`,
    });
    try {
      await app.waitForOutput(/Listening on http:\/\/localhost:\d+/);
      return app;
    } catch (error) {
      if (attempt >= 3 || !/EADDRINUSE/.test(app.stderr)) {
        throw error;
      }
    }
  }
}

/** Starts `count` instances of the app side by side (in parallel) with the same environment. */
export function startInstances(
  count: number,
  env: NodeJS.ProcessEnv,
  name = 'orders-api',
): Promise<AppProcess[]> {
  return Promise.all(Array.from({ length: count }, (_, i) => startApp(env, `${name}#${i}`)));
}

/** A connection of the test's own to the app's database: one connection, so it is never shared. */
export function openSql(url: string): Promise<DataSource> {
  return new DataSource({ type: 'postgres', url, extra: { max: 1 } }).initialize();
}

/** How many lines of the app's output (stdout and stderr) match `pattern`. */
export function logLines(app: Child, pattern: RegExp): string[] {
  return `${app.stdout}\n${app.stderr}`.split('\n').filter((line) => pattern.test(line));
}

/** A shared store a multi-process scenario runs on, gated on the servers it needs. */
export interface SharedStore {
  store: 'redis' | 'typeorm';
  /** How the scenario names it: `Redis`, `PostgreSQL (TypeORM store)`. */
  name: string;
  /** `describe`, or `describe.skip` outside CI when a server is down. */
  describe: jest.Describe;
}

/** The two shared stores: Redis (the app's tables on PostgreSQL), and TypeORM on PostgreSQL. */
export async function sharedStores(): Promise<SharedStore[]> {
  const [withPostgresAndRedis, withPostgres] = await Promise.all([
    describeWithServers(['PostgreSQL', POSTGRES_URL], ['Redis', REDIS_URL]),
    describeWithServers(['PostgreSQL', POSTGRES_URL]),
  ]);
  return [
    { store: 'redis', name: 'Redis', describe: withPostgresAndRedis },
    { store: 'typeorm', name: 'PostgreSQL (TypeORM store)', describe: withPostgres },
  ];
}

/** `describe` when PostgreSQL is reachable and the suite can start a `redis-server` of its own. */
export async function describeWithPostgresAndOwnRedis(): Promise<jest.Describe> {
  const withPostgres = await describeWithServers(['PostgreSQL', POSTGRES_URL]);
  return withPostgres === describe ? describeWithRedisServer() : describe.skip;
}

/** Resends `send` while it answers 409 IDEMPOTENCY_REQUEST_IN_PROGRESS; returns every answer. */
export async function untilNotInProgress(
  send: () => Promise<Response>,
  timeoutMs = 30_000,
  intervalMs = 50,
): Promise<Response[]> {
  const deadline = Date.now() + timeoutMs;
  const answers = [await send()];
  while (inProgress(answers.at(-1)!) && Date.now() < deadline) {
    await sleep(intervalMs);
    answers.push(await send());
  }
  return answers;
}
