import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import request, { type Response } from 'supertest';
import { type AppProcess } from '../../apps/orders-api/test/orders-api.process';
import { eventually, killAllChildren } from '../utils/processes';
import { createTemporaryDatabase, REDIS_URL, type TemporaryDatabase } from '../utils/databases';
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
  type SharedStore,
  sharedStores,
} from './fault-suite';
import { recordOutcome } from './outcomes';

/**
 * Crash mid-request: instance A dies (`kill -9`) while its payment handler is inside the gateway
 * call. The client's retry on instance B gets 409 while A's lease lives, then, once it lapses,
 * runs the handler once: it takes A's abandoned payment over, so exactly one payment exists.
 */

/** The idempotency lease; renewed every third of it while a handler runs. */
const LOCK_TTL_MS = 2_000;
/**
 * How long a pending payment holds its order. Shorter than the lease, so by the time A's
 * idempotency lease lapses its payment row may be taken over (the row is not renewed).
 */
const PAYMENT_LEASE_MS = 1_000;
/** A's gateway call: far longer than the test, so A is certainly inside it when killed. */
const SLOW_GATEWAY_MS = 60_000;

afterAll(() => killAllChildren());

function crashMidRequest({ store, name: storeName, describe: describeIt }: SharedStore) {
  describeIt(`kill -9 during a payment, two instances sharing ${storeName}`, () => {
    let database: TemporaryDatabase;
    let a: AppProcess;
    let b: AppProcess;

    beforeAll(async () => {
      database = await createTemporaryDatabase('postgres', `faults_crash_${store}`);
      const env = {
        DATABASE_URL: database.url,
        IDEMPOTENCY_STORE: store,
        REDIS_URL,
        IDEMPOTENCY_LOCK_TTL: String(LOCK_TTL_MS),
        PAYMENT_LEASE: String(PAYMENT_LEASE_MS),
      };
      [a, b] = await Promise.all([
        startApp(
          { ...env, PAYMENT_GATEWAY_LATENCY_MS: String(SLOW_GATEWAY_MS) },
          `crash-${store}-A`,
        ),
        startApp({ ...env, PAYMENT_GATEWAY_LATENCY_MS: '0' }, `crash-${store}-B`),
      ]);
    }, START_MS);

    afterAll(async () => {
      await killAllChildren();
      await database?.drop();
    });

    it('answers the retry 409 while the lease lives, then runs it once: one payment, succeeded', async () => {
      const order = (
        await postOrder(b, key('crash-order'), orderFor(`c-crash-${randomUUID()}`)).expect(201)
      ).body;
      const k = key('crash');
      const lost = postPayment(a, k, order.id, order.total).then(
        (res) => `HTTP ${res.status}`,
        (error: NodeJS.ErrnoException) => error.code ?? error.message,
      );
      // The pending row exists once A's handler has reserved the order and is in the gateway.
      let pending: { id: string; status: string } | undefined;
      await eventually('A to be inside the gateway call', async () => {
        [pending] = await paymentsOf(b, order.id);
        return pending?.status === 'pending';
      });

      a.signal('SIGKILL');
      const killedAt = Date.now();
      expect(await a.exited).toEqual({ code: null, signal: 'SIGKILL' });
      expect(await lost).toBe('ECONNRESET');

      // The client retries on B, every 100 ms, until it gets something else than "in progress".
      const statuses = new StatusTally();
      const refused: { res: Response; afterMs: number }[] = [];
      let res: Response;
      for (;;) {
        res = await postPayment(b, k, order.id, order.total);
        statuses.add(res.status);
        if (!inProgress(res) || Date.now() - killedAt > 20_000) {
          break;
        }
        refused.push({ res, afterMs: Date.now() - killedAt });
        await sleep(100);
      }
      const ranAfterMs = Date.now() - killedAt;

      // While A's lease lived (it was renewed until the kill), B refused with a Retry-After.
      expect(refused.length).toBeGreaterThan(0);
      for (const { res: conflict } of refused) {
        expect(conflict.headers['content-type']).toMatch(PROBLEM);
        const retryAfter = Number(conflict.headers['retry-after']);
        expect(retryAfter).toBeGreaterThanOrEqual(1);
        expect(retryAfter).toBeLessThanOrEqual(LOCK_TTL_MS / 1000);
      }
      // Once it lapsed, the retry ran: a new execution (not a replay) that resumed A's payment.
      expect(res.status).toBe(201);
      expect(res.headers['idempotent-replayed']).toBeUndefined();
      expect(res.body).toMatchObject({ id: pending!.id, orderId: order.id, status: 'succeeded' });
      // No waiting for anything but the lease: far sooner than A's gateway call would have ended.
      expect(ranAfterMs).toBeLessThan(LOCK_TTL_MS + 5_000);

      const payments = await paymentsOf(b, order.id);
      expect(payments).toEqual([res.body]);
      expect((await request(b.url).get(`/orders/${order.id}`).expect(200)).body.status).toBe(
        'paid',
      );
      const resumed = logLines(b, new RegExp(`Resuming payment ${pending!.id}`));
      expect(resumed).toHaveLength(1);

      // Further retries replay the payment; nothing runs again.
      for (let i = 0; i < 3; i++) {
        const replay = await postPayment(b, k, order.id, order.total);
        statuses.add(replay.status);
        expect(replay.status).toBe(201);
        expect(replay.headers['idempotent-replayed']).toBe('true');
        expect(replay.body).toEqual(res.body);
      }
      expect(await paymentsOf(b, order.id)).toEqual([res.body]);
      expect(statuses.between(500, 599)).toBe(0);

      recordOutcome(`crash-${store}`, {
        fault: `Crash mid-request (kill -9), two instances sharing ${storeName}`,
        trigger: `POST /payments to instance A (gateway ${SLOW_GATEWAY_MS / 1000} s, lease ${LOCK_TTL_MS} ms, payment lease ${PAYMENT_LEASE_MS} ms); SIGKILL to A once GET /payments on B shows the payment pending; the client retries on B every 100 ms, then 3 more times`,
        measured: {
          requestsSent: 1 + statuses.total,
          retryAnswers: statuses.toString(),
          inProgressAnswers: refused.length,
          retryAfterSeconds: [...new Set(refused.map((r) => r.res.headers['retry-after']))].join(
            ', ',
          ),
          lastInProgressAfterKillMs: refused.at(-1)!.afterMs,
          ranAfterKillMs: ranAfterMs,
          handlerExecutions: '2 (A killed inside the gateway call, B once: resumed the payment)',
          paymentRows: payments.length,
          paymentStatus: payments[0].status,
          replays: 3,
          answers5xx: statuses.between(500, 599),
        },
        outcome: `the retry got 409 IDEMPOTENCY_REQUEST_IN_PROGRESS for ${refused.at(-1)!.afterMs} ms after the kill, then ran once (201, resumed A's payment ${ranAfterMs} ms after the kill); exactly 1 payment row, succeeded, order paid; later retries replayed`,
        file: 'test/faults/crash.e2e-spec.ts',
      });
    }, 60_000);
  });
}

for (const shared of await sharedStores()) {
  crashMidRequest(shared);
}
