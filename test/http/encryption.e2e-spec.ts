import { Body, Controller, type INestApplication, Logger, Post, Res } from '@nestjs/common';
import { jest } from '@jest/globals';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import {
  type IdempotencyEncryptionOptions,
  IdempotencyModule,
  type IdempotencyModuleOptions,
  type IdempotencyStore,
  Idempotent,
  MemoryIdempotencyStore,
  type StoredResponse,
} from 'nestjs-idempotency';
import { RedisIdempotencyStore } from 'nestjs-idempotency/redis';
import {
  CreateIdempotencyRecordsTable1763800000000,
  TypeOrmIdempotencyStore,
} from 'nestjs-idempotency/typeorm';
import request from 'supertest';
import { DataSource, type DataSourceOptions } from 'typeorm';
import { describeWithServer } from '../utils/services';
import { sqliteAvailable } from '../utils/sqlite';
import { createApp, delay, PLATFORMS, type Platform } from './platforms';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const POSTGRES_URL =
  process.env.POSTGRES_URL ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const MYSQL_URL = process.env.MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test';
const withRedis = (await describeWithServer('Redis', REDIS_URL)) === describe;
const withPostgres = (await describeWithServer('PostgreSQL', POSTGRES_URL)) === describe;
const withMariaDb = (await describeWithServer('MariaDB', MYSQL_URL)) === describe;

/** Personal data that must never be readable in a store. */
const MARKER = `jane.doe+${randomUUID().slice(0, 8)}@example.com`;
const K1 = randomBytes(32);
const K2 = randomBytes(32).toString('base64');
const only1: IdempotencyEncryptionOptions = { keyId: 'k1', keys: { k1: K1 } };
const both2: IdempotencyEncryptionOptions = { keyId: 'k2', keys: { k1: K1, k2: K2 } };
const only2: IdempotencyEncryptionOptions = { keyId: 'k2', keys: { k2: K2 } };

let runs = 0;
let gate: Promise<void> | undefined;

@Controller('signups')
class SignupsController {
  @Post()
  @Idempotent()
  create(
    @Body() body: { email: string },
    @Res({ passthrough: true }) res: { header(name: string, value: string): unknown },
  ) {
    const run = ++runs;
    res.header('Location', `/signups/${run}?email=${body.email}`);
    return {
      run,
      email: body.email,
      at: new Date('2026-01-02T03:04:05.000Z'),
      avatar: Buffer.from(body.email),
    };
  }

  @Post('wait')
  @Idempotent({ concurrent: 'wait' })
  async waiting(@Body() body: { email: string }) {
    const run = ++runs;
    await gate;
    return { run, email: body.email };
  }
}

/** What a store really holds for one record, as text. */
interface RawRecord {
  status: number;
  headers: string;
  body: string;
  /** Everything the backend holds for the record, serialized. */
  dump: string;
}

interface Harness {
  store: IdempotencyStore;
  raw(key: string): Promise<RawRecord | undefined>;
  close(): Promise<void>;
}

const sqliteDir = mkdtempSync(join(tmpdir(), 'idempotency-encryption-'));
afterAll(() => rmSync(sqliteDir, { recursive: true, force: true }));

function memoryHarness(): Harness {
  const store = new MemoryIdempotencyStore({ sweepIntervalMs: 0 });
  const records = (store as unknown as { records: Map<string, { response?: StoredResponse }> })
    .records;
  return {
    store,
    raw: async (key) => {
      const record = records.get(key);
      return (
        record?.response && {
          status: record.response.status,
          headers: JSON.stringify(record.response.headers),
          body: record.response.body,
          dump: JSON.stringify(record),
        }
      );
    },
    close: async () => undefined,
  };
}

function redisHarness(): Harness {
  const client = new Redis(REDIS_URL);
  const keyPrefix = `e2e-enc:${randomUUID()}:`;
  return {
    store: new RedisIdempotencyStore({ client, keyPrefix }),
    raw: async (key) => {
      const hash = await client.hgetall(`${keyPrefix}{${key}}`);
      if (!hash.r) {
        return undefined;
      }
      const response = JSON.parse(hash.r) as StoredResponse;
      return {
        status: response.status,
        headers: JSON.stringify(response.headers),
        // The body has a field of its own (b); records of earlier versions held it in r.
        body: hash.b ?? response.body,
        dump: JSON.stringify(hash),
      };
    },
    close: async () => {
      const keys = await client.keys(`${keyPrefix}*`);
      if (keys.length > 0) {
        await client.del(...keys);
      }
      await client.quit();
    },
  };
}

/** A TypeORM store in a database of its own (created here, dropped afterwards). */
async function sqlHarness(type: 'postgres' | 'mariadb' | 'sqlite'): Promise<Harness> {
  const name = `idem_enc_${randomBytes(6).toString('hex')}`;
  let options: DataSourceOptions;
  let drop = async (): Promise<void> => undefined;
  if (type === 'sqlite') {
    options = { type: 'better-sqlite3', database: join(sqliteDir, `${name}.sqlite`) };
  } else {
    const base = type === 'postgres' ? POSTGRES_URL : MYSQL_URL;
    const admin = new DataSource({ type, url: base } as DataSourceOptions);
    await admin.initialize();
    await admin.query(`CREATE DATABASE ${name}`);
    await admin.destroy();
    const url = new URL(base);
    url.pathname = `/${name}`;
    options = { type, url: url.toString() } as DataSourceOptions;
    drop = async () => {
      const again = new DataSource({ type, url: base } as DataSourceOptions);
      await again.initialize();
      await again.query(
        `DROP DATABASE IF EXISTS ${name}${type === 'postgres' ? ' WITH (FORCE)' : ''}`,
      );
      await again.destroy();
    };
  }
  const dataSource = new DataSource({
    ...options,
    migrations: [CreateIdempotencyRecordsTable1763800000000],
  });
  await dataSource.initialize();
  await dataSource.runMigrations();
  const placeholder = type === 'postgres' ? '$1' : '?';
  return {
    store: new TypeOrmIdempotencyStore({ dataSource, purgeIntervalMs: 0 }),
    raw: async (key) => {
      const rows: {
        response_status: number | null;
        response_headers: string | null;
        response_body: string | null;
      }[] = await dataSource.query(
        `SELECT response_status, response_headers, response_body FROM idempotency_records WHERE storage_key = ${placeholder}`,
        [key],
      );
      const [row] = rows;
      return row?.response_body == null
        ? undefined
        : {
            status: Number(row.response_status),
            headers: String(row.response_headers),
            body: row.response_body,
            dump: JSON.stringify(row),
          };
    },
    close: async () => {
      await dataSource.destroy();
      await drop();
    },
  };
}

const STORES: [string, () => Harness | Promise<Harness>][] = [
  ['memory', memoryHarness],
  ...(withRedis ? [['redis', redisHarness] as [string, () => Harness]] : []),
  ...(withPostgres
    ? [['typeorm-postgres', () => sqlHarness('postgres')] as [string, () => Promise<Harness>]]
    : []),
  ...(withMariaDb
    ? [['typeorm-mariadb', () => sqlHarness('mariadb')] as [string, () => Promise<Harness>]]
    : []),
  ...(sqliteAvailable()
    ? [['typeorm-sqlite', () => sqlHarness('sqlite')] as [string, () => Promise<Harness>]]
    : []),
];
const CASES = PLATFORMS.flatMap((platform) =>
  STORES.map(([storeName, harness]) => ({ platform, storeName, harness })),
);

describe.each(CASES)(
  'Encryption at rest ($platform, $storeName store)',
  ({ platform, harness: createHarness }) => {
    let harness: Harness;
    /** Storage keys the interceptor completed, in order (the store is shared by the apps). */
    let completed: string[];

    beforeAll(async () => {
      harness = await createHarness();
      completed = [];
      const complete = harness.store.complete.bind(harness.store);
      harness.store.complete = (options) => {
        completed.push(options.key);
        return complete(options);
      };
    });
    afterAll(() => harness.close());
    /** Apps of the running test: several instances on one store, as during a rolling rotation. */
    const apps: INestApplication[] = [];
    beforeEach(() => {
      runs = 0;
    });
    // Closed only after the test: closing the memory store's app clears its records.
    afterEach(async () => {
      await Promise.all(apps.splice(0).map((app) => app.close()));
    });

    /** Starts an app instance on the shared store and runs `test` against it. */
    const withApp = async (
      options: Omit<IdempotencyModuleOptions, 'store'>,
      test: (url: string) => Promise<void>,
    ) => {
      const t = await createApp(platform as Platform, {
        imports: [IdempotencyModule.forRoot({ ...options, store: harness.store })],
        controllers: [SignupsController],
      });
      apps.push(t.app);
      await test(t.url);
    };
    const signup = (url: string, key: string) =>
      request(url).post('/signups').set('Idempotency-Key', key).send({ email: MARKER });

    /** The record of the last completed request, as the backend holds it. */
    const lastRecord = async (): Promise<RawRecord> => {
      const key = completed.at(-1);
      expect(key).toBeDefined();
      const raw = await harness.raw(key!);
      expect(raw).toBeDefined();
      return raw!;
    };

    const expectEncrypted = (raw: RawRecord, keyId: string) => {
      expect(raw.status).toBe(201);
      expect(raw.dump).not.toContain(MARKER);
      expect(raw.dump).not.toContain(Buffer.from(MARKER).toString('base64'));
      expect(JSON.parse(raw.headers)).toEqual({});
      expect(raw.body.startsWith(`enc:v1:${keyId}:`)).toBe(true);
      expect(() => JSON.parse(raw.body)).toThrow();
    };

    it('stores no readable body or header, and replays the exact response', async () => {
      await withApp({ encryption: only1 }, async (url) => {
        const key = randomUUID();
        const first = await signup(url, key).expect(201);
        expect(first.body.email).toBe(MARKER);
        expect(first.headers.location).toBe(`/signups/1?email=${MARKER}`);
        expect(first.headers['idempotent-replayed']).toBeUndefined();

        expectEncrypted(await lastRecord(), 'k1');

        const again = await signup(url, key).expect(201);
        expect(again.body).toEqual(first.body);
        expect(again.body).toMatchObject({
          email: MARKER,
          at: '2026-01-02T03:04:05.000Z',
          avatar: { type: 'Buffer', data: [...Buffer.from(MARKER)] },
        });
        expect(again.headers.location).toBe(first.headers.location);
        expect(again.headers['content-type']).toBe(first.headers['content-type']);
        expect(again.headers['idempotent-replayed']).toBe('true');
        expect(runs).toBe(1);
      });
    });

    it('replays the decrypted response to a duplicate that waited (concurrent: wait)', async () => {
      let open!: () => void;
      gate = new Promise<void>((resolve) => (open = resolve));
      const claims = jest.spyOn(harness.store, 'claim');
      try {
        await withApp({ encryption: only1 }, async (url) => {
          const key = randomUUID();
          const send = () =>
            request(url).post('/signups/wait').set('Idempotency-Key', key).send({ email: MARKER });
          const answers = Promise.all([send(), send()]);
          // Open the gate once the duplicate has been told "in flight" and polls again.
          for (let i = 0; i < 500 && claims.mock.calls.length < 3; i++) {
            await delay(5);
          }
          expect(claims.mock.calls.length).toBeGreaterThanOrEqual(3);
          open();
          const [a, b] = await answers;
          expect(a.status).toBe(201);
          expect(b.status).toBe(201);
          expect(a.body).toEqual({ run: 1, email: MARKER });
          expect(b.body).toEqual(a.body);
          const replayed = [a, b].map((res) => res.headers['idempotent-replayed']);
          expect(replayed.sort()).toEqual(['true', undefined]);
          expect(runs).toBe(1);
          expect((await lastRecord()).dump).not.toContain(MARKER);
        });
      } finally {
        claims.mockRestore();
        gate = undefined;
      }
    });

    it('rotates keys: old records replay under the new keyId until their key is removed', async () => {
      const errors = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
      try {
        const old = randomUUID();
        const fresh = randomUUID();
        let first!: request.Response;
        await withApp({ encryption: only1 }, async (url) => {
          first = await signup(url, old).expect(201);
        });
        expectEncrypted(await lastRecord(), 'k1');

        // k2 encrypts new records; k1 still decrypts the old one.
        await withApp({ encryption: both2 }, async (url) => {
          const again = await signup(url, old).expect(201);
          expect(again.body).toEqual(first.body);
          expect(again.headers.location).toBe(first.headers.location);
          expect(again.headers['idempotent-replayed']).toBe('true');
          await signup(url, fresh).expect(201);
          expectEncrypted(await lastRecord(), 'k2');
        });
        expect(runs).toBe(2);

        // k1 removed: its record is neither replayed nor run again; k2's still replays.
        await withApp({ encryption: only2 }, async (url) => {
          const refused = await signup(url, old).expect(503);
          expect(refused.headers['content-type']).toMatch(/^application\/problem\+json/);
          expect(refused.body.code).toBe('IDEMPOTENCY_STORE_UNAVAILABLE');
          expect(JSON.stringify(refused.body)).not.toContain(MARKER);
          expect(runs).toBe(2);
          const logged = errors.mock.calls.map((args) => args.map(String).join(' ')).join('\n');
          expect(logged).toContain('key id "k1" is not in encryption.keys');

          const again = await signup(url, fresh).expect(201);
          expect(again.headers['idempotent-replayed']).toBe('true');
          expect(again.body.run).toBe(2);
          expect(runs).toBe(2);
        });

        // With onStoreError: 'open' the handler runs unprotected instead, as on a store failure.
        await withApp({ encryption: only2, onStoreError: 'open' }, async (url) => {
          const unprotected = await signup(url, old).expect(201);
          expect(unprotected.headers['idempotent-replayed']).toBeUndefined();
          expect(unprotected.body.run).toBe(3);
        });
      } finally {
        errors.mockRestore();
      }
    });

    it('still replays a record stored before encryption was turned on', async () => {
      const key = randomUUID();
      let first!: request.Response;
      await withApp({}, async (url) => {
        first = await signup(url, key).expect(201);
      });
      expect((await lastRecord()).dump).toContain(MARKER);
      await withApp({ encryption: only1 }, async (url) => {
        const again = await signup(url, key).expect(201);
        expect(again.body).toEqual(first.body);
        expect(again.headers.location).toBe(first.headers.location);
        expect(again.headers['idempotent-replayed']).toBe('true');
      });
      expect(runs).toBe(1);
    });

    it('never runs the handler again for an encrypted record once encryption is off', async () => {
      const key = randomUUID();
      await withApp({ encryption: only1 }, async (url) => {
        await signup(url, key).expect(201);
      });
      await withApp({}, async (url) => {
        // The record cannot be read without its key: answered like a store failure.
        const res = await signup(url, key).expect(503);
        expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
        expect(res.body.code).toBe('IDEMPOTENCY_STORE_UNAVAILABLE');
        expect(res.headers['idempotent-replayed']).toBeUndefined();
        expect(JSON.stringify(res.body)).not.toContain(MARKER);
      });
      expect(runs).toBe(1);
    });
  },
);

describe.each(PLATFORMS)('Encryption configuration (%s)', (platform) => {
  it.each([
    [
      'a key of the wrong length',
      { keyId: 'k1', keys: { k1: randomBytes(16) } },
      'option "encryption.keys.k1" is a 16-byte buffer',
    ],
    [
      'a keyId not in keys',
      { keyId: 'k3', keys: { k1: K1 } },
      'option "encryption.keyId" is "k3", which is not a key id of encryption.keys (k1)',
    ],
  ])('fails at bootstrap on %s, naming the option', async (_name, encryption, message) => {
    await expect(
      createApp(platform, {
        imports: [IdempotencyModule.forRoot({ encryption })],
        controllers: [SignupsController],
      }),
    ).rejects.toThrow(message);
  });
});
