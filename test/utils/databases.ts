import { randomBytes } from 'node:crypto';
import { DataSource } from 'typeorm';

export const POSTGRES_URL =
  process.env.POSTGRES_URL ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
export const MYSQL_URL = process.env.MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test';
export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** A database of a test's own on a shared server, dropped by `drop()`. */
export interface TemporaryDatabase {
  /** Connection URL of the new database. */
  url: string;
  drop(): Promise<void>;
}

/**
 * Creates an empty database named `prefix_<random>` on the PostgreSQL or MariaDB server behind the
 * configured URL, so suites running side by side never see each other's tables.
 */
export async function createTemporaryDatabase(
  kind: 'postgres' | 'mariadb',
  prefix: string,
): Promise<TemporaryDatabase> {
  const serverUrl = new URL(kind === 'postgres' ? POSTGRES_URL : MYSQL_URL);
  const name = `${prefix}_${randomBytes(4).toString('hex')}`;
  const admin = new DataSource({ type: kind, url: serverUrl.toString() });
  await admin.initialize();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.destroy();
  }
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const dropper = new DataSource({ type: kind, url: serverUrl.toString() });
      await dropper.initialize();
      try {
        await dropper.query(
          `DROP DATABASE IF EXISTS ${name}${kind === 'postgres' ? ' WITH (FORCE)' : ''}`,
        );
      } finally {
        await dropper.destroy();
      }
    },
  };
}
