import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Response } from 'supertest';
import { type AppProcess } from '../../apps/orders-api/test/orders-api.process';
import { eventually, killAllChildren } from '../utils/processes';
import {
  createTemporaryDatabase,
  MYSQL_URL,
  REDIS_URL,
  type TemporaryDatabase,
} from '../utils/databases';
import { describeWithServers } from '../utils/services';
import { describeWithSqlite } from '../utils/sqlite';
import {
  inProgress,
  key,
  logLines,
  orderFor,
  paymentsOf,
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
 * Long handler: a payment whose gateway call lasts four lease lengths keeps its lease by renewal.
 * Duplicates sent every 250 ms meanwhile all get 409 IDEMPOTENCY_REQUEST_IN_PROGRESS; without the
 * renewal the lease would lapse after one second and a duplicate would run the handler again.
 *
 * With the TypeORM store the payment runs in transactional mode, so its transaction is open for the
 * whole gateway call while the lease is renewed: on PostgreSQL and MariaDB by statements on other
 * connections that commit on their own, on SQLite (one process, one connection) by statements that
 * join that open transaction.
 */

const LOCK_TTL_MS = 1_000;
const GATEWAY_MS = 4_000;
const DUPLICATE_EVERY_MS = 250;

afterAll(() => killAllChildren());

/** A store the scenario runs on, the app's database, and the id its outcome is recorded under. */
interface LongHandlerStore extends SharedStore {
  database: 'postgres' | 'mariadb' | 'sqlite';
  outcomeId: string;
}

function longHandler({
  store,
  name: storeName,
  describe: describeIt,
  database: kind,
  outcomeId,
}: LongHandlerStore) {
  describeIt(
    `a handler running for ${GATEWAY_MS / LOCK_TTL_MS} lease lengths on ${storeName}`,
    () => {
      let database: TemporaryDatabase | undefined;
      let sqliteDir: string | undefined;
      let app: AppProcess;

      beforeAll(async () => {
        let databaseUrl: string;
        if (kind === 'sqlite') {
          sqliteDir = mkdtempSync(join(tmpdir(), 'faults-long-'));
          databaseUrl = join(sqliteDir, 'orders.sqlite');
        } else {
          database = await createTemporaryDatabase(kind, `faults_long_${store}`);
          databaseUrl = database.url;
        }
        app = await startApp(
          {
            DATABASE_URL: databaseUrl,
            IDEMPOTENCY_STORE: store,
            REDIS_URL,
            IDEMPOTENCY_LOCK_TTL: String(LOCK_TTL_MS),
            PAYMENT_GATEWAY_LATENCY_MS: String(GATEWAY_MS),
          },
          `long-${store}-${kind}`,
        );
      }, START_MS);

      afterAll(async () => {
        await app?.stop();
        await database?.drop();
        if (sqliteDir) {
          rmSync(sqliteDir, { recursive: true, force: true });
        }
      });

      it('keeps its lease by renewal: every duplicate gets 409, the handler runs once, then replays', async () => {
        const order = (
          await postOrder(app, key('long-order'), orderFor(`c-long-${randomUUID()}`)).expect(201)
        ).body;
        const k = key('long');
        const startedAt = Date.now();
        let firstAnswered = false;
        const first = postPayment(app, k, order.id, order.total).then((res) => {
          firstAnswered = true;
          return res;
        });
        // Duplicates start once the first holds the key and is inside the gateway call.
        await eventually('the first request to be inside the gateway call', async () => {
          const [pending] = await paymentsOf(app, order.id);
          return pending?.status === 'pending';
        });
        const duplicates: { res: Response; sentAfterMs: number; answeredAfterMs: number }[] = [];
        while (!firstAnswered) {
          const sentAfterMs = Date.now() - startedAt;
          const res = await postPayment(app, k, order.id, order.total);
          duplicates.push({ res, sentAfterMs, answeredAfterMs: Date.now() - startedAt });
          await sleep(DUPLICATE_EVERY_MS);
        }
        const created = await first;
        const handlerMs = Date.now() - startedAt;

        expect(created.status).toBe(201);
        expect(created.headers['idempotent-replayed']).toBeUndefined();
        expect(created.body).toMatchObject({ orderId: order.id, status: 'succeeded' });
        // Every duplicate was refused as in progress; only one still in flight when the first
        // finished may have met the stored response, and then it is a replay of it.
        const statuses = new StatusTally();
        duplicates.forEach(({ res }, i) => {
          statuses.add(res.status);
          if (i === duplicates.length - 1 && res.status === 201) {
            expect(res.headers['idempotent-replayed']).toBe('true');
            expect(res.body).toEqual(created.body);
          } else {
            expect({ status: res.status, code: res.body.code }).toEqual({
              status: 409,
              code: 'IDEMPOTENCY_REQUEST_IN_PROGRESS',
            });
            expect(res.headers['retry-after']).toBe('1');
          }
        });
        const refused = duplicates.filter(({ res }) => inProgress(res));
        expect(refused.length).toBeGreaterThanOrEqual(8);
        // Refusals went on well past the first lease: only renewals kept the key held.
        const lastRefusedMs = Math.max(...refused.map((d) => d.answeredAfterMs));
        expect(lastRefusedMs).toBeGreaterThan(3 * LOCK_TTL_MS);

        const payments = await paymentsOf(app, order.id);
        expect(payments).toEqual([created.body]);
        expect(logLines(app, /Lease lost|Lease renewal failed|Resuming payment/)).toEqual([]);

        const replay = await postPayment(app, k, order.id, order.total);
        expect(replay.status).toBe(201);
        expect(replay.headers['idempotent-replayed']).toBe('true');
        expect(replay.body).toEqual(created.body);
        statuses.add(replay.status);

        recordOutcome(outcomeId, {
          fault: `Long handler (${GATEWAY_MS / LOCK_TTL_MS} lease lengths), ${storeName}`,
          trigger: `one instance, lease ${LOCK_TTL_MS} ms (renewed every ${Math.floor(LOCK_TTL_MS / 3)} ms), POST /payments with a ${GATEWAY_MS} ms gateway call${
            store === 'typeorm' && kind !== 'sqlite'
              ? ' inside its open transaction (transactional mode; renewals commit on other connections)'
              : kind === 'sqlite'
                ? " inside its open transaction (transactional mode; the renewals join that transaction on SQLite's one connection)"
                : ''
          }; the same request again every ${DUPLICATE_EVERY_MS} ms while it runs, then once after`,
          measured: {
            requestsSent: 1 + duplicates.length + 1,
            duplicatesWhileRunning: duplicates.length,
            duplicateAndRetryAnswers: statuses.toString(),
            inProgressAnswers: refused.length,
            lastRefusalAfterMs: lastRefusedMs,
            handlerDurationMs: handlerMs,
            leaseLengthsCovered: Number((handlerMs / LOCK_TTL_MS).toFixed(1)),
            handlerExecutions: payments.length,
            paymentRows: payments.length,
            leaseLostWarnings: 0,
            answers5xx: statuses.between(500, 599),
          },
          outcome: `the handler ran once for ${(handlerMs / 1000).toFixed(1)} s under a ${LOCK_TTL_MS} ms lease; all ${refused.length} duplicates during it got 409 IDEMPOTENCY_REQUEST_IN_PROGRESS (the last ${lastRefusedMs} ms after the start); first client 201, 1 payment row, the retry replayed`,
          file: 'test/faults/long-handler.e2e-spec.ts',
        });
      }, 60_000);
    },
  );
}

for (const shared of await sharedStores()) {
  longHandler({ ...shared, database: 'postgres', outcomeId: `long-handler-${shared.store}` });
}
longHandler({
  store: 'typeorm',
  name: 'MariaDB (TypeORM store, transactional)',
  describe: await describeWithServers(['MariaDB', MYSQL_URL]),
  database: 'mariadb',
  outcomeId: 'long-handler-typeorm-mariadb',
});
longHandler({
  store: 'typeorm',
  name: 'SQLite (TypeORM store, transactional, one process)',
  describe: describeWithSqlite(),
  database: 'sqlite',
  outcomeId: 'long-handler-typeorm-sqlite',
});
