import { Logger } from '@nestjs/common';
import { EventEmitter } from 'node:events';
import { CreateIdempotencyRecordsTable1763800000000 } from 'nestjs-idempotency/typeorm';
import { DataSource, type DataSourceOptions } from 'typeorm';
import type { DatabaseConfig } from '../config/orders-api.config';
import { OutboxMessage } from '../emails/outbox-message.entity';
import { Order } from '../orders/order.entity';
import { Payment } from '../payments/payment.entity';
import { CreateOrdersTables1764000000000 } from './migrations/1764000000000-create-orders-tables';
import { OutboxDelivery1765000000000 } from './migrations/1765000000000-outbox-delivery';

/** The app's entities. */
export const ENTITIES = [Order, Payment, OutboxMessage];

/** Every migration, the library's idempotency table included, in order. */
export const MIGRATIONS = [
  CreateIdempotencyRecordsTable1763800000000,
  CreateOrdersTables1764000000000,
  OutboxDelivery1765000000000,
];

/** DataSource options for the configured database; migrations run at start, never synchronize. */
export function dataSourceOptions(database: DatabaseConfig): DataSourceOptions {
  const common = {
    entities: ENTITIES,
    migrations: MIGRATIONS,
    migrationsRun: false,
    synchronize: false,
  } as const;
  switch (database.type) {
    case 'postgres':
      return { ...common, type: 'postgres', url: database.url, extra: { max: 10 } };
    case 'mysql':
    case 'mariadb':
      return {
        ...common,
        type: database.type,
        url: database.url,
        timezone: 'Z',
        extra: { connectionLimit: 10 },
      };
    case 'better-sqlite3':
      return {
        ...common,
        type: 'better-sqlite3',
        database: database.database,
        // WAL lets readers run beside the writer; the busy timeout makes writers from several
        // processes wait for each other instead of failing.
        enableWAL: true,
        timeout: 10_000,
      };
  }
}

const MIGRATION_LOCK = 'orders-api:migrations';

/**
 * Runs pending migrations under a database-wide lock, so instances starting side by side do not
 * race to create the same tables: a PostgreSQL advisory lock, MySQL's GET_LOCK. SQLite has one
 * writer at a time and the migrations create tables only if they do not exist.
 */
export async function runMigrations(dataSource: DataSource): Promise<void> {
  const logger = new Logger('Migrations');
  const type = dataSource.options.type;
  const runner = dataSource.createQueryRunner();
  await runner.connect();
  try {
    if (type === 'postgres') {
      await runner.query('SELECT pg_advisory_lock(hashtext($1))', [MIGRATION_LOCK]);
    } else if (type === 'mysql' || type === 'mariadb') {
      const [row] = await runner.query('SELECT GET_LOCK(?, 60) AS locked', [MIGRATION_LOCK]);
      if (Number(row?.locked) !== 1) {
        throw new Error('Timed out waiting for another instance to finish the migrations.');
      }
    }
    const ran = await dataSource.runMigrations({ transaction: 'each' });
    for (const migration of ran) {
      logger.log(`Ran ${migration.name}`);
    }
  } finally {
    if (type === 'postgres') {
      await runner.query('SELECT pg_advisory_unlock(hashtext($1))', [MIGRATION_LOCK]);
    } else if (type === 'mysql' || type === 'mariadb') {
      await runner.query('SELECT RELEASE_LOCK(?)', [MIGRATION_LOCK]);
    }
    await runner.release();
  }
}

/** Opens the DataSource and brings its schema up to date. */
export async function openDatabase(options: DataSourceOptions): Promise<DataSource> {
  const dataSource = await new DataSource(options).initialize();
  listenToEveryPostgresConnection(dataSource);
  try {
    await runMigrations(dataSource);
  } catch (error) {
    await dataSource.destroy();
    throw error;
  }
  return dataSource;
}

/**
 * node-postgres hands a new connection over with no 'error' listener, and TypeORM adds its own one
 * a microtask later. A backend that dies in between (pg_terminate_backend, a failover: its
 * ReadyForQuery and FATAL come in one packet) emits an unhandled 'error' that kills the process.
 * A listener for each connection's lifetime leaves that error to fail the connection's next query.
 */
function listenToEveryPostgresConnection(dataSource: DataSource): void {
  const pool = (dataSource.driver as { master?: unknown }).master;
  if (dataSource.options.type !== 'postgres' || !(pool instanceof EventEmitter)) {
    return;
  }
  const logger = new Logger('Database');
  pool.on('connect', (connection: EventEmitter) => {
    connection.on('error', (error: Error) => {
      // Alone, it is the only one told: otherwise the pool or TypeORM handles and logs it.
      if (connection.listenerCount('error') === 1) {
        logger.warn(`A PostgreSQL connection failed before it was used: ${error.message}`);
      }
    });
  });
}
