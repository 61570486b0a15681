import { randomUUID } from 'node:crypto';
import request, { type Response } from 'supertest';
import type { DataSource } from 'typeorm';
import { type AppProcess } from '../../apps/orders-api/test/orders-api.process';
import { killAllChildren } from '../utils/processes';
import { createTemporaryDatabase, REDIS_URL, type TemporaryDatabase } from '../utils/databases';
import {
  inProgress,
  key,
  openSql,
  orderFor,
  postOrder,
  START_MS,
  startInstances,
  StatusTally,
  untilNotInProgress,
  type SharedStore,
  sharedStores,
} from './fault-suite';
import { recordOutcome } from './outcomes';

/**
 * Many instances: three processes of the sample app share one store (Redis, then PostgreSQL
 * through the TypeORM store) and one database. 300 POST /orders with 30 keys, all at once, spread
 * round-robin over the three: exactly one order per key, and every answer for a key names it.
 */

const INSTANCES = 3;
const KEYS = 30;
const PER_KEY = 10;
const REQUESTS = KEYS * PER_KEY;

afterAll(() => killAllChildren());

interface Answer {
  status: number;
  id?: string;
  replayed: boolean;
}

function manyInstances({ store, name: storeName, describe: describeIt }: SharedStore) {
  describeIt(`three orders API processes sharing ${storeName}`, () => {
    let database: TemporaryDatabase;
    let sql: DataSource;
    let apps: AppProcess[] = [];

    beforeAll(async () => {
      database = await createTemporaryDatabase('postgres', `faults_many_${store}`);
      apps = await startInstances(
        INSTANCES,
        { DATABASE_URL: database.url, IDEMPOTENCY_STORE: store, REDIS_URL },
        `many-${store}`,
      );
      sql = await openSql(database.url);
    }, START_MS);

    afterAll(async () => {
      await sql?.destroy();
      await Promise.all(apps.map((app) => app.stop()));
      await database?.drop();
    });

    it(`creates exactly ${KEYS} orders from ${REQUESTS} concurrent requests with ${KEYS} keys`, async () => {
      const keys = Array.from({ length: KEYS }, (_, i) => ({
        k: key('many'),
        customerId: `c-many-${i}-${randomUUID()}`,
      }));
      const firstAnswers = new StatusTally();
      const allAnswers = new StatusTally();
      const answers = new Map<string, Answer[]>(keys.map(({ k }) => [k, []]));
      let unexpected: Response | undefined;

      // Request i carries key i % 30 to instance floor(i / 30) % 3: each key reaches every
      // instance (4, 3 and 3 times), and every instance gets 100 requests.
      const send = async (i: number) => {
        const { k, customerId } = keys[i % KEYS];
        const app = apps[Math.floor(i / KEYS) % INSTANCES];
        const tries = await untilNotInProgress(() => postOrder(app, k, orderFor(customerId)));
        firstAnswers.add(tries[0].status);
        for (const res of tries) {
          allAnswers.add(res.status);
          if (res.status !== 201 && !inProgress(res)) {
            unexpected ??= res;
          }
        }
        const last = tries.at(-1)!;
        answers.get(k)!.push({
          status: last.status,
          id: last.body?.id,
          replayed: last.headers['idempotent-replayed'] === 'true',
        });
      };
      const startedAt = Date.now();
      await Promise.all(Array.from({ length: REQUESTS }, (_, i) => send(i)));
      const durationMs = Date.now() - startedAt;

      expect(unexpected && { status: unexpected.status, body: unexpected.body }).toBeUndefined();
      expect(allAnswers.between(500, 599)).toBe(0);
      const rows: { id: string; customer_id: string }[] = await sql.query(
        'SELECT id, customer_id FROM orders',
      );
      expect(rows).toHaveLength(KEYS);
      for (const { k, customerId } of keys) {
        const list = answers.get(k)!;
        expect(list).toHaveLength(PER_KEY);
        expect(list.every((answer) => answer.status === 201)).toBe(true);
        // One answer ran the handler; the nine others replayed its response.
        expect(list.filter((answer) => !answer.replayed)).toHaveLength(1);
        const ids = new Set(list.map((answer) => answer.id));
        expect(ids.size).toBe(1);
        expect(rows.filter((row) => row.customer_id === customerId)).toEqual([
          { id: [...ids][0], customer_id: customerId },
        ]);
      }
      // Every instance sees the same 30 orders.
      for (const app of apps) {
        const list = await request(app.url).get('/orders').expect(200);
        expect(list.body).toHaveLength(KEYS);
      }
      let records = 'not counted (Redis keys are hashed under a shared prefix)';
      if (store === 'typeorm') {
        const states: { state: string; count: number }[] = await sql.query(
          'SELECT state, count(*)::int AS count FROM idempotency_records GROUP BY state',
        );
        expect(states).toEqual([{ state: 'completed', count: KEYS }]);
        records = `${KEYS} completed, 0 in flight`;
      }
      for (const app of apps) {
        expect(app.running).toBe(true);
      }

      const replays = [...answers.values()].flat().filter((answer) => answer.replayed).length;
      recordOutcome(`many-instances-${store}`, {
        fault: `Many instances: 3 processes sharing ${storeName}`,
        trigger: `${REQUESTS} POST /orders with ${KEYS} keys (${PER_KEY} each, same body per key), all sent at once, round-robin over 3 app processes; every 409 IDEMPOTENCY_REQUEST_IN_PROGRESS retried after 50 ms until it answered`,
        measured: {
          instances: INSTANCES,
          requestsSent: REQUESTS,
          distinctKeys: KEYS,
          ordersCreated: rows.length,
          handlerExecutions: rows.length,
          replays,
          idempotencyRecords: records,
          firstAnswers: firstAnswers.toString(),
          allAnswersIncludingRetries: allAnswers.toString(),
          inProgressRetries: allAnswers.count(409),
          distinctOrderIdsPerKey: 1,
          answers5xx: allAnswers.between(500, 599),
          durationMs,
        },
        outcome: `${rows.length} orders for ${KEYS} keys; all ${REQUESTS} requests ended 201 with one order id per key (${KEYS} ran the handler, ${replays} replayed); no 5xx`,
        file: 'test/faults/many-instances.e2e-spec.ts',
      });
    }, 120_000);
  });
}

for (const shared of await sharedStores()) {
  manyInstances(shared);
}
