import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataSource, type DataSourceOptions } from 'typeorm';
import {
  CreateIdempotencyRecordsTable1763800000000,
  TypeOrmIdempotencyStore,
} from 'nestjs-idempotency/typeorm';
import { describeIdempotencyStoreContract } from 'nestjs-idempotency/testing';
import { describeWithServer } from '../utils/services';

const POSTGRES_URL =
  process.env.POSTGRES_URL ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const MYSQL_URL = process.env.MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test';
const sqliteDir = mkdtempSync(join(tmpdir(), 'idempotency-sqlite-'));

const DATABASES: [string, Promise<jest.Describe>, DataSourceOptions][] = [
  [
    'PostgreSQL',
    describeWithServer('PostgreSQL', POSTGRES_URL),
    { type: 'postgres', url: POSTGRES_URL, extra: { max: 2 } },
  ],
  [
    'MariaDB',
    describeWithServer('MariaDB', MYSQL_URL),
    { type: 'mariadb', url: MYSQL_URL, extra: { connectionLimit: 2 } },
  ],
  [
    'SQLite',
    Promise.resolve(describe),
    {
      type: 'better-sqlite3',
      database: join(sqliteDir, 'idempotency.sqlite'),
      enableWAL: true,
      timeout: 10_000,
    } as DataSourceOptions,
  ],
];

afterAll(() => rmSync(sqliteDir, { recursive: true, force: true }));

for (const [name, describeDb, options] of DATABASES) {
  (await describeDb)(`TypeOrmIdempotencyStore on ${name}`, () => {
    const open = async () => {
      const dataSource = new DataSource({
        ...options,
        migrations: [CreateIdempotencyRecordsTable1763800000000],
        migrationsTableName: 'idempotency_test_migrations',
      });
      await dataSource.initialize();
      return dataSource;
    };
    const stores = new Map<TypeOrmIdempotencyStore, DataSource>();
    const create = async () => {
      const dataSource = await open();
      const store = new TypeOrmIdempotencyStore({ dataSource, purgeIntervalMs: 0 });
      stores.set(store, dataSource);
      return store;
    };

    beforeAll(async () => {
      const dataSource = await open();
      await dataSource.runMigrations();
      await dataSource.destroy();
    });

    describeIdempotencyStoreContract(`TypeOrmIdempotencyStore (${name})`, {
      create,
      // A DataSource of its own per racer: separate connections, so the database decides.
      createPeer: create,
      transactions: true,
      destroy: async (store) => {
        await stores.get(store as TypeOrmIdempotencyStore)?.destroy();
      },
    });

    if (name === 'PostgreSQL') {
      describe('statements on the driver pool', () => {
        const response = { status: 201, headers: {}, body: '{"id":1}' };
        const onOneConnection = async (logged: string[] = []) => {
          const dataSource = new DataSource({
            ...options,
            extra: { max: 1 },
            logger: {
              logQuery: (query: string) => void logged.push(query),
              logQueryError: () => undefined,
              logQuerySlow: () => undefined,
              logSchemaBuild: () => undefined,
              logMigration: () => undefined,
              log: () => undefined,
            },
          });
          await dataSource.initialize();
          return dataSource;
        };
        const prepared = async (dataSource: DataSource) =>
          (
            (await dataSource.query(
              "SELECT name FROM pg_prepared_statements WHERE name LIKE 'nestjs_idempotency_%'",
            )) as { name: string }[]
          ).length;

        it.each([
          [true, 2],
          [false, 0],
        ])(
          'with preparedStatements %s, leaves %i prepared statements on the connection after a claim and a completion, and replays alike',
          async (preparedStatements, count) => {
            const dataSource = await onOneConnection();
            try {
              const store = new TypeOrmIdempotencyStore({
                dataSource,
                purgeIntervalMs: 0,
                preparedStatements,
              });
              const key = randomBytes(32).toString('hex');
              await store.claim({ key, fingerprint: 'fp', ownerToken: 'o', leaseMs: 5_000 });
              await store.complete({ key, ownerToken: 'o', response, ttlMs: 5_000 });
              for (let i = 0; i < 2; i++) {
                await expect(
                  store.claim({ key, fingerprint: 'fp', ownerToken: 'p', leaseMs: 5_000 }),
                ).resolves.toEqual({ outcome: 'completed', fingerprint: 'fp', response });
              }
              expect(await prepared(dataSource)).toBe(count);
            } finally {
              await dataSource.destroy();
            }
          },
        );

        it("logs its statements through the DataSource's logger, as TypeORM logs its own", async () => {
          const logged: string[] = [];
          const dataSource = await onOneConnection(logged);
          try {
            const store = new TypeOrmIdempotencyStore({ dataSource, purgeIntervalMs: 0 });
            const key = randomBytes(32).toString('hex');
            logged.length = 0;
            await store.claim({ key, fingerprint: null, ownerToken: 'o', leaseMs: 5_000 });
            await store.release({ key, ownerToken: 'o' });
            expect(logged.map((query) => /^\s*(\w+)/.exec(query)?.[1])).toEqual(['WITH', 'DELETE']);
          } finally {
            await dataSource.destroy();
          }
        });
      });
    }

    describe('purging', () => {
      const expire = async (store: TypeOrmIdempotencyStore, count: number) => {
        const keys = Array.from({ length: count }, () => randomBytes(32).toString('hex'));
        for (const key of keys) {
          await store.claim({ key, fingerprint: null, ownerToken: 'o', leaseMs: 50 });
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
        return keys;
      };
      const exists = async (dataSource: DataSource, key: string) =>
        (
          await dataSource.query(
            `SELECT storage_key FROM idempotency_records WHERE storage_key = ${name === 'PostgreSQL' ? '$1' : '?'}`,
            [key],
          )
        ).length > 0;

      it('deletes every expired row in batches, from several instances at once', async () => {
        const [a, b] = [await create(), await create()];
        const small = [a, b].map(
          (store) =>
            new TypeOrmIdempotencyStore({
              dataSource: stores.get(store)!,
              purgeIntervalMs: 0,
              purgeBatchSize: 2,
            }),
        );
        const keys = await expire(a, 7);
        const live = randomBytes(32).toString('hex');
        await a.claim({ key: live, fingerprint: null, ownerToken: 'o', leaseMs: 60_000 });
        const deleted = await Promise.all(small.map((store) => store.purgeExpired()));
        expect(deleted[0] + deleted[1]).toBeGreaterThanOrEqual(keys.length);
        for (const key of keys) {
          expect(await exists(stores.get(a)!, key)).toBe(false);
        }
        expect(await exists(stores.get(a)!, live)).toBe(true);
        for (const store of [a, b]) {
          await stores.get(store)!.destroy();
        }
      });

      it('purges on its interval until the module is destroyed', async () => {
        const dataSource = await open();
        const store = new TypeOrmIdempotencyStore({ dataSource, purgeIntervalMs: 100 });
        const [key] = await expire(store, 1);
        await new Promise((resolve) => setTimeout(resolve, 250));
        expect(await exists(dataSource, key)).toBe(false);
        store.onModuleDestroy();
        const [later] = await expire(store, 1);
        await new Promise((resolve) => setTimeout(resolve, 250));
        expect(await exists(dataSource, later)).toBe(true);
        await dataSource.destroy();
      });
    });
  });
}
