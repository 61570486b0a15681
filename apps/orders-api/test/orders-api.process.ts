import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { type Child, freePort, spawnChild } from '../../../test/utils/processes';

/** The repository root: `npm test` runs jest there. */
export const REPO_ROOT = process.cwd();

const MAIN = join(REPO_ROOT, 'apps/orders-api/src/main.ts');
if (!existsSync(MAIN)) {
  throw new Error(`Run the process e2e suite from the repository root (${MAIN} not found).`);
}

/** The variables the app reads; a child never inherits them from the test's environment. */
const APP_VARIABLES = [
  'PORT',
  'HOST',
  'HTTP_PLATFORM',
  'DATABASE_URL',
  'IDEMPOTENCY_STORE',
  'REDIS_URL',
  'IDEMPOTENCY_LOCK_TTL',
  'PAYMENT_GATEWAY_LATENCY_MS',
  'PAYMENT_GATEWAY_FAILURE_RATE',
  'PAYMENT_LEASE',
  'BODY_LIMIT',
  'SHUTDOWN_TIMEOUT',
  'IDEMPOTENCY_KEY_SECRETS',
  'IDEMPOTENCY_KEY_TTL',
  'AMQP_URL',
  'AMQP_QUEUE',
  'SMTP_URL',
  'MAIL_FROM',
  'OUTBOX_POLL_INTERVAL',
  'OUTBOX_LEASE',
  'TS_NODE_PROJECT',
];

/** One `npm start` of the orders API as a child process. */
export interface AppProcess extends Child {
  port: number;
  url: string;
}

/** Options of {@link spawnOrdersApi}. */
export interface SpawnOrdersApiOptions {
  /** The app's variables (PORT is chosen unless given); nothing else of the test's leaks in. */
  env?: NodeJS.ProcessEnv;
  /**
   * Working directory; default the repository root, as `npm start`. Elsewhere the app is started
   * by absolute paths, with `TS_NODE_PROJECT` naming the repository's tsconfig.json.
   */
  cwd?: string;
  name?: string;
}

/**
 * Starts the app as `npm start` does (`node -r ts-node/register/transpile-only -r
 * tsconfig-paths/register apps/orders-api/src/main.ts`) without waiting for it.
 */
export async function spawnOrdersApi(options: SpawnOrdersApiOptions = {}): Promise<AppProcess> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const variable of APP_VARIABLES) {
    delete env[variable];
  }
  const port = Number(options.env?.PORT ?? (await freePort()));
  Object.assign(env, { NO_COLOR: '1', FORCE_COLOR: '0' }, options.env, { PORT: String(port) });
  const cwd = options.cwd ?? REPO_ROOT;
  const atRoot = cwd === REPO_ROOT;
  if (!atRoot) {
    env.TS_NODE_PROJECT = join(REPO_ROOT, 'tsconfig.json');
  }
  // `-r` specifiers resolve from the working directory: absolute paths when it is not the root.
  const fromRoot = (path: string) => (atRoot ? path : join(REPO_ROOT, path));
  const modules = (path: string) => (atRoot ? path : join(REPO_ROOT, 'node_modules', path));
  const child = spawnChild(
    options.name ?? `orders-api:${port}`,
    process.execPath,
    [
      '-r',
      modules('ts-node/register/transpile-only'),
      '-r',
      modules('tsconfig-paths/register'),
      fromRoot('apps/orders-api/src/main.ts'),
    ],
    { cwd, env },
  );
  return Object.assign(child, { port, url: `http://127.0.0.1:${port}` });
}

/** Starts the app and waits for its "Listening on" line. */
export async function startOrdersApi(options: SpawnOrdersApiOptions = {}): Promise<AppProcess> {
  const app = await spawnOrdersApi(options);
  await app.waitForOutput(/Listening on http:\/\/localhost:\d+/);
  return app;
}
