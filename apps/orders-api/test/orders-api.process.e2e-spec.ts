import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import { DataSource } from 'typeorm';
import {
  createTemporaryDatabase,
  POSTGRES_URL,
  REDIS_URL,
  type TemporaryDatabase,
} from '../../../test/utils/databases';
import { OwnRedis, describeWithRedisServer } from '../../../test/utils/redis-server';
import { describeWithServer } from '../../../test/utils/services';
import { type AppProcess, spawnOrdersApi, startOrdersApi } from './orders-api.process';
import { eventually, killAllChildren, tryConnect } from '../../../test/utils/processes';

/**
 * The sample app as a real process, started exactly as `npm start` does: what the "Done
 * when" promises (SQLite with no server, PostgreSQL + Redis by environment variables, two
 * instances that never create a second order or charge), graceful shutdown, /health and bad
 * configuration. The in-process suite (orders-api.e2e-spec.ts) covers the endpoints one by one.
 */

const PROBLEM = /^application\/problem\+json/;
/** ts-node starts the app in several seconds on a small machine; two at once take longer. */
const START_MS = 90_000;
const CASE_MS = 60_000;

const key = () => `key-${randomUUID()}`;
const orderFor = (customerId: string) => ({
  customerId,
  items: [{ sku: 'SKU-1', quantity: 2, unitPrice: 9.99 }],
});
const postOrder = (app: AppProcess, k: string, body: object) =>
  request(app.url).post('/orders').set('Idempotency-Key', k).send(body);
const postPayment = (app: AppProcess, k: string, orderId: string, amount: number) =>
  request(app.url).post('/payments').set('Idempotency-Key', k).send({ orderId, amount });

/** The answer to `sql` from a SQLite file (better-sqlite3), read after the app closed it. */
async function sqliteRows(file: string, sql: string): Promise<Record<string, unknown>[]> {
  const db = await new DataSource({
    type: 'better-sqlite3',
    database: file,
    readonly: true,
  }).initialize();
  try {
    return await db.query(sql);
  } finally {
    await db.destroy();
  }
}

afterAll(() => killAllChildren());

describe('orders API process on SQLite (no server needed)', () => {
  const dirs: string[] = [];
  const tempDir = () => {
    const dir = mkdtempSync(join(tmpdir(), 'orders-api-process-'));
    dirs.push(dir);
    return dir;
  };

  afterAll(async () => {
    await killAllChildren();
    for (const dir of dirs) {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  /** Creates an order, replays it, checks /health, stops the app: what `npm start` promises. */
  async function serveAndStop(app: AppProcess) {
    const health = await request(app.url).get('/health').expect(200);
    expect(health.body.status).toBe('ok');
    expect(health.body.details).toMatchObject({
      database: { status: 'up' },
      idempotencyStore: { status: 'up', store: 'TypeOrmIdempotencyStore' },
    });

    const k = key();
    const body = orderFor(`c-${randomUUID()}`);
    const first = await postOrder(app, k, body).expect(201);
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    const retry = await postOrder(app, k, body).expect(201);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.body).toEqual(first.body);
    expect(retry.headers.location).toBe(`/orders/${first.body.id}`);
    const list = await request(app.url).get('/orders').query({ customerId: body.customerId });
    expect(list.body).toEqual([first.body]);

    expect(await app.stop()).toEqual({ code: 0, signal: null });
    return first.body as { id: string };
  }

  /** The file holds the app's tables and the idempotency record, created by the migrations. */
  async function expectSchemaAndRecord(file: string, orderId: string) {
    expect(existsSync(file)).toBe(true);
    const tables = (
      await sqliteRows(file, "SELECT name FROM sqlite_master WHERE type = 'table'")
    ).map((row) => row.name);
    expect(tables).toEqual(
      expect.arrayContaining([
        'migrations',
        'idempotency_records',
        'orders',
        'payments',
        'outbox_messages',
      ]),
    );
    expect(await sqliteRows(file, 'SELECT name FROM migrations ORDER BY id')).toEqual([
      { name: 'CreateIdempotencyRecordsTable1763800000000' },
      { name: 'CreateOrdersTables1764000000000' },
      { name: 'OutboxDelivery1765000000000' },
    ]);
    expect(await sqliteRows(file, 'SELECT id FROM orders')).toEqual([{ id: orderId }]);
    const records = await sqliteRows(
      file,
      'SELECT state, response_status, response_body FROM idempotency_records',
    );
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ state: 'completed', response_status: 201 });
    expect(String(records[0].response_body)).toContain(orderId);
  }

  it(
    'serves on the SQLite file named by DATABASE_URL, with the idempotency records in that file',
    async () => {
      const file = join(tempDir(), 'orders.sqlite');
      const app = await startOrdersApi({ env: { DATABASE_URL: file } });
      expect(app.stdout).toContain(`(database: ${file}, idempotency store: typeorm)`);
      const order = await serveAndStop(app);
      await expectSchemaAndRecord(file, order.id);
    },
    START_MS,
  );

  it(
    'defaults to orders-api.sqlite in the working directory when DATABASE_URL is not set',
    async () => {
      const cwd = tempDir();
      const app = await startOrdersApi({ cwd });
      expect(app.stdout).toContain('(database: orders-api.sqlite, idempotency store: typeorm)');
      const order = await serveAndStop(app);
      await expectSchemaAndRecord(join(cwd, 'orders-api.sqlite'), order.id);
    },
    START_MS,
  );

  it(
    'serves on Fastify with HTTP_PLATFORM=fastify: replays, conditional GET, bad input as problems',
    async () => {
      const file = join(tempDir(), 'orders.sqlite');
      const app = await startOrdersApi({ env: { DATABASE_URL: file, HTTP_PLATFORM: 'fastify' } });
      expect(app.stdout).toMatch(/Listening on http:\/\/localhost:\d+ on fastify \(database: /);
      expect(app.stdout).not.toContain('@fastify/static');

      const created = await postOrder(app, key(), orderFor('c-fastify')).expect(201);
      const lastModified = created.headers['last-modified'];
      expect(lastModified).toMatch(/^\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/);
      const cached = await request(app.url)
        .get(`/orders/${created.body.id}`)
        .set('If-Modified-Since', lastModified)
        .expect(304);
      expect(cached.headers.etag).toBe('"1"');
      expect(cached.headers['last-modified']).toBe(lastModified);

      const malformed = await request(app.url)
        .post('/orders')
        .set('Idempotency-Key', key())
        .set('Content-Type', 'application/json')
        .send('{"customerId": ');
      expect(malformed.status).toBe(400);
      expect(malformed.headers['content-type']).toMatch(PROBLEM);
      expect(malformed.body).toMatchObject({ status: 400, code: 'MALFORMED_BODY' });
      const tooLarge = await request(app.url)
        .post('/orders')
        .set('Idempotency-Key', key())
        .send({ ...orderFor('c'), customerId: 'x'.repeat(200_000) });
      expect(tooLarge.status).toBe(413);
      expect(tooLarge.headers['content-type']).toMatch(PROBLEM);
      expect(tooLarge.body).toMatchObject({ status: 413, code: 'BODY_TOO_LARGE' });
      const docs = await request(app.url).get('/docs/swagger-ui-bundle.js').expect(200);
      expect(docs.headers['content-type']).toMatch(/javascript/);

      await serveAndStop(app);
    },
    START_MS,
  );

  it.each(['express', 'fastify'])(
    'on %s, finishes a payment in flight on SIGTERM, refuses new connections, exits 0, and a restart replays it',
    async (platform) => {
      const file = join(tempDir(), 'orders.sqlite');
      const app = await startOrdersApi({
        env: { DATABASE_URL: file, PAYMENT_GATEWAY_LATENCY_MS: '1500', HTTP_PLATFORM: platform },
      });
      expect(app.stdout).toContain(`on ${platform} (database: ${file}`);
      const order = (await postOrder(app, key(), orderFor('c-shutdown')).expect(201)).body;
      const k = key();
      let answered = false;
      const paying = postPayment(app, k, order.id, order.total).then((res) => {
        answered = true;
        return res;
      });
      // The pending payment row exists once the handler is in the gateway call.
      await eventually('the payment to be under way', async () => {
        const res = await request(app.url).get('/payments').query({ orderId: order.id });
        return res.body.length === 1 && res.body[0].status === 'pending';
      });

      app.signal('SIGTERM');
      await app.waitForOutput(/SIGTERM: closing; waiting for 1 running request/, 5_000);
      // The app logs that line just before it closes the listener: poll, briefly.
      await eventually(
        'new connections to be refused',
        async () => (await tryConnect(app.port)) === 'ECONNREFUSED',
        1_000,
        20,
      );
      expect(answered).toBe(false);
      expect(app.running).toBe(true);

      const paid = await paying;
      expect(paid.status).toBe(201);
      expect(paid.body).toMatchObject({ orderId: order.id, status: 'succeeded' });
      expect(paid.headers.connection).toBe('close');
      expect(await app.exited).toEqual({ code: 0, signal: null });
      expect(app.stdout).toContain('Closed');

      const again = await startOrdersApi({ env: { DATABASE_URL: file, HTTP_PLATFORM: platform } });
      const retry = await postPayment(again, k, order.id, order.total).expect(201);
      expect(retry.headers['idempotent-replayed']).toBe('true');
      expect(retry.body).toEqual(paid.body);
      const payments = await request(again.url).get('/payments').query({ orderId: order.id });
      expect(payments.body).toEqual([paid.body]);
      expect((await request(again.url).get(`/orders/${order.id}`)).body.status).toBe('paid');
      expect(await again.stop()).toEqual({ code: 0, signal: null });
    },
    START_MS * 2,
  );

  it.each(['express', 'fastify'])(
    'on %s, cuts a request still running at SHUTDOWN_TIMEOUT, exits 0, and its retry runs once after the lease lapses',
    async (platform) => {
      const file = join(tempDir(), 'orders.sqlite');
      const leases = { IDEMPOTENCY_LOCK_TTL: '1s', PAYMENT_LEASE: '1s', HTTP_PLATFORM: platform };
      const app = await startOrdersApi({
        env: {
          DATABASE_URL: file,
          PAYMENT_GATEWAY_LATENCY_MS: '20000',
          SHUTDOWN_TIMEOUT: '300ms',
          ...leases,
        },
      });
      const order = (await postOrder(app, key(), orderFor('c-cut')).expect(201)).body;
      const k = key();
      const paying = postPayment(app, k, order.id, order.total).then(
        (res) => res.status,
        (error: NodeJS.ErrnoException) => error.code ?? error.message,
      );
      let pending: { id: string } | undefined;
      await eventually('the payment to be under way', async () => {
        [pending] = (await request(app.url).get('/payments').query({ orderId: order.id })).body;
        return pending !== undefined;
      });

      app.signal('SIGTERM');
      expect(await app.exited).toEqual({ code: 0, signal: null });
      expect(app.stdout).toContain('1 request(s) still running after 300 ms');
      expect(await paying).toBe('ECONNRESET');

      // The lease (1 s) has lapsed by the time the next instance listens: the retry runs the
      // handler once. POST /payments runs in transactional mode (the TypeORM store), and on
      // SQLite (one connection) the cut attempt's reservation was part of its transaction, which
      // never committed: it left no payment behind, and the retry pays under a new one, charged
      // under the order's key as the cut attempt was, so a real gateway would not charge twice.
      const again = await startOrdersApi({ env: { DATABASE_URL: file, ...leases } });
      const retry = await postPayment(again, k, order.id, order.total).expect(201);
      expect(retry.headers['idempotent-replayed']).toBeUndefined();
      expect(retry.body).toMatchObject({ orderId: order.id, status: 'succeeded' });
      expect(retry.body.id).not.toBe(pending!.id);
      const payments = await request(again.url).get('/payments').query({ orderId: order.id });
      expect(payments.body).toEqual([retry.body]);
      const replay = await postPayment(again, k, order.id, order.total).expect(201);
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(await again.stop()).toEqual({ code: 0, signal: null });
    },
    START_MS * 2,
  );
});

describe('orders API process with bad configuration', () => {
  afterAll(() => killAllChildren());

  it.each([
    ['DATABASE_URL', 'ftp://x'],
    ['IDEMPOTENCY_STORE', 'nope'],
    ['HTTP_PLATFORM', 'koa'],
    ['AMQP_URL', 'rabbit:5672'],
    ['SMTP_URL', 'mail.example.com:25'],
  ])(
    'exits with code 1 and one line naming %s=%s, before starting Nest',
    async (variable, value) => {
      const app = await spawnOrdersApi({ env: { [variable]: value } });
      expect(await app.exited).toEqual({ code: 1, signal: null });
      const lines = app.stderr.trim().split('\n');
      expect(lines).toEqual([
        expect.stringMatching(new RegExp(`^orders-api: ${variable} must be`)),
      ]);
      expect(lines[0]).toContain(JSON.stringify(value));
      // Nothing was opened: it failed on the configuration, not on a connection.
      expect(app.stdout).not.toContain('Starting Nest application');
    },
    START_MS,
  );
});

const describeWithPostgresAndRedis = await Promise.all([
  describeWithServer('PostgreSQL', POSTGRES_URL),
  describeWithServer('Redis', REDIS_URL),
]).then(([pg, redis]) => (pg === describe && redis === describe ? describe : describe.skip));

describeWithPostgresAndRedis('two orders API processes sharing PostgreSQL and Redis', () => {
  let database: TemporaryDatabase;
  let sql: DataSource;
  let apps: AppProcess[] = [];

  beforeAll(async () => {
    database = await createTemporaryDatabase('postgres', 'orders_process');
    const env = {
      DATABASE_URL: database.url,
      IDEMPOTENCY_STORE: 'redis',
      REDIS_URL,
      PAYMENT_GATEWAY_LATENCY_MS: '200',
    };
    // Both at once on the empty database: their migrations meet at the advisory lock.
    apps = await Promise.all([startOrdersApi({ env }), startOrdersApi({ env })]);
    sql = await new DataSource({ type: 'postgres', url: database.url }).initialize();
  }, START_MS);

  afterAll(async () => {
    await sql?.destroy();
    await Promise.all(apps.map((app) => app.stop()));
    await database?.drop();
  });

  it('starts both on the empty database, migrating it once, and both are healthy', async () => {
    const ran = apps.map(
      (app) => app.stdout.match(/Ran CreateOrdersTables1764000000000/g)?.length ?? 0,
    );
    expect(ran.sort()).toEqual([0, 1]);
    expect(await sql.query('SELECT name FROM migrations ORDER BY id')).toEqual([
      { name: 'CreateIdempotencyRecordsTable1763800000000' },
      { name: 'CreateOrdersTables1764000000000' },
      { name: 'OutboxDelivery1765000000000' },
    ]);
    for (const app of apps) {
      expect(app.stdout).toContain('idempotency store: redis)');
      const health = await request(app.url).get('/health').expect(200);
      expect(health.body.details.idempotencyStore).toMatchObject({ status: 'up', store: 'redis' });
    }
  });

  it(
    'creates one order per key from 60 concurrent requests with 6 keys over both instances',
    async () => {
      const keys = Array.from({ length: 6 }, () => ({ k: key(), customerId: `c-${randomUUID()}` }));
      const answers = new Map<string, { status: number; replayed: boolean; id: string }[]>();
      // Each key goes 5 times to each instance.
      const send = async (i: number) => {
        const { k, customerId } = keys[i % 6];
        const app = apps[Math.floor(i / 6) % 2];
        const deadline = Date.now() + 20_000;
        let res = await postOrder(app, k, orderFor(customerId));
        while (res.status === 409 && Date.now() < deadline) {
          expect(res.body.code).toBe('IDEMPOTENCY_REQUEST_IN_PROGRESS');
          await sleep(50);
          res = await postOrder(app, k, orderFor(customerId));
        }
        expect(res.status).toBe(201);
        const list = answers.get(k) ?? [];
        list.push({
          status: res.status,
          replayed: res.headers['idempotent-replayed'] === 'true',
          id: res.body.id,
        });
        answers.set(k, list);
      };
      await Promise.all(Array.from({ length: 60 }, (_, i) => send(i)));

      const rows: { id: string; customer_id: string }[] = await sql.query(
        'SELECT id, customer_id FROM orders',
      );
      expect(rows).toHaveLength(6);
      for (const { k, customerId } of keys) {
        const list = answers.get(k)!;
        expect(list).toHaveLength(10);
        expect(list.filter((answer) => !answer.replayed)).toHaveLength(1);
        const ids = new Set(list.map((answer) => answer.id));
        expect(ids.size).toBe(1);
        expect(rows.filter((row) => row.customer_id === customerId)).toEqual([
          { id: [...ids][0], customer_id: customerId },
        ]);
      }
    },
    CASE_MS,
  );

  it(
    'charges an order once from 10 concurrent payments with 10 keys over both instances',
    async () => {
      const order = (await postOrder(apps[0], key(), orderFor(`c-${randomUUID()}`)).expect(201))
        .body;
      const keys = Array.from({ length: 10 }, () => key());
      const answers = await Promise.all(
        keys.map((k, i) => postPayment(apps[i % 2], k, order.id, order.total)),
      );

      const created = answers.filter((res) => res.status === 201);
      expect(created).toHaveLength(1);
      const conflicts = answers.filter((res) => res.status === 409);
      expect(conflicts).toHaveLength(9);
      for (const res of conflicts) {
        expect(res.headers['content-type']).toMatch(PROBLEM);
        expect(['PAYMENT_IN_PROGRESS', 'ORDER_ALREADY_PAID']).toContain(res.body.code);
      }
      const payments = await sql.query('SELECT id, status FROM payments WHERE order_id = $1', [
        order.id,
      ]);
      expect(payments).toEqual([{ id: created[0].body.id, status: 'succeeded' }]);

      // The winning key, retried on the other instance, replays the payment.
      const winner = answers.indexOf(created[0]);
      const retry = await postPayment(apps[(winner + 1) % 2], keys[winner], order.id, order.total);
      expect(retry.status).toBe(201);
      expect(retry.headers['idempotent-replayed']).toBe('true');
      expect(retry.body).toEqual(created[0].body);
      // A losing key's 409 was not stored: its retry runs again and finds the order paid.
      const loser = (winner + 1) % 10;
      const late = await postPayment(apps[winner % 2], keys[loser], order.id, order.total);
      expect(late.status).toBe(409);
      expect(late.body.code).toBe('ORDER_ALREADY_PAID');
      expect(await sql.query('SELECT id FROM payments WHERE order_id = $1', [order.id])).toEqual([
        { id: created[0].body.id },
      ]);
    },
    CASE_MS,
  );
});

describeWithRedisServer()('orders API process whose Redis goes away', () => {
  let dir: string;
  let redis: OwnRedis;
  let app: AppProcess;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'orders-api-process-'));
    redis = await OwnRedis.start();
    app = await startOrdersApi({
      env: {
        DATABASE_URL: join(dir, 'orders.sqlite'),
        IDEMPOTENCY_STORE: 'redis',
        REDIS_URL: redis.url,
      },
    });
  }, START_MS);

  afterAll(async () => {
    await killAllChildren();
    await redis?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it(
    'answers /health 503 and POST 503 without creating anything while Redis is down, and recovers without a restart',
    async () => {
      await request(app.url).get('/health').expect(200);
      await postOrder(app, key(), orderFor('c-before')).expect(201);

      await redis.stop();
      const down = await request(app.url).get('/health');
      expect(down.status).toBe(503);
      expect(down.headers['content-type']).toMatch(PROBLEM);
      expect(down.body).toMatchObject({ status: 503, code: 'HEALTH_CHECK_FAILED' });
      expect(down.body.details).toMatchObject({
        database: { status: 'up' },
        idempotencyStore: { status: 'down' },
      });

      const customerId = `c-${randomUUID()}`;
      const k = key();
      const refused = await postOrder(app, k, orderFor(customerId));
      expect(refused.status).toBe(503);
      expect(refused.headers['content-type']).toMatch(PROBLEM);
      expect(refused.body.code).toBe('IDEMPOTENCY_STORE_UNAVAILABLE');
      expect((await request(app.url).get('/orders').query({ customerId })).body).toEqual([]);

      await redis.restart();
      await eventually('/health to answer 200 again', async () => {
        return (await request(app.url).get('/health')).status === 200;
      });
      const created = await postOrder(app, k, orderFor(customerId)).expect(201);
      expect(created.headers['idempotent-replayed']).toBeUndefined();
      const list = await request(app.url).get('/orders').query({ customerId });
      expect(list.body).toEqual([created.body]);
      expect(app.running).toBe(true);
    },
    CASE_MS,
  );
});
