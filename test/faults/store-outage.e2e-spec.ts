import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import request, { type Response } from 'supertest';
import type { DataSource } from 'typeorm';
import { type AppProcess } from '../../apps/orders-api/test/orders-api.process';
import { eventually, killAllChildren } from '../utils/processes';
import { createTemporaryDatabase, POSTGRES_URL, type TemporaryDatabase } from '../utils/databases';
import {
  key,
  logLines,
  openSql,
  orderFor,
  PROBLEM,
  postOrder,
  START_MS,
  startApp,
  StatusTally,
  untilNotInProgress,
  describeWithPostgresAndOwnRedis,
} from './fault-suite';
import { OwnRedis } from '../utils/redis-server';
import { describeWithServers } from '../utils/services';
import { recordOutcome } from './outcomes';

/**
 * Store outage: the idempotency store goes away while clients keep sending POST /orders. Requests
 * get 503 IDEMPOTENCY_STORE_UNAVAILABLE and create nothing (fail closed), every order in the
 * database was answered 201, and once the store is back the same process serves again.
 */

/** A short lease, so a record whose claim committed but whose answer was lost lapses quickly. */
const LOCK_TTL_MS = 2_000;
const WORKERS = 4;
/** Answers wanted in each phase before moving on. */
const ENOUGH = 8;

afterAll(() => killAllChildren());

type Phase = 'before' | 'during' | 'after';

interface Sent {
  k: string;
  customerId: string;
  phase: Phase;
  res?: Response;
  error?: string;
}

interface Run {
  sent: Sent[];
  /** From the fault to the first 201 of a request sent after the recovery. */
  outageMs: number;
  /** From the end of the recovery step to that 201. */
  recoveryMs: number;
}

/**
 * Sends POST /orders with fresh keys from {@link WORKERS} clients without pause: `before` until
 * {@link ENOUGH} 201s, then `fault()`, `during` until the library refused {@link ENOUGH} with 503,
 * then `recover()`, `after` until {@link ENOUGH} 201s.
 */
async function ordersThrough(
  app: AppProcess,
  fault: () => Promise<void>,
  recover: () => Promise<void>,
): Promise<Run> {
  const sent: Sent[] = [];
  let phase: Phase = 'before';
  let stopped = false;
  let firstAfter: number | undefined;
  const worker = async () => {
    while (!stopped) {
      const entry: Sent = { k: key('outage'), customerId: `c-outage-${randomUUID()}`, phase };
      sent.push(entry);
      try {
        entry.res = await postOrder(app, entry.k, orderFor(entry.customerId));
        if (entry.phase === 'after' && entry.res.status === 201) {
          firstAfter ??= Date.now();
        }
      } catch (error) {
        entry.error = (error as NodeJS.ErrnoException).code ?? String(error);
      }
    }
  };
  const count = (p: Phase, status: number) =>
    sent.filter((s) => s.phase === p && s.res?.status === status).length;
  // The app's own 503 DATABASE_UNAVAILABLE (its handler lost the database) does not count: the
  // outage phase lasts until the library itself has refused ENOUGH requests.
  const refusedByStore = () =>
    sent.filter(
      (s) =>
        s.phase === 'during' &&
        s.res?.status === 503 &&
        s.res.body?.code === 'IDEMPOTENCY_STORE_UNAVAILABLE',
    ).length;
  const workers = Promise.all(Array.from({ length: WORKERS }, worker));
  try {
    await eventually('201s before the fault', async () => count('before', 201) >= ENOUGH, 20_000);
    phase = 'during';
    const faultAt = Date.now();
    await fault();
    await eventually('503s during the outage', async () => refusedByStore() >= ENOUGH, 30_000);
    await recover();
    const recoveredAt = Date.now();
    phase = 'after';
    await eventually('201s after recovery', async () => count('after', 201) >= ENOUGH, 30_000);
    return { sent, outageMs: firstAfter! - faultAt, recoveryMs: firstAfter! - recoveredAt };
  } finally {
    stopped = true;
    await workers;
  }
}

/**
 * The assertions both outages share: only 201 and the library's 503 (and, where `databaseFailures`
 * allows it, the app's 503 DATABASE_UNAVAILABLE for a handler whose own query was cut; never a
 * 500); exactly the 201s created orders; keys refused run once when retried; the same process is
 * healthy afterwards.
 */
async function expectFailedClosed(
  app: AppProcess,
  sql: DataSource,
  { sent }: Run,
  { databaseFailures = false } = {},
) {
  const statuses = new StatusTally();
  const byPhase: Record<Phase, StatusTally> = {
    before: new StatusTally(),
    during: new StatusTally(),
    after: new StatusTally(),
  };
  for (const { res, error, phase } of sent) {
    expect(error).toBeUndefined();
    statuses.add(res!.status);
    byPhase[phase].add(res!.status);
    if (res!.status === 201) {
      continue;
    }
    const answer = { status: res!.status, code: res!.body.code };
    if (databaseFailures && answer.code === 'DATABASE_UNAVAILABLE') {
      expect(answer).toEqual({ status: 503, code: 'DATABASE_UNAVAILABLE' });
    } else {
      expect(answer).toEqual({ status: 503, code: 'IDEMPOTENCY_STORE_UNAVAILABLE' });
    }
    expect(res!.headers['content-type']).toMatch(PROBLEM);
  }
  const created = sent.filter((s) => s.res!.status === 201);
  const refused = sent.filter(
    (s) => s.res!.status === 503 && s.res!.body.code === 'IDEMPOTENCY_STORE_UNAVAILABLE',
  );
  const failed = sent.filter(
    (s) => s.res!.status === 503 && s.res!.body.code === 'DATABASE_UNAVAILABLE',
  );
  expect(refused.length).toBeGreaterThanOrEqual(ENOUGH);

  // Every order in the database was answered 201, and every 201 named an order that exists.
  const rows: { id: string; customer_id: string }[] = await sql.query(
    'SELECT id, customer_id FROM orders',
  );
  expect(rows).toHaveLength(created.length);
  expect(new Set(rows.map((row) => row.id))).toEqual(new Set(created.map((s) => s.res!.body.id)));
  const notCreated = new Set([...refused, ...failed].map((s) => s.customerId));
  expect(rows.filter((row) => notCreated.has(row.customer_id))).toEqual([]);

  // A key refused by the library was never held, one whose handler lost the database was released: its retry runs
  // the handler, once. (A claim that committed just before its answer was lost, or a release that
  // failed, holds the key for one short lease: 409 meanwhile.)
  const retried = new StatusTally();
  for (const { k, customerId } of [...refused.slice(0, 5), ...failed]) {
    const tries = await untilNotInProgress(() => postOrder(app, k, orderFor(customerId)), 10_000);
    tries.forEach((res) => retried.add(res.status));
    const last = tries.at(-1)!;
    expect(last.status).toBe(201);
    expect(last.headers['idempotent-replayed']).toBeUndefined();
    const again = await postOrder(app, k, orderFor(customerId)).expect(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body.id).toBe(last.body.id);
    const orders: unknown[] = await sql.query('SELECT id FROM orders WHERE customer_id = $1', [
      customerId,
    ]);
    expect(orders).toEqual([{ id: last.body.id }]);
  }

  // Recovered with no restart: the same process, healthy, started once.
  await eventually('/health to answer 200', async () => {
    return (await request(app.url).get('/health')).status === 200;
  });
  expect(app.running).toBe(true);
  expect(logLines(app, /Listening on/)).toHaveLength(1);

  return { statuses, byPhase, created, refused, failed, rows, retried };
}

const describeWithPostgres = await describeWithServers(['PostgreSQL', POSTGRES_URL]);
const describeWithPostgresAndRedisServer = await describeWithPostgresAndOwnRedis();

describeWithPostgresAndRedisServer('the Redis of the idempotency store stops during a run', () => {
  let database: TemporaryDatabase;
  let sql: DataSource;
  let redis: OwnRedis;
  let app: AppProcess;

  beforeAll(async () => {
    [database, redis] = await Promise.all([
      createTemporaryDatabase('postgres', 'faults_outage_redis'),
      OwnRedis.start(),
    ]);
    app = await startApp(
      {
        DATABASE_URL: database.url,
        IDEMPOTENCY_STORE: 'redis',
        REDIS_URL: redis.url,
        IDEMPOTENCY_LOCK_TTL: String(LOCK_TTL_MS),
      },
      'outage-redis',
    );
    sql = await openSql(database.url);
  }, START_MS);

  afterAll(async () => {
    await sql?.destroy();
    await app?.stop();
    await redis?.destroy();
    await database?.drop();
  });

  it('answers 503 and creates nothing while Redis is down, and serves again once it is back', async () => {
    let healthDown: Response | undefined;
    const run = await ordersThrough(
      app,
      async () => {
        await redis.stop();
        healthDown = await request(app.url).get('/health');
      },
      () => redis.restart(),
    );
    const { statuses, byPhase, created, refused, rows, retried } = await expectFailedClosed(
      app,
      sql,
      run,
    );
    expect(healthDown?.status).toBe(503);
    expect(healthDown?.body.details).toMatchObject({
      database: { status: 'up' },
      idempotencyStore: { status: 'down' },
    });
    expect(byPhase.after.count(201)).toBeGreaterThanOrEqual(ENOUGH);

    recordOutcome('store-outage-redis', {
      fault: 'Store outage: the Redis of the idempotency store stops',
      trigger: `${WORKERS} clients send POST /orders with fresh keys without pause to one instance (Redis store on a redis-server of the test's own, lease ${LOCK_TTL_MS} ms); SIGTERM to redis-server after ${ENOUGH} 201s; started again on the same port after ${ENOUGH} 503s; then 5 of the refused keys retried`,
      measured: {
        requestsSent: run.sent.length,
        answers: statuses.toString(),
        beforeOutage: byPhase.before.toString(),
        duringOutage: byPhase.during.toString(),
        afterRecovery: byPhase.after.toString(),
        answered201: created.length,
        ordersCreated: rows.length,
        answered503: refused.length,
        ordersForRefusedRequests: 0,
        answers5xxOther: statuses.between(500, 599) - statuses.count(503),
        refusedKeysRetried: retried.toString(),
        outageMs: run.outageMs,
        recoveryAfterRestartMs: run.recoveryMs,
        appRestarts: 0,
      },
      outcome: `${refused.length} requests got 503 IDEMPOTENCY_STORE_UNAVAILABLE and created nothing; ${rows.length} orders = ${created.length} answers 201; the same process answered 201 ${run.recoveryMs} ms after Redis was back, /health 200`,
      file: 'test/faults/store-outage.e2e-spec.ts',
    });
  }, 90_000);
});

describeWithPostgres(
  'PostgreSQL terminates the connections of the TypeORM store during a run',
  () => {
    let database: TemporaryDatabase;
    let sql: DataSource;
    let app: AppProcess;

    beforeAll(async () => {
      database = await createTemporaryDatabase('postgres', 'faults_outage_pg');
      app = await startApp(
        {
          DATABASE_URL: database.url,
          IDEMPOTENCY_STORE: 'typeorm',
          IDEMPOTENCY_LOCK_TTL: String(LOCK_TTL_MS),
        },
        'outage-pg',
      );
      sql = await openSql(database.url);
    }, START_MS);

    afterAll(async () => {
      await sql?.destroy();
      await app?.stop();
      await database?.drop();
    });

    it('answers 503 when the store query is cut, creates no order without a 201, and recovers', async () => {
      let terminated = 0;
      let rounds = 0;
      let terminating = false;
      let loop: Promise<void> | undefined;
      // Every backend of the temporary database but the test's own, again and again: connections
      // die while idle in the pool and in the middle of queries.
      const terminateAll = async () => {
        while (terminating) {
          const [{ n }] = await sql.query(
            `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()`,
          );
          terminated += n;
          rounds++;
          await sleep(10);
        }
      };
      const run = await ordersThrough(
        app,
        async () => {
          terminating = true;
          loop = terminateAll();
        },
        async () => {
          terminating = false;
          await loop;
        },
      );
      const { statuses, byPhase, created, refused, failed, rows, retried } =
        await expectFailedClosed(app, sql, run, { databaseFailures: true });
      expect(terminated).toBeGreaterThan(0);
      expect(byPhase.after.count(201)).toBeGreaterThanOrEqual(ENOUGH);

      recordOutcome('store-outage-postgres', {
        fault: 'Store outage: PostgreSQL terminates the TypeORM store connections',
        trigger: `${WORKERS} clients send POST /orders with fresh keys without pause to one instance (TypeORM store on PostgreSQL, lease ${LOCK_TTL_MS} ms); after ${ENOUGH} 201s, pg_terminate_backend on every backend of the app's database every ~10 ms until ${ENOUGH} requests got 503 IDEMPOTENCY_STORE_UNAVAILABLE; then 5 of the refused keys retried`,
        measured: {
          requestsSent: run.sent.length,
          answers: statuses.toString(),
          beforeOutage: byPhase.before.toString(),
          duringTerminations: byPhase.during.toString(),
          afterRecovery: byPhase.after.toString(),
          terminationRounds: rounds,
          backendsTerminated: terminated,
          answered201: created.length,
          ordersCreated: rows.length,
          answered503: refused.length,
          ordersForRefusedRequests: 0,
          answers503DatabaseUnavailable: failed.length,
          ordersForThoseAnswers: 0,
          answers5xxOther: statuses.between(500, 599) - statuses.count(503),
          refusedAndFailedKeysRetried: retried.toString(),
          outageMs: run.outageMs,
          recoveryMs: run.recoveryMs,
          appRestarts: 0,
        },
        outcome: `${refused.length} requests got 503 IDEMPOTENCY_STORE_UNAVAILABLE and created nothing; ${failed.length} got the app's 503 DATABASE_UNAVAILABLE (the handler's own INSERT was cut: nothing created, key released, the retry ran once); no 500; ${rows.length} orders = ${created.length} answers 201; the same process answered 201 ${run.recoveryMs} ms after the terminations stopped`,
        file: 'test/faults/store-outage.e2e-spec.ts',
      });
    }, 90_000);
  },
);
