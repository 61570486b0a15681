import { randomUUID } from 'node:crypto';
import {
  IdempotencyModule,
  type IdempotencyStore,
  MemoryIdempotencyStore,
} from 'nestjs-idempotency';
import { RedisIdempotencyStore } from 'nestjs-idempotency/redis';
import {
  CreateIdempotencyRecordsTable1763800000000,
  TypeOrmIdempotencyStore,
} from 'nestjs-idempotency/typeorm';
import { DataSource } from 'typeorm';
import request from 'supertest';
import {
  calls,
  count,
  gates,
  OrdersController,
  PaymentsController,
  PlainController,
  ResponsesController,
  storeIfCalls,
} from './app';
import { createApp, PLATFORMS, type TestApp } from './platforms';
import { describeWithServer } from '../utils/services';

const PROBLEM = /^application\/problem\+json/;

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const withRedis = (await describeWithServer('Redis', REDIS_URL)) === describe;
const POSTGRES_URL =
  process.env.POSTGRES_URL ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const withPostgres = (await describeWithServer('PostgreSQL', POSTGRES_URL)) === describe;
const dataSources: DataSource[] = [];

/** A TypeORM store on PostgreSQL, its table made by the library's migration. */
function postgresStore(): IdempotencyStore {
  const dataSource = new DataSource({
    type: 'postgres',
    url: POSTGRES_URL,
    migrations: [CreateIdempotencyRecordsTable1763800000000],
    migrationsTableName: 'idempotency_test_migrations',
  });
  dataSources.push(dataSource);
  const ready = dataSource.initialize().then(() => dataSource.runMigrations());
  // The store only queries once a request arrives, after createApp awaited `ready` below.
  storesReady.push(ready);
  return new TypeOrmIdempotencyStore({ dataSource, purgeIntervalMs: 0 });
}
const storesReady: Promise<unknown>[] = [];
afterAll(async () => {
  await Promise.all(dataSources.map((dataSource) => dataSource.destroy()));
});

/** Every HTTP case runs on each platform with each store. */
const STORES: [string, () => IdempotencyStore][] = [
  ['memory', () => new MemoryIdempotencyStore()],
  ...(withRedis
    ? [
        [
          'redis',
          () => new RedisIdempotencyStore({ client: REDIS_URL, keyPrefix: `e2e:${randomUUID()}:` }),
        ] as [string, () => IdempotencyStore],
      ]
    : []),
  ...(withPostgres
    ? [['typeorm-postgres', postgresStore] as [string, () => IdempotencyStore]]
    : []),
];
const CASES = PLATFORMS.flatMap((platform) =>
  STORES.map(([storeName, createStore]) => ({ platform, storeName, createStore })),
);

describe.each(CASES)(
  'Idempotency over HTTP ($platform, $storeName store)',
  ({ platform, createStore }) => {
    let t: TestApp;
    let n = 0;
    /** A key no other test uses. */
    const key = () => `key-${platform}-${++n}-${Date.now()}`;
    const post = (path: string, k?: string | string[]) => {
      const req = request(t.url).post(path);
      // supertest sends an array as the same header twice.
      return k === undefined ? req : req.set('Idempotency-Key', k as string);
    };

    beforeAll(async () => {
      t = await createApp(platform, {
        imports: [IdempotencyModule.forRoot({ store: createStore() })],
        controllers: [OrdersController, PlainController, ResponsesController, PaymentsController],
      });
      await Promise.all(storesReady);
    });
    afterAll(() => t.app.close());
    beforeEach(() => {
      calls.clear();
      storeIfCalls.length = 0;
    });

    describe('activation', () => {
      it('leaves undecorated handlers alone: no key needed, every call runs', async () => {
        await request(t.url).post('/other').expect(201);
        await request(t.url).post('/other').set('Idempotency-Key', 'same').expect(201);
        await request(t.url).post('/other').set('Idempotency-Key', 'same').expect(201);
        expect(count('plain')).toBe(3);
      });

      it('applies a class decorator to POST and PATCH but not to PUT or GET', async () => {
        await post('/orders').send({}).expect(400);
        await request(t.url).patch('/orders/1').send({}).expect(400);
        await request(t.url).put('/orders/1').expect(200);
        await request(t.url).get('/orders').expect(200);
        const k = key();
        await request(t.url).put('/orders/1').set('Idempotency-Key', k).expect(200);
        await request(t.url).put('/orders/1').set('Idempotency-Key', k).expect(200);
        expect(count('put')).toBe(3);
        expect(count('list')).toBe(1);
      });

      it('applies a handler decorator to its own verb (DELETE)', async () => {
        await request(t.url).delete('/orders/1').expect(400);
        const k = key();
        const first = await request(t.url)
          .delete('/orders/1')
          .set('Idempotency-Key', k)
          .expect(200);
        const again = await request(t.url)
          .delete('/orders/1')
          .set('Idempotency-Key', k)
          .expect(200);
        expect(again.body).toEqual(first.body);
        expect(again.headers['idempotent-replayed']).toBe('true');
        expect(count('delete')).toBe(1);
      });
    });

    describe('replay', () => {
      it('runs the handler once and replays status, body and headers with Idempotent-Replayed', async () => {
        const k = key();
        const first = await post('/orders', k).send({ sku: 'a', quantity: 1 }).expect(201);
        expect(first.headers['idempotent-replayed']).toBeUndefined();
        const again = await post('/orders', k).send({ sku: 'a', quantity: 1 }).expect(201);
        expect(again.text).toBe(first.text);
        expect(again.headers['content-type']).toBe(first.headers['content-type']);
        expect(again.headers['idempotent-replayed']).toBe('true');
        expect(count('create')).toBe(1);
      });

      it('replays the @HttpCode() status', async () => {
        const k = key();
        await post('/responses/ok', k).expect(200);
        const again = await post('/responses/ok', k).expect(200);
        expect(again.headers['idempotent-replayed']).toBe('true');
        expect(count('ok')).toBe(1);
      });

      it('replays allow-listed headers only, and never Set-Cookie', async () => {
        const k = key();
        const first = await post('/responses/headers', k).expect(201);
        expect(first.headers['set-cookie']).toEqual(['session=secret-1']);
        expect(first.headers['x-unlisted']).toBe('dropped-1');
        const again = await post('/responses/headers', k).expect(201);
        expect(again.headers.location).toBe('/orders/1');
        expect(again.headers.etag).toBe('"v1"');
        expect(again.headers['last-modified']).toBe('Wed, 21 Oct 2026 07:28:00 GMT');
        expect(again.headers['x-custom']).toBe('listed-1');
        expect(again.headers['x-unlisted']).toBeUndefined();
        expect(again.headers['set-cookie']).toBeUndefined();
        expect(again.headers['idempotent-replayed']).toBe('true');
        expect(count('headers')).toBe(1);
      });

      it('replays Content-Language by default', async () => {
        const k = key();
        const first = await post('/responses/language', k).expect(201);
        expect(first.headers['content-language']).toBe('de-CH');
        const again = await post('/responses/language', k).expect(201);
        expect(again.headers['idempotent-replayed']).toBe('true');
        expect(again.headers['content-language']).toBe('de-CH');
        expect(again.text).toBe(first.text);
        expect(count('language')).toBe(1);
      });

      it('replays Date and Buffer values byte for byte', async () => {
        const k = key();
        const first = await post('/responses/types', k).expect(201);
        const again = await post('/responses/types', k).expect(201);
        expect(again.text).toBe(first.text);
        expect(again.headers['content-type']).toBe(first.headers['content-type']);
        expect(count('types')).toBe(1);
      });

      it('replays a text body and an empty 204', async () => {
        const k = key();
        const first = await post('/responses/text', k).expect(201);
        const again = await post('/responses/text', k).expect(201);
        expect(again.text).toBe(first.text);
        expect(again.headers['content-type']).toBe(first.headers['content-type']);
        const e = key();
        await post('/responses/empty', e).expect(204);
        const emptyAgain = await post('/responses/empty', e).expect(204);
        expect(emptyAgain.text).toBe('');
        expect(emptyAgain.headers['idempotent-replayed']).toBe('true');
        expect(count('text')).toBe(1);
        expect(count('empty')).toBe(1);
      });
    });

    describe('the key', () => {
      it('treats a bare token and a structured-field string as the same key', async () => {
        const k = key();
        await post('/orders', k).send({ sku: 'a' }).expect(201);
        const quoted = await post('/orders', `"${k}"`).send({ sku: 'a' }).expect(201);
        expect(quoted.headers['idempotent-replayed']).toBe('true');
        expect(count('create')).toBe(1);
      });

      it('unescapes \\" and \\\\ in structured-field strings', async () => {
        const k = key();
        await post('/orders', `"${k}\\"b\\\\c"`).send({ sku: 'esc' }).expect(201);
        const bare = await post('/orders', `${k}"b\\c`).send({ sku: 'esc' }).expect(201);
        expect(bare.headers['idempotent-replayed']).toBe('true');
        expect(count('create')).toBe(1);
      });

      it('answers 400 IDEMPOTENCY_KEY_MISSING without a key, as problem+json', async () => {
        const res = await post('/orders').send({}).expect(400);
        expect(res.headers['content-type']).toMatch(PROBLEM);
        expect(res.body).toEqual({
          type: expect.any(String),
          title: expect.any(String),
          status: 400,
          detail: expect.stringContaining('Idempotency-Key'),
          code: 'IDEMPOTENCY_KEY_MISSING',
        });
        expect(count('create')).toBe(0);
      });

      it.each([
        ['empty', ''],
        ['256 characters', 'k'.repeat(256)],
        ['a quoted key with a bad escape', '"a\\b"'],
        ['an unterminated quoted key', '"abc'],
        ['characters after the closing quote', '"abc"d'],
        ['an empty quoted key', '""'],
        ['a tab', 'a\tb'],
      ])('answers 400 IDEMPOTENCY_KEY_INVALID for %s', async (_name, value) => {
        const res = await post('/orders', value).send({}).expect(400);
        expect(res.headers['content-type']).toMatch(PROBLEM);
        expect(res.body.code).toBe('IDEMPOTENCY_KEY_INVALID');
        expect(count('create')).toBe(0);
      });

      it('accepts 255 characters of printable ASCII', async () => {
        await post('/orders', `${'k'.repeat(254)}~`)
          .send({ sku: 'long' })
          .expect(201);
      });

      it('answers 400 for non-ASCII keys', async () => {
        const res = await post('/orders', Buffer.from('caf\u00e9', 'latin1').toString('latin1'))
          .send({})
          .expect(400);
        expect(res.body.code).toBe('IDEMPOTENCY_KEY_INVALID');
      });

      it('answers 400 for the header sent twice with different values, accepts the same twice', async () => {
        const res = await post('/orders', ['one', 'two']).send({}).expect(400);
        expect(res.body.code).toBe('IDEMPOTENCY_KEY_INVALID');
        expect(count('create')).toBe(0);
        const k = key();
        await post('/orders', [k, `"${k}"`])
          .send({ sku: 'dup' })
          .expect(201);
        expect(count('create')).toBe(1);
      });

      it('answers 400 for a body nested too deeply to fingerprint, without running the handler', async () => {
        const depth = 30_000;
        const res = await post('/orders', key())
          .set('Content-Type', 'application/json')
          .send(`{"sku":${'['.repeat(depth)}${']'.repeat(depth)}}`)
          .expect(400);
        expect(res.headers['content-type']).toMatch(PROBLEM);
        expect(res.body.code).toBe('IDEMPOTENCY_FINGERPRINT_FAILED');
        expect(count('create')).toBe(0);
        await post('/orders', key()).send({ sku: 'after' }).expect(201);
      });

      it('runs unprotected without a key when required is false', async () => {
        await post('/responses/optional').expect(201);
        await post('/responses/optional').expect(201);
        const k = key();
        await post('/responses/optional', k).expect(201);
        await post('/responses/optional', k).expect(201);
        expect(count('optional')).toBe(3);
      });
    });

    describe('scope and fingerprint', () => {
      it('keeps one key apart on two endpoints', async () => {
        const k = key();
        await post('/orders', k).send({}).expect(201);
        await post('/other/second', k).expect(201);
        expect(count('create')).toBe(1);
        expect(count('second')).toBe(1);
      });

      it('answers 422 IDEMPOTENCY_KEY_REUSED for the same key with another body', async () => {
        const k = key();
        await post('/orders', k).send({ sku: 'a' }).expect(201);
        const res = await post('/orders', k).send({ sku: 'b' }).expect(422);
        expect(res.headers['content-type']).toMatch(PROBLEM);
        expect(res.body.code).toBe('IDEMPOTENCY_KEY_REUSED');
        expect(count('create')).toBe(1);
      });

      it('answers 422 for another payload while the first is still in flight', async () => {
        const k = key();
        const first = post('/orders', k).send({ sku: 'a', gate: `g-${k}` });
        const pending = first.then((r) => r);
        await waitFor(() => count('create') === 1);
        const res = await post('/orders', k)
          .send({ sku: 'b', gate: `g-${k}` })
          .expect(422);
        expect(res.body.code).toBe('IDEMPOTENCY_KEY_REUSED');
        openGate(`g-${k}`);
        expect((await pending).status).toBe(201);
      });

      it('answers 422 for one key on another resource of the same route, never replaying the first', async () => {
        const k = key();
        const first = await post('/payments/pay_1/capture', k).send({ amount: 10 }).expect(201);
        expect(first.body).toEqual({ id: 'pay_1', captured: 10, run: 1 });
        const other = await post('/payments/pay_2/capture', k).send({ amount: 10 }).expect(422);
        expect(other.headers['content-type']).toMatch(PROBLEM);
        expect(other.body.code).toBe('IDEMPOTENCY_KEY_REUSED');
        expect(other.headers['idempotent-replayed']).toBeUndefined();
        expect(count('capture-pay_2')).toBe(0);
        const again = await post('/payments/pay_1/capture', k).send({ amount: 10 }).expect(201);
        expect(again.headers['idempotent-replayed']).toBe('true');
        expect(count('capture-pay_1')).toBe(1);
      });

      it('replays when the same JSON comes with its keys in another order', async () => {
        const k = key();
        await post('/orders', k).send({ sku: 'a', quantity: 2 }).expect(201);
        const again = await post('/orders', k).send({ quantity: 2, sku: 'a' }).expect(201);
        expect(again.headers['idempotent-replayed']).toBe('true');
      });

      it('includes the query in the fingerprint', async () => {
        const k = key();
        await post('/responses/search?q=a', k).expect(201);
        const res = await post('/responses/search?q=b', k).expect(422);
        expect(res.body.code).toBe('IDEMPOTENCY_KEY_REUSED');
      });

      it('replays whatever the body when fingerprint is false', async () => {
        const k = key();
        const first = await post('/responses/lenient', k).send({ sku: 'a' }).expect(201);
        const again = await post('/responses/lenient', k).send({ sku: 'b' }).expect(201);
        expect(again.body).toEqual(first.body);
        expect(count('lenient')).toBe(1);
      });

      it('reads the key from a body field with key: { path }, a number as its decimal form', async () => {
        const id = `${key()}`;
        const first = await request(t.url)
          .post('/responses/body-key')
          .send({ meta: { requestId: id }, sku: 'a' })
          .expect(201);
        const again = await request(t.url)
          .post('/responses/body-key')
          .send({ meta: { requestId: id }, sku: 'a' })
          .expect(201);
        expect(again.headers['idempotent-replayed']).toBe('true');
        expect(again.body).toEqual(first.body);
        const numeric = Date.now() * 1000 + n;
        await request(t.url)
          .post('/responses/body-key')
          .send({ meta: { requestId: numeric } })
          .expect(201);
        const replay = await request(t.url)
          .post('/responses/body-key')
          .send({ meta: { requestId: numeric } })
          .expect(201);
        expect(replay.headers['idempotent-replayed']).toBe('true');
        expect(count('body-key')).toBe(2);
      });

      it('answers 400 when the body field is missing or not a valid key, before the handler runs', async () => {
        const missing = await request(t.url)
          .post('/responses/body-key')
          .send({ meta: {} })
          .expect(400);
        expect(missing.body.code).toBe('IDEMPOTENCY_KEY_MISSING');
        const wrongType = await request(t.url)
          .post('/responses/body-key')
          .send({ meta: { requestId: { id: 1 } } })
          .expect(400);
        expect(wrongType.body.code).toBe('IDEMPOTENCY_KEY_INVALID');
        expect(wrongType.body.detail).toContain('meta.requestId');
        const empty = await request(t.url)
          .post('/responses/body-key')
          .send({ meta: { requestId: '' } })
          .expect(400);
        expect(empty.body.code).toBe('IDEMPOTENCY_KEY_INVALID');
        expect(count('body-key')).toBe(0);
      });

      it('answers the configured mismatchStatus', async () => {
        const k = key();
        await post('/responses/conflict-status', k).send({ a: 1 }).expect(201);
        const res = await post('/responses/conflict-status', k).send({ a: 2 }).expect(409);
        expect(res.body.code).toBe('IDEMPOTENCY_KEY_REUSED');
      });
    });

    describe('errors', () => {
      it('stores and replays an HttpException below 500', async () => {
        const k = key();
        const first = await post('/responses/not-found', k).expect(404);
        const again = await post('/responses/not-found', k).expect(404);
        expect(again.body).toEqual(first.body);
        expect(again.headers['idempotent-replayed']).toBe('true');
        const u = key();
        const unprocessable = await post('/responses/unprocessable', u).expect(422);
        expect((await post('/responses/unprocessable', u).expect(422)).body).toEqual(
          unprocessable.body,
        );
        expect(count('not-found')).toBe(1);
        expect(count('unprocessable')).toBe(1);
      });

      it('releases the key on a 5xx or a non-HTTP error, so a retry runs again', async () => {
        const k = key();
        await post('/responses/server-error', k).expect(500);
        const again = await post('/responses/server-error', k).expect(500);
        expect(again.headers['idempotent-replayed']).toBeUndefined();
        expect(count('server-error')).toBe(2);
        const c = key();
        await post('/responses/crash', c).expect(500);
        await post('/responses/crash', c).expect(500);
        expect(count('crash')).toBe(2);
      });

      it('stores a non-HTTP error as its 500 when storeIf says so, so the handler never runs twice', async () => {
        const k = key();
        const first = await post('/responses/never-twice', k).expect(500);
        expect(first.headers['idempotent-replayed']).toBeUndefined();
        const again = await post('/responses/never-twice', k).expect(500);
        expect(again.headers['idempotent-replayed']).toBe('true');
        expect(again.body).toEqual(first.body);
        expect(count('never-twice')).toBe(1);
      });

      it('gives storeIf the status, and the error when the handler threw', async () => {
        await post('/responses/store-if-args', key()).send({}).expect(201);
        await post('/responses/store-if-args', key()).send({ fail: true }).expect(422);
        expect(storeIfCalls).toEqual([
          { status: 201, error: undefined },
          { status: 422, error: 'UnprocessableEntityException' },
        ]);
      });

      it('stores what storeIf allows', async () => {
        const k = key();
        await post('/responses/stored-500', k).expect(500);
        const again = await post('/responses/stored-500', k).expect(500);
        expect(again.headers['idempotent-replayed']).toBe('true');
        expect(count('stored-500')).toBe(1);
      });
    });

    describe('responses that cannot be stored', () => {
      /**
       * A handler that writes the response itself (`@Res()`) answers before its record settles, so
       * a retry sent at once may meet the record still in flight: retried while it answers
       * IDEMPOTENCY_REQUEST_IN_PROGRESS, for 2 s at most.
       */
      const settled = async (send: () => request.Test) => {
        const deadline = Date.now() + 2_000;
        for (;;) {
          const res = await send();
          if (res.body?.code !== 'IDEMPOTENCY_REQUEST_IN_PROGRESS' || Date.now() > deadline) {
            return res;
          }
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      };

      it.each([
        ['a StreamableFile', '/responses/stream-once', 'stream-once'],
        ['@Res() without passthrough', '/responses/raw-once', 'raw-once'],
        ['a body over maxResponseBytes', '/responses/big-once', 'big-once'],
      ])(
        'sends %s once; a retry gets 409 IDEMPOTENCY_RESPONSE_NOT_REPLAYABLE and the handler does not run again',
        async (_name, path, handler) => {
          const k = key();
          const first = await post(path, k).buffer(true).expect(201);
          expect(bodyText(first)).toContain('1');
          const again = await settled(() => post(path, k));
          expect(again.status).toBe(409);
          expect(again.headers['content-type']).toMatch(PROBLEM);
          expect(again.body.code).toBe('IDEMPOTENCY_RESPONSE_NOT_REPLAYABLE');
          expect(again.headers['idempotent-replayed']).toBeUndefined();
          expect(count(handler)).toBe(1);
        },
      );

      it.each([
        ['a StreamableFile', '/responses/stream', 'stream'],
        ['@Res() without passthrough', '/responses/raw', 'raw'],
        ['a body over maxResponseBytes', '/responses/big', 'big'],
      ])(
        'sends %s and releases the key with unreplayable: release',
        async (_name, path, handler) => {
          const k = key();
          const first = await post(path, k).buffer(true).expect(201);
          expect(bodyText(first)).toContain('1');
          const again = await settled(() => post(path, k));
          expect(again.status).toBe(201);
          expect(again.headers['idempotent-replayed']).toBeUndefined();
          expect(count(handler)).toBe(2);
        },
      );
    });

    describe('concurrency', () => {
      it('answers 409 with Retry-After to a duplicate while the first is in flight', async () => {
        const k = key();
        const pending = post('/orders', k)
          .send({ gate: `g-${k}` })
          .then((r) => r);
        await waitFor(() => count('create') === 1);
        const res = await post('/orders', k)
          .send({ gate: `g-${k}` })
          .expect(409);
        expect(res.headers['content-type']).toMatch(PROBLEM);
        expect(res.body.code).toBe('IDEMPOTENCY_REQUEST_IN_PROGRESS');
        expect(Number(res.headers['retry-after'])).toBeGreaterThanOrEqual(1);
        // The retryAfter default (1 s), not the 30 s the lease still has to run.
        expect(res.headers['retry-after']).toBe('1');
        openGate(`g-${k}`);
        expect((await pending).status).toBe(201);
        const after = await post('/orders', k)
          .send({ gate: `g-${k}` })
          .expect(201);
        expect(after.headers['idempotent-replayed']).toBe('true');
        expect(count('create')).toBe(1);
      });

      it('runs the handler once for 50 simultaneous requests with one key (reject mode)', async () => {
        const k = key();
        let answered = 0;
        const pending = Array.from({ length: 50 }, () =>
          post('/orders', k)
            .send({ sku: 'x', gate: `g-${k}` })
            .then((r) => {
              answered++;
              return r;
            }),
        );
        // The one handler that runs holds until the other 49 have their answer, so none of them can
        // arrive after it finished and be replayed instead: the outcome does not depend on timing.
        await waitFor(() => answered === 49, 15_000);
        openGate(`g-${k}`);
        const responses = await Promise.all(pending);
        const statuses = responses.map((r) => r.status);
        expect(count('create')).toBe(1);
        expect(statuses.filter((s) => s === 201)).toHaveLength(1);
        expect(statuses.filter((s) => s === 409)).toHaveLength(49);
      });
    });
  },
);

function waitFor(condition: () => boolean, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const check = () => {
      if (condition()) return resolve();
      if (Date.now() > deadline) return reject(new Error('condition not met in time'));
      setTimeout(check, 5);
    };
    check();
  });
}

function bodyText(res: request.Response): string {
  return res.text ?? Buffer.from(res.body as Buffer).toString();
}

function openGate(name: string): void {
  gates.get(name)?.();
}
