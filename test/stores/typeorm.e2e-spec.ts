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
      destroy: async (store) => {
        await stores.get(store as TypeOrmIdempotencyStore)?.destroy();
      },
    });
  });
}
