import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import request, { type Response } from 'supertest';
import { type AppProcess } from '../../apps/orders-api/test/orders-api.process';
import { eventually, killAllChildren } from '../utils/processes';
import { createTemporaryDatabase, type TemporaryDatabase } from '../utils/databases';
import {
  inProgress,
  key,
  logLines,
  orderFor,
  paymentsOf,
  PROBLEM,
  postOrder,
  postPayment,
  START_MS,
  startApp,
  StatusTally,
  describeWithPostgresAndOwnRedis,
} from './fault-suite';
import { OwnRedis } from '../utils/redis-server';
import { recordOutcome } from './outcomes';

/**
 * The store fails after the handler succeeded: the payment is charged, then storing its response
 * fails. The client still gets its 201, the app logs that the record could not be completed, and
 * the key is not stuck: it stays in flight for one lease, then a retry runs the handler, which
 * finds the order paid (409 ORDER_ALREADY_PAID) and never charges again.
 *
 * Two real ways to make Redis fail the completion: it refuses writes (`maxmemory` reached with
 * `noeviction`: the completion script's HSET answers OOM at once), and it stops answering writes
 * (`CLIENT PAUSE ... WRITE` longer than the store's 2 s command timeout).
 */

const LOCK_TTL_MS = 2_000;
const GATEWAY_MS = 2_000;
/** What the store's client waits for a command before failing it (RedisIdempotencyStore default). */
const COMMAND_TIMEOUT_MS = 2_000;
const COULD_NOT_COMPLETE = /Could not complete the idempotency record/;

afterAll(() => killAllChildren());

const describeWithPostgresAndRedisServer = await describeWithPostgresAndOwnRedis();

describeWithPostgresAndRedisServer('the Redis store fails after the handler succeeded', () => {
  let database: TemporaryDatabase;
  let redis: OwnRedis;
  let app: AppProcess;

  beforeAll(async () => {
    [database, redis] = await Promise.all([
      createTemporaryDatabase('postgres', 'faults_after_success'),
      OwnRedis.start(),
    ]);
    app = await startApp(
      {
        DATABASE_URL: database.url,
        IDEMPOTENCY_STORE: 'redis',
        REDIS_URL: redis.url,
        IDEMPOTENCY_LOCK_TTL: String(LOCK_TTL_MS),
        PAYMENT_GATEWAY_LATENCY_MS: String(GATEWAY_MS),
      },
      'after-success',
    );
  }, START_MS);

  afterAll(async () => {
    await app?.stop();
    await redis?.destroy();
    await database?.drop();
  });

  /** An order, and a payment of it under way: inside the gateway call, holding key `k`. */
  async function paymentInGateway() {
    const order = (
      await postOrder(app, key('after-order'), orderFor(`c-after-${randomUUID()}`)).expect(201)
    ).body;
    const k = key('after');
    const startedAt = Date.now();
    const paid = postPayment(app, k, order.id, order.total).then((res) => res);
    await eventually('the payment to be inside the gateway call', async () => {
      const [pending] = await paymentsOf(app, order.id);
      return pending?.status === 'pending';
    });
    return { order, k, startedAt, paid };
  }

  /** Retries until the answer is not "in progress"; the answers and when the last one came. */
  async function retryUntilRun(k: string, order: { id: string; total: number }) {
    const statuses = new StatusTally();
    const refused: Response[] = [];
    const deadline = Date.now() + 15_000;
    for (;;) {
      const res = await postPayment(app, k, order.id, order.total);
      statuses.add(res.status);
      // A key stuck in flight beyond its lease ends here, and fails the assertions that follow.
      if (!inProgress(res) || Date.now() > deadline) {
        return { statuses, refused, last: res };
      }
      refused.push(res);
      await sleep(100);
    }
  }

  /** After the retry ran: one payment, succeeded, the order paid, and retries never charge. */
  async function expectChargedOnce(order: { id: string }, created: Response, last: Response) {
    expect(last.status).toBe(409);
    expect(last.headers['content-type']).toMatch(PROBLEM);
    expect(last.body.code).toBe('ORDER_ALREADY_PAID');
    const payments = await paymentsOf(app, order.id);
    expect(payments).toEqual([created.body]);
    expect((await request(app.url).get(`/orders/${order.id}`).expect(200)).body.status).toBe(
      'paid',
    );
    return payments;
  }

  it('Redis refuses the write (out of memory): 201, logged, 409 for one lease, then the retry finds the order paid', async () => {
    const logged = logLines(app, COULD_NOT_COMPLETE).length;
    const { order, k, paid } = await paymentInGateway();
    await redis.admin.config('SET', 'maxmemory', '1');
    let created: Response;
    try {
      created = await paid;
    } finally {
      await redis.admin.config('SET', 'maxmemory', '0');
    }
    const answeredAt = Date.now();

    expect(created.status).toBe(201);
    expect(created.headers['idempotent-replayed']).toBeUndefined();
    expect(created.body).toMatchObject({ orderId: order.id, status: 'succeeded' });
    const lines = logLines(app, COULD_NOT_COMPLETE).slice(logged);
    expect(lines).toHaveLength(1);
    expect(`${app.stdout}\n${app.stderr}`).toMatch(/OOM command not allowed/);

    // Not stored, not stuck: in flight until the lease lapses, then the retry runs.
    const { statuses, refused, last } = await retryUntilRun(k, order);
    const ranAfterMs = Date.now() - answeredAt;
    expect(refused.length).toBeGreaterThan(0);
    for (const res of refused) {
      expect(Number(res.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    }
    expect(ranAfterMs).toBeLessThan(LOCK_TTL_MS + 3_000);
    const payments = await expectChargedOnce(order, created, last);
    expect(statuses.between(500, 599)).toBe(0);

    recordOutcome('store-fails-after-success-oom', {
      fault: 'Store fails after the handler succeeded: Redis refuses the write',
      trigger: `POST /payments (gateway ${GATEWAY_MS} ms, Redis store on a redis-server of the test's own, lease ${LOCK_TTL_MS} ms); while the handler is inside the gateway call, CONFIG SET maxmemory 1 (noeviction), so the completion script fails with OOM; maxmemory restored once the client has its answer; the client retries every 100 ms`,
      measured: {
        requestsSent: 1 + statuses.total,
        firstAnswer: created.status,
        completionFailuresLogged: lines.length,
        retryAnswers: statuses.toString(),
        inProgressAnswers: refused.length,
        retryRanAfterMs: ranAfterMs,
        finalRetryAnswer: `${last.status} ${last.body.code}`,
        handlerExecutions: '2 (the first, charged; the retry, refused ORDER_ALREADY_PAID)',
        paymentRows: payments.length,
        succeededPayments: payments.filter((p) => p.status === 'succeeded').length,
        answers5xx: statuses.between(500, 599),
      },
      outcome: `the client got 201, the failed completion was logged, the key answered 409 IDEMPOTENCY_REQUEST_IN_PROGRESS for ${ranAfterMs} ms (one lease) and then ran: 409 ORDER_ALREADY_PAID; 1 payment row, no second charge`,
      file: 'test/faults/store-fails-after-success.e2e-spec.ts',
    });
  }, 60_000);

  it('Redis stops answering writes (CLIENT PAUSE WRITE beyond the command timeout): 201 after the timeout, logged, never charged twice', async () => {
    const logged = logLines(app, COULD_NOT_COMPLETE).length;
    const { order, k, startedAt, paid } = await paymentInGateway();
    // Scripts count as writes: the completion (and the lease renewals) wait until the pause
    // ends, which is after the store's client has given up on them.
    await redis.admin.call('CLIENT', 'PAUSE', String(GATEWAY_MS + 3 * COMMAND_TIMEOUT_MS), 'WRITE');
    const pausedAt = Date.now();
    let created: Response;
    let answeredAfterMs: number;
    try {
      created = await paid;
      answeredAfterMs = Date.now() - startedAt;
    } finally {
      // No renewal got through since the pause began: the lease has lapsed one lease length
      // later. Unpausing only then makes the late completion find no record it owns, every time.
      await sleep(pausedAt + LOCK_TTL_MS + 500 - Date.now());
      await redis.admin.call('CLIENT', 'UNPAUSE');
    }

    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ orderId: order.id, status: 'succeeded' });
    // The answer waited for the command timeout, not for the pause to end.
    expect(answeredAfterMs).toBeGreaterThanOrEqual(GATEWAY_MS + COMMAND_TIMEOUT_MS - 100);
    const lines = logLines(app, COULD_NOT_COMPLETE).slice(logged);
    expect(lines).toHaveLength(1);

    // The completion Redis ran late, after the pause, found no record of its owner: the retry
    // runs the handler.
    const { statuses, refused, last } = await retryUntilRun(k, order);
    const payments = await expectChargedOnce(order, created, last);
    expect(statuses.between(500, 599)).toBe(0);

    recordOutcome('store-fails-after-success-pause', {
      fault: 'Store fails after the handler succeeded: Redis stops answering writes',
      trigger: `POST /payments (gateway ${GATEWAY_MS} ms, Redis store on a redis-server of the test's own, lease ${LOCK_TTL_MS} ms, command timeout ${COMMAND_TIMEOUT_MS} ms); while the handler is inside the gateway call, CLIENT PAUSE ${GATEWAY_MS + 3 * COMMAND_TIMEOUT_MS} WRITE, so the completion script times out; CLIENT UNPAUSE once the client has its answer; the client retries every 100 ms`,
      measured: {
        requestsSent: 1 + statuses.total,
        firstAnswer: created.status,
        firstAnsweredAfterMs: answeredAfterMs,
        completionFailuresLogged: lines.length,
        retryAnswers: statuses.toString(),
        inProgressAnswers: refused.length,
        finalRetryAnswer: `${last.status} ${last.body.code}`,
        handlerExecutions: '2 (the first, charged; the retry, refused ORDER_ALREADY_PAID)',
        paymentRows: payments.length,
        succeededPayments: payments.filter((p) => p.status === 'succeeded').length,
        answers5xx: statuses.between(500, 599),
      },
      outcome: `the client got 201 after ${answeredAfterMs} ms (gateway + command timeout), the failed completion was logged, the lease lapsed during the pause and the retry ran: 409 ORDER_ALREADY_PAID; 1 payment row, no second charge`,
      file: 'test/faults/store-fails-after-success.e2e-spec.ts',
    });
  }, 60_000);
});
