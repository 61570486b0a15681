import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Logger, NotFoundException } from '@nestjs/common';
import { Test, type TestingModule } from '@nestjs/testing';
import {
  IdempotencyChannel,
  IdempotencyKeyInvalidException,
  IdempotencyKeyReusedException,
  IdempotencyModule,
  type IdempotencyModuleOptions,
  IdempotencyRequestInProgressException,
  IdempotencyResponseNotReplayableException,
  IdempotencyService,
  type IdempotencyStore,
  IdempotencyStoreUnavailableException,
  MemoryIdempotencyStore,
  storageKeyOf,
} from 'nestjs-idempotency';
import { RedisIdempotencyStore } from 'nestjs-idempotency/redis';
import {
  CreateIdempotencyRecordsTable1763800000000,
  TypeOrmIdempotencyStore,
} from 'nestjs-idempotency/typeorm';
import { DataSource, type DataSourceOptions } from 'typeorm';
import { MYSQL_URL, POSTGRES_URL, REDIS_URL } from '../utils/databases';
import { type LocalRedisCluster, startRedisCluster } from '../utils/redis-cluster';
import { describeWithServer } from '../utils/services';

/**
 * `IdempotencyService.run()` on every store, with real servers: the programmatic API keeps the
 * rules of a route (one claim among racing callers, lease and lapse, wait mode, fencing, typed
 * errors, the body codec, encryption) because it runs through the same engine.
 */

// E2E_LOG=1 shows the library's logs (lease lost, store failures), for debugging a failing case.
Logger.overrideLogger(process.env.E2E_LOG ? ['log', 'warn', 'error'] : false);

const sqliteDir = mkdtempSync(join(tmpdir(), 'idempotency-service-'));
afterAll(() => rmSync(sqliteDir, { recursive: true, force: true }));
const clusterPort = Number(process.env.REDIS_CLUSTER_PORT ?? 7301) + 20;

/** How a suite reaches one kind of store. */
interface StoreKind {
  name: string;
  gate: Promise<jest.Describe>;
  before?: () => Promise<void>;
  after?: () => Promise<void>;
  /** A store on its own connection; peers made by it race through the backend. */
  create: () => Promise<IdempotencyStore>;
  destroy: (store: IdempotencyStore) => Promise<void>;
  /** A store whose backend is gone: every operation fails. */
  broken: () => Promise<IdempotencyStore>;
}

const typeorm = (name: string, gate: Promise<jest.Describe>, options: DataSourceOptions) => {
  const sources = new Map<IdempotencyStore, DataSource>();
  const open = async () => {
    const dataSource = new DataSource({
      ...options,
      migrations: [CreateIdempotencyRecordsTable1763800000000],
      migrationsTableName: 'idempotency_service_migrations',
    } as DataSourceOptions);
    return dataSource.initialize();
  };
  return {
    name,
    gate,
    before: async () => {
      const dataSource = await open();
      await dataSource.runMigrations();
      await dataSource.destroy();
    },
    create: async () => {
      const dataSource = await open();
      const store = new TypeOrmIdempotencyStore({ dataSource, purgeIntervalMs: 0 });
      sources.set(store, dataSource);
      return store;
    },
    destroy: async (store: IdempotencyStore) => {
      await sources.get(store)?.destroy();
    },
    broken: async () => {
      const dataSource = await open();
      await dataSource.destroy();
      return new TypeOrmIdempotencyStore({ dataSource, purgeIntervalMs: 0 });
    },
  } satisfies StoreKind;
};

let cluster: LocalRedisCluster | undefined;
const redisPrefix = `service:${randomUUID()}:`;

const KINDS: StoreKind[] = [
  {
    name: 'memory',
    gate: Promise.resolve(describe),
    // One process: every "peer" is the same map.
    create: (() => {
      const shared = new MemoryIdempotencyStore();
      return async () => shared;
    })(),
    destroy: async () => undefined,
    broken: async () =>
      new (class extends MemoryIdempotencyStore {
        override async claim(): Promise<never> {
          throw new Error('memory store down');
        }
      })(),
  },
  {
    name: 'Redis',
    gate: describeWithServer('Redis', REDIS_URL),
    create: async () => new RedisIdempotencyStore({ client: REDIS_URL, keyPrefix: redisPrefix }),
    destroy: (store) => (store as RedisIdempotencyStore).close(),
    // Nothing listens on port 1: commands fail once the single retry has failed.
    broken: async () =>
      new RedisIdempotencyStore({ client: 'redis://127.0.0.1:1', commandTimeoutMs: 300 }),
  },
  {
    name: 'Redis Cluster',
    gate: Promise.resolve(describe),
    before: async () => {
      cluster = await startRedisCluster(clusterPort);
    },
    after: async () => {
      await cluster?.stop();
    },
    create: async () => new RedisIdempotencyStore({ client: { nodes: cluster!.nodes } }),
    destroy: (store) => (store as RedisIdempotencyStore).close(),
    broken: async () =>
      new RedisIdempotencyStore({ client: 'redis://127.0.0.1:1', commandTimeoutMs: 300 }),
  },
  typeorm('PostgreSQL', describeWithServer('PostgreSQL', POSTGRES_URL), {
    type: 'postgres',
    url: POSTGRES_URL,
    extra: { max: 4 },
  }),
  typeorm('MariaDB', describeWithServer('MariaDB', MYSQL_URL), {
    type: 'mariadb',
    url: MYSQL_URL,
    extra: { connectionLimit: 4 },
  }),
  typeorm('SQLite', Promise.resolve(describe), {
    type: 'better-sqlite3',
    database: join(sqliteDir, 'service.sqlite'),
    enableWAL: true,
    timeout: 10_000,
  } as DataSourceOptions),
];

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const newKey = () => `job-${randomBytes(8).toString('hex')}`;

/** A gate the work waits on until the test opens it. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

/** Collects what is published on the library's channels while `body` runs. */
async function recording<T>(body: (events: Map<string, unknown[]>) => Promise<T>): Promise<T> {
  const events = new Map<string, unknown[]>();
  const listeners = Object.values(IdempotencyChannel).map((name) => {
    const listener = (message: unknown) => {
      events.set(name, [...(events.get(name) ?? []), message]);
    };
    subscribe(name, listener);
    return [name, listener] as const;
  });
  try {
    return await body(events);
  } finally {
    for (const [name, listener] of listeners) {
      unsubscribe(name, listener);
    }
  }
}

for (const kind of KINDS) {
  (await kind.gate)(`IdempotencyService.run() on the ${kind.name} store`, () => {
    const modules: TestingModule[] = [];
    const stores: IdempotencyStore[] = [];

    /** A service of its own module, over its own store (its own connection to the backend). */
    const service = async (
      options: IdempotencyModuleOptions = {},
      store?: IdempotencyStore,
    ): Promise<IdempotencyService> => {
      const own = store ?? (await kind.create());
      stores.push(own);
      const moduleRef = await Test.createTestingModule({
        imports: [IdempotencyModule.forRoot({ lockTtl: 1_000, ...options, store: own })],
      }).compile();
      await moduleRef.init();
      modules.push(moduleRef);
      return moduleRef.get(IdempotencyService);
    };

    beforeAll(async () => {
      await kind.before?.();
    }, 30_000);
    afterAll(async () => {
      await Promise.all(modules.map((moduleRef) => moduleRef.close()));
      await Promise.all([...new Set(stores)].map((store) => kind.destroy(store)));
      await kind.after?.();
    });

    it('runs the work once for 32 racing callers on 4 connections; the others get IN_PROGRESS with retryAfterMs', async () => {
      const peers = await Promise.all(Array.from({ length: 4 }, () => service()));
      const key = newKey();
      let runs = 0;
      let settled = 0;
      const release = gate();
      const calls = Array.from({ length: 32 }, (_, i) =>
        peers[i % peers.length]
          .run(key, async () => {
            runs++;
            await release.opened;
            return { order: 'ord_1', runs };
          })
          .then(
            (result) => ({ result }),
            (error: unknown) => ({ error }),
          )
          .finally(() => settled++),
      );
      // The one run holds until the 31 others were refused, so none of them can arrive after it
      // finished and be replayed instead.
      for (let waited = 0; settled < 31 && waited < 15_000; waited += 10) {
        await sleep(10);
      }
      release.open();
      const outcomes = await Promise.all(calls);
      expect(runs).toBe(1);
      const ran = outcomes.filter((o) => 'result' in o);
      expect(ran).toEqual([{ result: { value: { order: 'ord_1', runs: 1 }, replayed: false } }]);
      const refused = outcomes
        .filter((o) => 'error' in o)
        .map((o) => (o as { error: unknown }).error);
      expect(refused).toHaveLength(31);
      for (const error of refused) {
        expect(error).toBeInstanceOf(IdempotencyRequestInProgressException);
        const inProgress = error as IdempotencyRequestInProgressException;
        expect(inProgress.code).toBe('IDEMPOTENCY_REQUEST_IN_PROGRESS');
        expect(inProgress.retryAfterMs).toBeGreaterThan(0);
        expect(inProgress.retryAfterMs).toBeLessThanOrEqual(1_000);
      }
      // Every connection now replays the stored value, and nothing runs.
      for (const peer of peers) {
        await expect(
          peer.run(key, async () => ({ order: 'other', runs: ++runs })),
        ).resolves.toEqual({
          value: { order: 'ord_1', runs: 1 },
          replayed: true,
        });
      }
      expect(runs).toBe(1);
    });

    it('keeps Date and Buffer values through a replay, and keeps scopes apart', async () => {
      const run = await service();
      const key = newKey();
      const value = { at: new Date('2026-12-03T10:00:00.000Z'), pdf: Buffer.from('%PDF-1.7') };
      await run.run(key, async () => value, { scope: 'invoices' });
      const replay = await run.run(key, async () => ({ at: new Date(0), pdf: Buffer.from('') }), {
        scope: 'invoices',
      });
      expect(replay.replayed).toBe(true);
      expect(replay.value.at).toBeInstanceOf(Date);
      expect(replay.value.at.toISOString()).toBe('2026-12-03T10:00:00.000Z');
      expect(Buffer.isBuffer(replay.value.pdf)).toBe(true);
      expect(replay.value.pdf.toString()).toBe('%PDF-1.7');
      // The same key in another scope is another operation.
      const other = await run.run(key, async () => 'receipts', { scope: ['receipts', 'tenant-1'] });
      expect(other).toEqual({ value: 'receipts', replayed: false });
    });

    it('waits for the first run with concurrent: wait, and gives every caller its value', async () => {
      const peers = await Promise.all(Array.from({ length: 4 }, () => service()));
      const key = newKey();
      let runs = 0;
      const results = await Promise.all(
        Array.from({ length: 32 }, (_, i) =>
          peers[i % peers.length].run(
            key,
            async () => {
              runs++;
              await sleep(300);
              return `sent-${runs}`;
            },
            { concurrent: 'wait', waitTimeout: '10s' },
          ),
        ),
      );
      expect(runs).toBe(1);
      expect(new Set(results.map((r) => r.value))).toEqual(new Set(['sent-1']));
      expect(results.filter((r) => !r.replayed)).toHaveLength(1);
    });

    it('lets another caller run once the lease of a stalled holder lapses, and fences the late holder', async () => {
      // The first caller stops renewing at once (maxLockHold 1 ms), as a process that died would.
      const stalled = await service({ lockTtl: 500, maxLockHold: 1 });
      const healthy = await service({ lockTtl: 500 });
      const key = newKey();
      const late = gate();
      await recording(async (events) => {
        const first = stalled.run(key, async () => {
          await late.opened;
          return 'from the stalled holder';
        });
        await sleep(50);
        await expect(healthy.run(key, async () => 'too early')).rejects.toBeInstanceOf(
          IdempotencyRequestInProgressException,
        );
        await sleep(900);
        await expect(healthy.run(key, async () => 'from the new holder')).resolves.toEqual({
          value: 'from the new holder',
          replayed: false,
        });
        late.open();
        // Its caller still gets its own value, but its completion was fenced off.
        await expect(first).resolves.toEqual({ value: 'from the stalled holder', replayed: false });
        await expect(stalled.run(key, async () => 'again')).resolves.toEqual({
          value: 'from the new holder',
          replayed: true,
        });
        const lost = events.get(IdempotencyChannel.LeaseLost) ?? [];
        expect(lost).toContainEqual(
          expect.objectContaining({
            key: storageKeyOf(['run'], key),
            context: 'service',
            during: 'completion',
          }),
        );
      });
    });

    it('throws IdempotencyKeyReusedException for the key with another payload', async () => {
      const run = await service();
      const key = newKey();
      await run.run(key, async () => 'charged', { payload: { amount: 10, currency: 'EUR' } });
      await expect(
        run.run(key, async () => 'charged twice', { payload: { amount: 99, currency: 'EUR' } }),
      ).rejects.toBeInstanceOf(IdempotencyKeyReusedException);
      // Object keys in another order are the same payload.
      await expect(
        run.run(key, async () => 'charged twice', { payload: { currency: 'EUR', amount: 10 } }),
      ).resolves.toEqual({ value: 'charged', replayed: true });
    });

    it('throws IdempotencyKeyInvalidException for a key outside 1 to 255 printable ASCII, running nothing', async () => {
      const run = await service();
      let runs = 0;
      for (const key of ['', 'k'.repeat(256), 'caf\u00e9', 'line\nbreak']) {
        await expect(run.run(key, async () => ++runs)).rejects.toBeInstanceOf(
          IdempotencyKeyInvalidException,
        );
      }
      expect(runs).toBe(0);
    });

    it('releases the key when the work throws, so a retry runs; stores an HttpException below 500', async () => {
      const run = await service();
      const key = newKey();
      let runs = 0;
      await expect(
        run.run(key, async () => {
          runs++;
          throw new Error('SMTP timeout');
        }),
      ).rejects.toThrow('SMTP timeout');
      await expect(run.run(key, async () => ++runs)).resolves.toEqual({
        value: 2,
        replayed: false,
      });
      const missing = newKey();
      const thrown = run.run(missing, async () => {
        runs++;
        throw new NotFoundException('no such order');
      });
      await expect(thrown).rejects.toBeInstanceOf(NotFoundException);
      const replayed = await run.run(missing, async () => ++runs).catch((error: unknown) => error);
      expect(replayed).toMatchObject({ status: 404, response: { message: 'no such order' } });
      expect(runs).toBe(3);
    });

    it('completes an unreplayable value as done: a retry is refused, unless unreplayable is release', async () => {
      const run = await service();
      const key = newKey();
      let runs = 0;
      const first = await run.run(key, async () => {
        runs++;
        return Readable.from(['a stream']);
      });
      expect(first.replayed).toBe(false);
      await expect(run.run(key, async () => ++runs)).rejects.toBeInstanceOf(
        IdempotencyResponseNotReplayableException,
      );
      const big = newKey();
      await run.run(big, async () => 'x'.repeat(200), {
        maxResponseBytes: 100,
        unreplayable: 'release',
      });
      await expect(run.run(big, async () => ++runs)).resolves.toEqual({
        value: 2,
        replayed: false,
      });
      expect(runs).toBe(2);
    });

    it('encrypts the stored value when encryption is on, and still replays it', async () => {
      const store = await kind.create();
      const run = await service(
        { encryption: { keyId: 'k1', keys: { k1: randomBytes(32) } } },
        store,
      );
      const key = newKey();
      await run.run(key, async () => ({ email: 'ada@example.com' }));
      const record = await store.claim({
        key: storageKeyOf(['run'], key),
        fingerprint: null,
        ownerToken: randomUUID(),
        leaseMs: 1_000,
      });
      expect(record.outcome).toBe('completed');
      const stored = (record as { response: { body: string } }).response.body;
      expect(stored).toMatch(/^enc:v1:k1:/);
      expect(stored).not.toContain('ada@example.com');
      await expect(run.run(key, async () => ({ email: 'other' }))).resolves.toEqual({
        value: { email: 'ada@example.com' },
        replayed: true,
      });
    });

    it('throws IdempotencyStoreUnavailableException when the store fails, running nothing; runs unprotected with onStoreError open', async () => {
      const broken = await kind.broken();
      const closed = await service({}, broken);
      let runs = 0;
      const error = await closed.run(newKey(), async () => ++runs).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(IdempotencyStoreUnavailableException);
      expect((error as IdempotencyStoreUnavailableException).code).toBe(
        'IDEMPOTENCY_STORE_UNAVAILABLE',
      );
      expect((error as Error).cause).toBeInstanceOf(Error);
      expect(runs).toBe(0);
      const open = await service({ onStoreError: 'open' }, broken);
      await expect(open.run(newKey(), async () => ++runs)).resolves.toEqual({
        value: 1,
        replayed: false,
      });
    }, 20_000);

    it('publishes executed, replayed and rejected events with the hashed key, the context and the scope', async () => {
      const run = await service();
      const key = newKey();
      await recording(async (events) => {
        await run.run(key, async () => 'done', { scope: 'webhooks', payload: { id: 1 } });
        await run.run(key, async () => 'done', { scope: 'webhooks', payload: { id: 1 } });
        await run
          .run(key, async () => 'done', { scope: 'webhooks', payload: { id: 2 } })
          .catch(() => undefined);
        const hashed = storageKeyOf(['run', 'webhooks'], key);
        const base = { key: hashed, context: 'service', target: 'webhooks' };
        expect(events.get(IdempotencyChannel.Executed)).toEqual([
          expect.objectContaining({ ...base, record: 'stored', status: 200, failed: false }),
        ]);
        expect(events.get(IdempotencyChannel.Replayed)).toEqual([
          expect.objectContaining({ ...base, status: 200, claimMs: expect.any(Number) }),
        ]);
        expect(events.get(IdempotencyChannel.Rejected)).toEqual([
          expect.objectContaining({ ...base, code: 'IDEMPOTENCY_KEY_REUSED' }),
        ]);
        expect(hashed).toMatch(/^[0-9a-f]{64}$/);
        expect(JSON.stringify([...events.values()])).not.toContain(key);
      });
    });
  });
}
