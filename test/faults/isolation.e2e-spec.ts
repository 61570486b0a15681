import type { INestApplication } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { randomBytes, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { IdempotencyModule, type IdempotencyStore } from 'nestjs-idempotency';
import { RedisIdempotencyStore } from 'nestjs-idempotency/redis';
import {
  CreateIdempotencyRecordsTable1763800000000,
  TypeOrmIdempotencyStore,
} from 'nestjs-idempotency/typeorm';
import request from 'supertest';
import { DataSource } from 'typeorm';
import { createApp, delay, PLATFORMS, type Platform } from '../http/platforms';
import {
  createTemporaryDatabase,
  POSTGRES_URL,
  REDIS_URL,
  type TemporaryDatabase,
} from '../utils/databases';
import { describeWithServer } from '../utils/services';
import {
  BearerAuthGuard,
  executions,
  gates,
  profiles,
  secrets,
  StatementsController,
  UnauthorizedProblemFilter,
  waiting,
} from './isolation/isolation.app';
import { recordOutcome } from './outcomes';

/**
 * Isolation between users: with header-based authentication, user B sending user A's key (same
 * body, same route) gets an execution of its own and never A's response, under the default scope,
 * scope 'user' and a custom scope; and what the store keeps of a response holds no Set-Cookie, no
 * Authorization header and no credential, read raw from Redis and from PostgreSQL.
 */

const withRedis = (await describeWithServer('Redis', REDIS_URL)) === describe;
const withPostgres = (await describeWithServer('PostgreSQL', POSTGRES_URL)) === describe;

/** What a store holds for one record, read without the library. */
interface RawRecord {
  /** The stored response headers. */
  headers: Record<string, unknown>;
  /** Everything the backend holds for the record (key name included), serialized. */
  dump: string;
}

interface Harness {
  store: IdempotencyStore;
  raw(storageKey: string): Promise<RawRecord | undefined>;
  close(): Promise<void>;
}

function redisHarness(): Harness {
  const client = new Redis(REDIS_URL);
  const keyPrefix = `fault-isolation:${randomUUID()}:`;
  return {
    store: new RedisIdempotencyStore({ client, keyPrefix }),
    raw: async (storageKey) => {
      const name = `${keyPrefix}{${storageKey}}`;
      const hash = await client.hgetall(name);
      if (!hash.r) {
        return undefined;
      }
      const response = JSON.parse(hash.r) as { headers: Record<string, unknown> };
      return { headers: response.headers, dump: JSON.stringify({ name, hash }) };
    },
    close: async () => {
      const names = await client.keys(`${keyPrefix}*`);
      if (names.length > 0) {
        await client.del(...names);
      }
      await client.quit();
    },
  };
}

/** The TypeORM store in a PostgreSQL database of its own, dropped afterwards. */
async function postgresHarness(): Promise<Harness> {
  const database: TemporaryDatabase = await createTemporaryDatabase('postgres', 'fault_isolation');
  const dataSource = new DataSource({
    type: 'postgres',
    url: database.url,
    migrations: [CreateIdempotencyRecordsTable1763800000000],
  });
  await dataSource.initialize();
  await dataSource.runMigrations();
  return {
    store: new TypeOrmIdempotencyStore({ dataSource, purgeIntervalMs: 0 }),
    raw: async (storageKey) => {
      const rows: Record<string, unknown>[] = await dataSource.query(
        'SELECT * FROM idempotency_records WHERE storage_key = $1',
        [storageKey],
      );
      const [row] = rows;
      if (!row || row.response_headers == null) {
        return undefined;
      }
      return {
        headers: JSON.parse(String(row.response_headers)) as Record<string, unknown>,
        dump: JSON.stringify(row),
      };
    },
    close: async () => {
      await dataSource.destroy();
      await database.drop();
    },
  };
}

const STORES: { store: string; harness: () => Harness | Promise<Harness> }[] = [
  ...(withRedis ? [{ store: 'Redis', harness: redisHarness }] : []),
  ...(withPostgres ? [{ store: 'TypeORM on PostgreSQL', harness: postgresHarness }] : []),
];
const CASES = PLATFORMS.flatMap((platform) => STORES.map((entry) => ({ platform, ...entry })));

const SCOPES = [
  { scope: 'the default scope (endpoint + principal)', route: '/statements' },
  { scope: "scope 'user'", route: '/statements/user' },
  { scope: 'a custom scope function', route: '/statements/custom' },
];

/** Figures of the whole file, for recordOutcome once every case has passed. */
const figures = {
  /** Tests that reached their end, every assertion passed. */
  testsPassed: 0,
  crossUserRequests: 0,
  crossUserReplaysOfAnotherUser: 0,
  inFlightCrossUserRequests: 0,
  handlerExecutions: 0,
  unauthenticatedRequests: 0,
  recordsReadRaw: 0,
  forbiddenFindingsInRecords: 0,
  replaysWithSetCookie: 0,
};

describe.each(CASES)('Isolation between users ($platform, $store store)', (entry) => {
  let harness: Harness;
  let app: INestApplication;
  let url: string;
  /** Storage keys the interceptor completed, in order. */
  const completed: string[] = [];
  let alice: string;
  let bob: string;

  beforeAll(async () => {
    harness = await entry.harness();
    const complete = harness.store.complete.bind(harness.store);
    harness.store.complete = (options) => {
      completed.push(options.key);
      return complete(options);
    };
    ({ app, url } = await createApp(entry.platform as Platform, {
      imports: [IdempotencyModule.forRoot({ store: harness.store })],
      controllers: [StatementsController],
      providers: [BearerAuthGuard, { provide: APP_FILTER, useClass: UnauthorizedProblemFilter }],
    }));
  });

  afterAll(async () => {
    await app?.close();
    await harness?.close();
  });

  beforeEach(() => {
    // Users of this test only: their names are also their bearer tokens.
    alice = `alice-${randomBytes(6).toString('hex')}`;
    bob = `bob-${randomBytes(6).toString('hex')}`;
    profiles.set(alice, { name: 'Alice', email: 'alice@example.com' });
    profiles.set(bob, { name: 'Bob', email: 'bob@example.com' });
    executions.clear();
    secrets.cookie = `cookie-${randomBytes(8).toString('hex')}`;
    secrets.token = `issued-${randomBytes(8).toString('hex')}`;
  });

  const post = (route: string, user: string | undefined, key: string, body: object) => {
    const req = request(url).post(route).set('Idempotency-Key', key);
    return (user === undefined ? req : req.set('Authorization', `Bearer ${user}`)).send(body);
  };
  const runs = () => ({ alice: executions.get(alice) ?? 0, bob: executions.get(bob) ?? 0 });

  it.each(SCOPES)(
    "user B sending user A's key gets an execution of its own, never A's response ($scope)",
    async ({ route }) => {
      const key = randomUUID();
      const body = { note: 'the same body' };
      const a1 = await post(route, alice, key, body).expect(201);
      expect(a1.headers['idempotent-replayed']).toBeUndefined();
      expect(a1.body).toMatchObject({ name: 'Alice', email: 'alice@example.com', run: 1 });

      const b1 = await post(route, bob, key, body).expect(201);
      figures.crossUserRequests++;
      expect(b1.headers['idempotent-replayed']).toBeUndefined();
      expect(b1.body).toMatchObject({ name: 'Bob', email: 'bob@example.com', run: 1 });
      expect(JSON.stringify(b1.body)).not.toContain('alice');
      expect(b1.headers.location).toBe('/statements/bob-1');
      expect(b1.headers['x-account-region']).toBe('region-of-bob');

      // Each user's retry replays their own answer.
      const a2 = await post(route, alice, key, body).expect(201);
      expect(a2.headers['idempotent-replayed']).toBe('true');
      expect(a2.body).toEqual(a1.body);
      expect(a2.headers.location).toBe(a1.headers.location);
      const b2 = await post(route, bob, key, body).expect(201);
      figures.crossUserRequests++;
      expect(b2.headers['idempotent-replayed']).toBe('true');
      expect(b2.body).toEqual(b1.body);
      expect(b2.headers['x-account-region']).toBe('region-of-bob');
      expect(runs()).toEqual({ alice: 1, bob: 1 });

      // No credentials: refused before the interceptor, so nothing runs and nothing replays.
      const anonymous = await post(route, undefined, key, body).expect(401);
      const badScheme = await request(url)
        .post(route)
        .set('Idempotency-Key', key)
        .set('Authorization', `Basic ${Buffer.from(`${alice}:x`).toString('base64')}`)
        .send(body)
        .expect(401);
      figures.unauthenticatedRequests += 2;
      for (const refused of [anonymous, badScheme]) {
        expect(refused.headers['content-type']).toMatch(/^application\/problem\+json/);
        expect(refused.body.code).toBe('UNAUTHORIZED');
        expect(refused.headers['idempotent-replayed']).toBeUndefined();
      }
      expect(runs()).toEqual({ alice: 1, bob: 1 });

      for (const answer of [b1, b2]) {
        if (JSON.stringify(answer.body).includes('Alice')) {
          figures.crossUserReplaysOfAnotherUser++;
        }
      }
      figures.handlerExecutions += runs().alice + runs().bob;
      figures.testsPassed++;
    },
  );

  it("is not held back by A's request in flight with the same key: B runs, A's duplicate gets 409", async () => {
    const key = randomUUID();
    const body = { note: 'held', hold: true };
    let open!: () => void;
    gates.set(
      alice,
      new Promise<void>((resolve) => {
        open = resolve;
      }),
    );
    try {
      const first = post('/statements', alice, key, body).then((res) => res);
      for (let i = 0; i < 400 && !waiting.has(alice); i++) {
        await delay(5);
      }
      expect(waiting.has(alice)).toBe(true);

      const b = await post('/statements', bob, key, body).expect(201);
      figures.inFlightCrossUserRequests++;
      expect(b.body).toMatchObject({ name: 'Bob', run: 1 });
      expect(b.headers['idempotent-replayed']).toBeUndefined();
      const duplicate = await post('/statements', alice, key, body).expect(409);
      expect(duplicate.body.code).toBe('IDEMPOTENCY_REQUEST_IN_PROGRESS');

      open();
      const a = await first;
      expect(a.status).toBe(201);
      expect(a.body).toMatchObject({ name: 'Alice', run: 1 });
      expect(runs()).toEqual({ alice: 1, bob: 1 });
      figures.handlerExecutions += runs().alice + runs().bob;
      figures.testsPassed++;
    } finally {
      open?.();
      gates.delete(alice);
    }
  });

  it.each(SCOPES)(
    'stores no Set-Cookie, no Authorization header and no credential, but Location and the allowed header; a replay sets no cookie ($scope)',
    async ({ route }) => {
      const key = randomUUID();
      const body = { note: 'read the record' };
      const first = await post(route, alice, key, body).expect(201);
      // The first answer carries everything the handler set.
      expect(String(first.headers['set-cookie'])).toContain(secrets.cookie);
      expect(first.headers.authorization).toBe(`Bearer ${secrets.token}-1`);
      expect(first.headers['x-unlisted']).toBe('not-replayed-1');

      const raw = await harness.raw(completed.at(-1)!);
      expect(raw).toBeDefined();
      figures.recordsReadRaw++;
      const { headers, dump } = raw!;
      expect(headers).toMatchObject({
        location: '/statements/alice-1',
        'x-account-region': 'region-of-alice',
      });
      const names = Object.keys(headers).map((name) => name.toLowerCase());
      const forbidden = [
        ...['set-cookie', 'authorization', 'x-unlisted'].filter((name) => names.includes(name)),
        ...[
          'set-cookie',
          'authorization',
          'bearer',
          secrets.cookie,
          secrets.token,
          alice,
          bob,
        ].filter((text) => dump.toLowerCase().includes(text.toLowerCase())),
      ];
      figures.forbiddenFindingsInRecords += forbidden.length;
      expect(forbidden).toEqual([]);
      expect(dump).toContain('region-of-alice');

      const replay = await post(route, alice, key, body).expect(201);
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.body).toEqual(first.body);
      expect(replay.headers.location).toBe(first.headers.location);
      expect(replay.headers['x-account-region']).toBe('region-of-alice');
      if (replay.headers['set-cookie'] !== undefined) {
        figures.replaysWithSetCookie++;
      }
      expect(replay.headers['set-cookie']).toBeUndefined();
      expect(replay.headers.authorization).toBeUndefined();
      expect(replay.headers['x-unlisted']).toBeUndefined();
      expect(runs()).toEqual({ alice: 1, bob: 0 });
      figures.handlerExecutions += runs().alice + runs().bob;
      figures.testsPassed++;
    },
  );
});

const recordIfAllRan = CASES.length > 0 ? it : it.skip;

describe('Isolation outcome', () => {
  recordIfAllRan('records the figures of every platform and store', () => {
    // Every case passed all its tests: 3 cross-user, 1 in flight, 3 records read raw.
    expect(figures.testsPassed).toBe(CASES.length * (SCOPES.length * 2 + 1));
    expect(figures.recordsReadRaw).toBe(CASES.length * SCOPES.length);
    // One execution per user and key: 2 per cross-user test and in flight, 1 per record test.
    const expectedExecutions = CASES.length * (SCOPES.length * 2 + 2 + SCOPES.length);
    expect(figures.handlerExecutions).toBe(expectedExecutions);
    expect(figures.crossUserRequests).toBe(CASES.length * SCOPES.length * 2);
    expect(figures.inFlightCrossUserRequests).toBe(CASES.length);
    expect(figures.crossUserReplaysOfAnotherUser).toBe(0);
    expect(figures.forbiddenFindingsInRecords).toBe(0);
    expect(figures.replaysWithSetCookie).toBe(0);
    recordOutcome('isolation', {
      fault: "Another user's key; credentials in responses",
      trigger: `In-process apps with Bearer auth (${CASES.map((c) => `${c.platform} + ${c.store}`).join(', ')}): user B sends user A's key with the same body on routes scoped by endpoint, 'user' and a custom function, also while A's request is in flight; the handler sets Set-Cookie, Authorization and an allowed custom header; the stored record is read raw (Redis HGETALL, SQL SELECT).`,
      measured: {
        'platform x store combinations': CASES.length,
        'cross-user requests with the same key':
          figures.crossUserRequests + figures.inFlightCrossUserRequests,
        "answers naming the other user's data": figures.crossUserReplaysOfAnotherUser,
        'handler executions': figures.handlerExecutions,
        'expected executions (one per user and key)': expectedExecutions,
        'unauthenticated requests (401, nothing ran)': figures.unauthenticatedRequests,
        'records read raw': figures.recordsReadRaw,
        'Set-Cookie / Authorization / credentials found in records':
          figures.forbiddenFindingsInRecords,
        'replays carrying Set-Cookie': figures.replaysWithSetCookie,
      },
      outcome:
        "B never got A's response (each user runs once per key and replays only their own answer, under endpoint, 'user' and custom scopes, also while A's request is in flight); stored records hold Location and the allowed header but no Set-Cookie, Authorization or bearer token, and replays set no cookie.",
      file: 'test/faults/isolation.e2e-spec.ts',
    });
  });
});
