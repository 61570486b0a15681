import { ApolloDriver } from '@nestjs/apollo';
import type { INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { GraphqlAppModule, type GraphqlAppConfig, type StoreSpec } from './app';
import { type Child, freePort, killAllChildren, spawnChild } from '../utils/processes';
import { describeWithServer } from '../utils/services';

/**
 * @Idempotent() on GraphQL mutations, code first, over real HTTP: Apollo on Express, run in this
 * process, and Mercurius on Fastify, run as a child process (test/graphql/mercurius-app.ts: Jest
 * cannot load mercurius on Node 20, see there). Every case runs on both, with the memory store and
 * with Redis.
 */

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const withRedis = (await describeWithServer('Redis', REDIS_URL)) === describe;

afterAll(() => killAllChildren());
const schemaDir = mkdtempSync(join(tmpdir(), 'idempotency-graphql-'));
afterAll(() => rmSync(schemaDir, { recursive: true, force: true }));

/** A running GraphQL app. */
interface GraphqlApp {
  url: string;
  close(): Promise<unknown>;
}

type Driver = 'apollo' | 'mercurius';

type AppOptions = Pick<GraphqlAppConfig, 'store' | 'schemaFile' | 'refused'>;

async function startApollo(options: AppOptions): Promise<GraphqlApp> {
  const moduleRef = await Test.createTestingModule({
    imports: [
      GraphqlAppModule.forRoot({
        ...options,
        driver: ApolloDriver,
        // Apollo adds stack traces to errors outside production; the replay has its own.
        driverOptions: { includeStacktraceInErrorResponses: false },
      }),
    ],
  }).compile();
  const app: INestApplication = moduleRef.createNestApplication({
    logger: process.env.E2E_LOG ? undefined : false,
  });
  await app.listen(0, '127.0.0.1');
  const { port } = app.getHttpServer().address() as { port: number };
  return { url: `http://127.0.0.1:${port}`, close: () => app.close() };
}

function spawnMercurius(options: AppOptions, port: number): Child {
  const { store } = options;
  return spawnChild(
    `mercurius-app:${store.kind}`,
    process.execPath,
    [
      '-r',
      'ts-node/register/transpile-only',
      '-r',
      'tsconfig-paths/register',
      'test/graphql/mercurius-app.ts',
    ],
    {
      env: {
        ...process.env,
        GRAPHQL_APP_PORT: String(port),
        GRAPHQL_APP_STORE: store.kind,
        ...(store.kind === 'redis'
          ? { GRAPHQL_APP_REDIS_URL: store.url, GRAPHQL_APP_REDIS_PREFIX: store.prefix }
          : {}),
        ...(options.schemaFile ? { GRAPHQL_APP_SCHEMA_FILE: options.schemaFile } : {}),
        ...(options.refused ? { GRAPHQL_APP_REFUSED: options.refused } : {}),
      },
    },
  );
}

async function startMercurius(options: AppOptions): Promise<GraphqlApp> {
  const port = await freePort();
  const child = spawnMercurius(options, port);
  await child.waitForOutput(/graphql-app listening/);
  return { url: `http://127.0.0.1:${port}`, close: () => child.stop() };
}

const start = (driver: Driver, options: AppOptions) =>
  driver === 'apollo' ? startApollo(options) : startMercurius(options);

/** One GraphQL response, as the client reads it. */
interface GraphqlResponse {
  /** The HTTP status. */
  status: number;
  replayed: boolean;
  data: Record<string, unknown> | null;
  errors?: {
    message: string;
    path?: (string | number)[];
    extensions?: Record<string, unknown>;
  }[];
}

async function post(
  app: GraphqlApp,
  query: string,
  headers: Record<string, string> = {},
): Promise<GraphqlResponse> {
  const res = await request(app.url).post('/graphql').set(headers).send({ query });
  return {
    status: res.status,
    replayed: res.headers['idempotent-replayed'] === 'true',
    data: (res.body as { data?: Record<string, unknown> | null }).data ?? null,
    errors: (res.body as { errors?: GraphqlResponse['errors'] }).errors,
  };
}

const runs = async (app: GraphqlApp, label: string): Promise<number> => {
  const { data } = await post(app, `{ runs(label: ${JSON.stringify(label)}) }`);
  return data!.runs as number;
};

const STORES: [string, () => StoreSpec][] = [
  ['memory', () => ({ kind: 'memory' })],
  ...(withRedis
    ? [
        [
          'redis',
          () => ({ kind: 'redis', url: REDIS_URL, prefix: `graphql:${randomUUID()}:` }),
        ] as [string, () => StoreSpec],
      ]
    : []),
];

const DRIVERS: [Driver, string][] = [
  ['apollo', 'Apollo on Express'],
  ['mercurius', 'Mercurius on Fastify'],
];

const CASES = DRIVERS.flatMap(([driver, platform]) =>
  STORES.map(([storeName, store]) => ({ driver, platform, storeName, store })),
);

describe.each(CASES)(
  'GraphQL mutations ($platform, $storeName store)',
  ({ driver, storeName, store }) => {
    let app: GraphqlApp;
    const schemaFile = join(schemaDir, `${driver}-${storeName}.gql`);
    const key = () => `key-${randomUUID()}`;
    const sku = () => `sku-${randomUUID()}`;
    const placeOrder = (s: string, quantity = 1, extra = '') =>
      `mutation { placeOrder(sku: "${s}", quantity: ${quantity}${extra}) { id sku quantity run placedAt } }`;

    beforeAll(async () => {
      app = await start(driver, { store: store(), schemaFile });
    }, 90_000);
    afterAll(() => app?.close());

    describe('keys', () => {
      it('runs once for a key in the header and replays the stored result with Idempotent-Replayed', async () => {
        const k = key();
        const s = sku();
        const first = await post(app, placeOrder(s), { 'Idempotency-Key': k });
        expect(first.errors).toBeUndefined();
        expect(first.data!.placeOrder).toEqual({
          id: expect.any(String),
          sku: s,
          quantity: 1,
          run: 1,
          placedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
        });
        expect(first.replayed).toBe(false);
        const again = await post(app, placeOrder(s), { 'Idempotency-Key': k });
        expect(again.status).toBe(200);
        expect(again.data).toEqual(first.data);
        expect(again.replayed).toBe(true);
        expect(await runs(app, `placeOrder:${s}`)).toBe(1);
      });

      it('takes the key from the idempotencyKey argument, and accepts it in both places when they agree', async () => {
        const k = key();
        const s = sku();
        const query = placeOrder(s, 2, `, idempotencyKey: "${k}"`);
        const first = await post(app, query);
        expect(first.errors).toBeUndefined();
        const again = await post(app, query);
        expect(again.data).toEqual(first.data);
        expect(again.replayed).toBe(true);
        const both = await post(app, query, { 'Idempotency-Key': k });
        expect(both.data).toEqual(first.data);
        expect(await runs(app, `placeOrder:${s}`)).toBe(1);
      });

      it('refuses a header and an argument that disagree, running nothing', async () => {
        const s = sku();
        const res = await post(app, placeOrder(s, 1, `, idempotencyKey: "${key()}"`), {
          'Idempotency-Key': key(),
        });
        expect(res.data).toBeNull();
        expect(res.errors).toEqual([
          expect.objectContaining({
            message: expect.stringContaining('hold different keys'),
            path: ['placeOrder'],
            extensions: { code: 'IDEMPOTENCY_KEY_INVALID', status: 400 },
          }),
        ]);
        expect(await runs(app, `placeOrder:${s}`)).toBe(0);
      });

      it('answers IDEMPOTENCY_KEY_MISSING without a key, naming where to send one', async () => {
        const s = sku();
        const res = await post(app, placeOrder(s));
        expect(res.errors).toEqual([
          expect.objectContaining({
            message:
              'This mutation requires an idempotency key: the Idempotency-Key header or the idempotencyKey argument.',
            path: ['placeOrder'],
            extensions: { code: 'IDEMPOTENCY_KEY_MISSING', status: 400 },
          }),
        ]);
        const slow = await post(app, 'mutation { slowOrder(gate: "never", sku: "x") { id } }');
        expect(slow.errors?.[0].message).toBe(
          'This mutation requires an idempotency key in the Idempotency-Key header.',
        );
        expect(await runs(app, `placeOrder:${s}`)).toBe(0);
        expect(await runs(app, 'slowOrder:x')).toBe(0);
      });

      it.each([
        ['longer than 255 characters', 'k'.repeat(256)],
        ['not printable ASCII', 'clé'],
        ['an unterminated quoted string', '"abc'],
      ])('answers IDEMPOTENCY_KEY_INVALID for a header key %s', async (_what, bad) => {
        const s = sku();
        const res = await post(app, placeOrder(s), { 'Idempotency-Key': bad });
        expect(res.errors?.[0].extensions).toEqual({
          code: 'IDEMPOTENCY_KEY_INVALID',
          status: 400,
        });
        expect(await runs(app, `placeOrder:${s}`)).toBe(0);
      });

      it('answers IDEMPOTENCY_KEY_INVALID for an argument key that is not printable ASCII', async () => {
        const s = sku();
        const res = await post(app, placeOrder(s, 1, ', idempotencyKey: ""'));
        expect(res.errors?.[0].extensions?.code).toBe('IDEMPOTENCY_KEY_INVALID');
        expect(await runs(app, `placeOrder:${s}`)).toBe(0);
      });

      it('reads key: { path } from the arguments only, and leaves it out of the fingerprint', async () => {
        const label = sku();
        const requestId = key();
        const pay = (amount: number, id?: string) =>
          `mutation { pay(input: { ${id ? `requestId: "${id}", ` : ''}amount: ${amount}, label: "${label}" }) { id amount run } }`;
        const first = await post(app, pay(5, requestId));
        expect(first.errors).toBeUndefined();
        const again = await post(app, pay(5, requestId));
        expect(again.data).toEqual(first.data);
        expect(again.replayed).toBe(true);
        const headerOnly = await post(app, pay(5), { 'Idempotency-Key': requestId });
        expect(headerOnly.errors?.[0]).toMatchObject({
          message: 'This mutation requires an idempotency key in its argument input.requestId.',
          extensions: { code: 'IDEMPOTENCY_KEY_MISSING' },
        });
        const reused = await post(app, pay(6, requestId));
        expect(reused.errors?.[0].extensions?.code).toBe('IDEMPOTENCY_KEY_REUSED');
        expect(await runs(app, `pay:${label}`)).toBe(1);
      });
    });

    describe('fingerprint and scope', () => {
      it('answers IDEMPOTENCY_KEY_REUSED for the key with other arguments, and runs nothing', async () => {
        const k = key();
        const s = sku();
        await post(app, placeOrder(s, 1), { 'Idempotency-Key': k });
        const reused = await post(app, placeOrder(s, 2), { 'Idempotency-Key': k });
        expect(reused.data).toBeNull();
        expect(reused.errors).toEqual([
          expect.objectContaining({
            message:
              'This idempotency key was already used for a request with a different payload.',
            path: ['placeOrder'],
            extensions: { code: 'IDEMPOTENCY_KEY_REUSED', status: 422 },
          }),
        ]);
        expect(reused.replayed).toBe(false);
        expect(await runs(app, `placeOrder:${s}`)).toBe(1);
      });

      it('keeps one record per field of an operation that shares a header key, aliases included', async () => {
        const k = key();
        const s = sku();
        const other = sku();
        const query = `mutation {
          first: placeOrder(sku: "${s}", quantity: 1) { id run }
          second: placeOrder(sku: "${s}", quantity: 1) { id run }
          third: placeOrder(sku: "${other}", quantity: 3) { id run }
        }`;
        const first = await post(app, query, { 'Idempotency-Key': k });
        expect(first.errors).toBeUndefined();
        const { first: a, second: b } = first.data as Record<string, { id: string; run: number }>;
        expect(a.id).not.toBe(b.id);
        expect([a.run, b.run]).toEqual([1, 2]);
        const again = await post(app, query, { 'Idempotency-Key': k });
        expect(again.data).toEqual(first.data);
        expect(again.replayed).toBe(true);
        expect(await runs(app, `placeOrder:${s}`)).toBe(2);
        expect(await runs(app, `placeOrder:${other}`)).toBe(1);
      });

      it("never replays one principal's result to another", async () => {
        const k = key();
        const s = sku();
        const alice = await post(app, placeOrder(s), { 'Idempotency-Key': k, 'X-User': 'alice' });
        const bob = await post(app, placeOrder(s), { 'Idempotency-Key': k, 'X-User': 'bob' });
        expect(bob.replayed).toBe(false);
        expect(bob.data).not.toEqual(alice.data);
        const aliceAgain = await post(app, placeOrder(s), {
          'Idempotency-Key': k,
          'X-User': 'alice',
        });
        expect(aliceAgain.data).toEqual(alice.data);
        expect(await runs(app, `placeOrder:${s}`)).toBe(2);
      });
    });

    describe('errors of the mutation', () => {
      const failOrder = (mode: string, s: string) =>
        `mutation { failOrder(mode: "${mode}", sku: "${s}") { id } }`;

      it.each([
        ['an HttpException below 500', 'http'],
        ['a GraphQLError with a code', 'graphql'],
      ])('stores %s and replays it as the same error', async (_what, mode) => {
        const k = key();
        const s = sku();
        const first = await post(app, failOrder(mode, s), { 'Idempotency-Key': k });
        expect(first.errors).toHaveLength(1);
        expect(first.errors![0].message).toContain(s);
        if (mode === 'graphql') {
          expect(first.errors![0].extensions).toMatchObject({
            code: 'CARD_DECLINED',
            declineCode: 'insufficient_funds',
          });
        }
        const again = await post(app, failOrder(mode, s), { 'Idempotency-Key': k });
        expect(again.errors).toEqual(first.errors);
        expect(again.data).toEqual(first.data);
        expect(again.replayed).toBe(true);
        expect(await runs(app, `failOrder:${s}`)).toBe(1);
      });

      it('releases the key after any other error, so a retry runs again', async () => {
        const k = key();
        const s = sku();
        const first = await post(app, failOrder('crash', s), { 'Idempotency-Key': k });
        expect(first.errors?.[0].message).toBe(`The gateway timed out for ${s}`);
        const again = await post(app, failOrder('crash', s), { 'Idempotency-Key': k });
        expect(again.errors?.[0].message).toBe(`The gateway timed out for ${s}`);
        expect(again.replayed).toBe(false);
        expect(await runs(app, `failOrder:${s}`)).toBe(2);
      });
    });

    describe('concurrency', () => {
      it('runs a 50-way race of one key once; the others are told it is in progress', async () => {
        const k = key();
        const s = sku();
        const gate = `gate-${randomUUID()}`;
        const query = `mutation { slowOrder(gate: "${gate}", sku: "${s}") { id run } }`;
        const settled: GraphqlResponse[] = [];
        const all = Array.from({ length: 50 }, () =>
          post(app, query, { 'Idempotency-Key': k }).then((res) => {
            settled.push(res);
            return res;
          }),
        );
        // The winner waits at its gate until the 49 others have their answer.
        const deadline = Date.now() + 30_000;
        while (settled.length < 49 && Date.now() < deadline) {
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        expect(settled).toHaveLength(49);
        for (const refused of settled) {
          expect(refused.data).toBeNull();
          expect(refused.errors).toEqual([
            expect.objectContaining({
              path: ['slowOrder'],
              extensions: {
                code: 'IDEMPOTENCY_REQUEST_IN_PROGRESS',
                status: 409,
                retryAfterMs: expect.any(Number),
              },
            }),
          ]);
          expect(refused.errors![0].extensions!.retryAfterMs).toBeGreaterThan(0);
        }
        await post(app, `mutation { openGate(name: "${gate}") }`);
        const results = await Promise.all(all);
        const winners = results.filter((res) => res.data !== null);
        expect(winners).toHaveLength(1);
        expect(winners[0].errors).toBeUndefined();
        expect(await runs(app, `slowOrder:${s}`)).toBe(1);
        const retry = await post(app, query, { 'Idempotency-Key': k });
        expect(retry.data).toEqual(winners[0].data);
        expect(retry.replayed).toBe(true);
      }, 60_000);
    });

    describe('what is never covered', () => {
      it('leaves queries and nested field resolvers of an @Idempotent() resolver alone', async () => {
        const s = sku();
        const query = `{ recentOrders(sku: "${s}") { id run summary } }`;
        const first = await post(app, query);
        const second = await post(app, query, { 'Idempotency-Key': key() });
        expect(first.errors).toBeUndefined();
        expect(second.replayed).toBe(false);
        expect(await runs(app, `recentOrders:${s}`)).toBe(2);
        expect(await runs(app, `summary:${s}`)).toBe(2);
      });

      it('runs the nested fields of a replayed mutation again: only the mutation is replayed', async () => {
        const k = key();
        const s = sku();
        const query = `mutation { placeOrder(sku: "${s}", quantity: 4) { id summary } }`;
        const first = await post(app, query, { 'Idempotency-Key': k });
        const again = await post(app, query, { 'Idempotency-Key': k });
        expect(again.data).toEqual(first.data);
        expect((first.data!.placeOrder as { summary: string }).summary).toBe(`4 x ${s}`);
        expect(await runs(app, `placeOrder:${s}`)).toBe(1);
        expect(await runs(app, `summary:${s}`)).toBe(2);
      });

      it('leaves undecorated mutations alone: no key needed, every call runs', async () => {
        const label = sku();
        const query = `mutation { plainCounter(label: "${label}") }`;
        const k = key();
        const results = [await post(app, query), await post(app, query, { 'Idempotency-Key': k })];
        results.push(await post(app, query, { 'Idempotency-Key': k }));
        expect(results.map((res) => res.data)).toEqual([
          { plainCounter: 1 },
          { plainCounter: 2 },
          { plainCounter: 3 },
        ]);
      });
    });

    describe('the schema', () => {
      const introspection = `{ __schema {
        mutationType { fields { name description } }
        queryType { fields { name description } }
      } }`;
      type Fields = { fields: { name: string; description: string | null }[] };

      it('notes in the description of each covered mutation where its key goes', async () => {
        const { data } = await post(app, introspection);
        const schema = data!.__schema as { mutationType: Fields; queryType: Fields };
        const descriptions = Object.fromEntries(
          schema.mutationType.fields.map((field) => [field.name, field.description]),
        );
        expect(descriptions.placeOrder).toBe(
          'Places an order.\n\nIdempotent: send a unique key (1 to 255 printable ASCII characters) in the `Idempotency-Key` header or the `idempotencyKey` argument. A retry with the same key and arguments returns the first result without running the mutation again.',
        );
        expect(descriptions.slowOrder).toContain('in the `Idempotency-Key` header. A retry');
        expect(descriptions.pay).toContain('in the argument `input.requestId`.');
        expect(descriptions.plainCounter).toBeNull();
        expect(descriptions.openGate).toBeNull();
        for (const field of schema.queryType.fields) {
          expect(field.description).toBeNull();
        }
      });

      it('writes the note into the generated schema file', () => {
        const sdl = readFileSync(schemaFile, 'utf8');
        expect(sdl).toContain(
          '  """\n  Places an order.\n  \n  Idempotent: send a unique key (1 to 255 printable ASCII characters) in the `Idempotency-Key` header or the `idempotencyKey` argument.',
        );
        expect(sdl.match(/Idempotent: /g)).toHaveLength(4);
      });
    });
  },
);

describe.each(DRIVERS)('GraphQL mutations: failures (%s)', (driver) => {
  it('answers IDEMPOTENCY_STORE_UNAVAILABLE when the store fails, and runs nothing', async () => {
    const app = await start(driver, { store: { kind: 'broken' } });
    try {
      const s = `sku-${randomUUID()}`;
      const res = await post(app, `mutation { placeOrder(sku: "${s}", quantity: 1) { id } }`, {
        'Idempotency-Key': 'down',
      });
      expect(res.data).toBeNull();
      expect(res.errors).toEqual([
        expect.objectContaining({
          message:
            'The request was not processed because its idempotency could not be guaranteed; retry later.',
          path: ['placeOrder'],
          extensions: { code: 'IDEMPOTENCY_STORE_UNAVAILABLE', status: 503 },
        }),
      ]);
      expect(await runs(app, `placeOrder:${s}`)).toBe(0);
    } finally {
      await app.close();
    }
  }, 90_000);

  it.each([
    [
      '@Idempotent() on a query, naming the resolver and the field',
      'query' as const,
      /@Idempotent\(\) on IdempotentQueryResolver\.latestOrder: the GraphQL field Query\.latestOrder is a query; only root mutation fields can be idempotent/,
    ],
    [
      'an invalid option on a mutation, naming the resolver, the handler and the option',
      'option' as const,
      /nestjs-idempotency: @Idempotent\(\) on InvalidOptionResolver\.refund: option "ttl" must be/,
    ],
  ])(
    'refuses to start with %s',
    async (_what, refused, message) => {
      if (driver === 'apollo') {
        await expect(startApollo({ store: { kind: 'memory' }, refused })).rejects.toThrow(message);
        return;
      }
      const child = spawnMercurius({ store: { kind: 'memory' }, refused }, await freePort());
      const exit = await child.exited;
      expect(exit.code).toBe(1);
      expect(child.stderr).toMatch(message);
      expect(child.stdout).not.toContain('graphql-app listening');
    },
    90_000,
  );
});
