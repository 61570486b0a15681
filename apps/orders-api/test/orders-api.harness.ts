import type { INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeWithServer } from '../../../test/utils/services';
import {
  createTemporaryDatabase,
  MYSQL_URL,
  POSTGRES_URL,
  REDIS_URL,
} from '../../../test/utils/databases';
import { AppModule } from '../src/app.module';
import { configureApp, createHttpAdapter } from '../src/app.setup';
import {
  type HttpPlatform,
  loadConfig,
  type OrdersApiConfig,
} from '../src/config/orders-api.config';

/** The platforms every e2e case runs on, as `HTTP_PLATFORM` names them. */
export const PLATFORMS: HttpPlatform[] = ['express', 'fastify'];

/** One way to run the sample: its database and its idempotency store. */
export interface Deployment {
  name: string;
  /** `describe`, or `describe.skip` (outside CI) when a server it needs is down. */
  describe: Promise<jest.Describe>;
  /** Creates an empty database; answers the environment that points the app at it, and cleanup. */
  provision(): Promise<{ env: NodeJS.ProcessEnv; cleanup(): Promise<void> }>;
}

const sqlite = (): Deployment['provision'] => async () => {
  const dir = mkdtempSync(join(tmpdir(), 'orders-api-'));
  return {
    env: { DATABASE_URL: join(dir, 'orders.sqlite') },
    cleanup: async () => rmSync(dir, { recursive: true, force: true }),
  };
};

const server =
  (kind: 'postgres' | 'mariadb', env: NodeJS.ProcessEnv): Deployment['provision'] =>
  async () => {
    const database = await createTemporaryDatabase(kind, 'orders_e2e');
    return {
      env: {
        ...env,
        DATABASE_URL: database.url,
      },
      cleanup: () => database.drop(),
    };
  };

/**
 * The deployments every e2e case runs on: the default (SQLite, records in it through the TypeORM
 * store), SQLite with the memory store, PostgreSQL with Redis (the production set-up), and MariaDB
 * (through a `mysql://` URL) with the TypeORM store.
 */
export const DEPLOYMENTS: Deployment[] = [
  { name: 'SQLite + TypeORM store', describe: Promise.resolve(describe), provision: sqlite() },
  {
    name: 'SQLite + memory store',
    describe: Promise.resolve(describe),
    provision: async () => {
      const provisioned = await sqlite()();
      return { ...provisioned, env: { ...provisioned.env, IDEMPOTENCY_STORE: 'memory' } };
    },
  },
  {
    name: 'PostgreSQL + Redis store',
    describe: Promise.all([
      describeWithServer('PostgreSQL', POSTGRES_URL),
      describeWithServer('Redis', REDIS_URL),
    ]).then(([pg, redis]) => (pg === describe && redis === describe ? describe : describe.skip)),
    provision: server('postgres', { IDEMPOTENCY_STORE: 'redis', REDIS_URL }),
  },
  {
    name: 'MariaDB + TypeORM store',
    describe: describeWithServer('MariaDB', MYSQL_URL),
    provision: server('mariadb', { IDEMPOTENCY_STORE: 'typeorm' }),
  },
];

/** A running sample app on a loopback port. */
export interface RunningApp {
  app: INestApplication;
  url: string;
  config: OrdersApiConfig;
  close(): Promise<void>;
}

/**
 * Boots the sample as `main.ts` does, from environment variables (`HTTP_PLATFORM` included), on
 * a free loopback port.
 */
export async function startOrdersApi(env: NodeJS.ProcessEnv): Promise<RunningApp> {
  const config = loadConfig({ PORT: '0', ...env });
  const moduleRef = await Test.createTestingModule({
    imports: [AppModule.forRoot(config)],
  }).compile();
  const app = moduleRef.createNestApplication(createHttpAdapter(config), {
    bodyParser: false,
    // E2E_LOG=1 shows the app's logs, for debugging a failing case.
    logger: process.env.E2E_LOG ? undefined : false,
  });
  configureApp(app, config);
  await app.listen(0, '127.0.0.1');
  await app.startAllMicroservices();
  const { port } = app.getHttpServer().address() as { port: number };
  return { app, url: `http://127.0.0.1:${port}`, config, close: () => app.close() };
}
