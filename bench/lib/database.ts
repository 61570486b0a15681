import { Client } from 'pg';
import { DataSource } from 'typeorm';
import { CreateIdempotencyRecordsTable1763800000000 } from 'nestjs-idempotency/typeorm';
import { CREATE_ORDERS_TABLE } from '../common/orders-db';

/** `serverUrl` (any database of the server) with its database replaced by `name`. */
export function databaseUrl(serverUrl: string, name: string): string {
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/**
 * A fresh database `name` of the benchmark's own, dropped first if it exists, with the handler's
 * table and the library's migration.
 */
export async function createBenchDatabase(serverUrl: string, name: string): Promise<void> {
  const admin = new Client({ connectionString: databaseUrl(serverUrl, 'postgres') });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const dataSource = new DataSource({
    type: 'postgres',
    url: databaseUrl(serverUrl, name),
    migrations: [CreateIdempotencyRecordsTable1763800000000],
  });
  await dataSource.initialize();
  try {
    await dataSource.query(CREATE_ORDERS_TABLE);
    await dataSource.runMigrations();
  } finally {
    await dataSource.destroy();
  }
}
