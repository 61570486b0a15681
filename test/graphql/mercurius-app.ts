/**
 * The GraphQL app of test/graphql on Mercurius and Fastify, as a child process: mercurius requires
 * @fastify/static, which requires an ES module (content-disposition 1.x), and Jest's module
 * loader cannot require an ES module on Node 20 (Node's own require(esm) can, so the app runs as
 * `npm start` runs the sample). Started by graphql.e2e-spec.ts.
 *
 * Environment: GRAPHQL_APP_PORT; GRAPHQL_APP_STORE (memory | redis | broken) with
 * GRAPHQL_APP_REDIS_URL and GRAPHQL_APP_REDIS_PREFIX for redis; GRAPHQL_APP_SCHEMA_FILE (optional);
 * GRAPHQL_APP_REFUSED (query | option) adds a resolver the start must refuse.
 */
import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import { MercuriusDriver } from '@nestjs/mercurius';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { GraphqlAppModule, type StoreSpec } from './app';

async function main(): Promise<void> {
  const env = process.env;
  const kind = env.GRAPHQL_APP_STORE ?? 'memory';
  const store: StoreSpec =
    kind === 'redis'
      ? {
          kind,
          url: env.GRAPHQL_APP_REDIS_URL ?? 'redis://127.0.0.1:6379',
          prefix: env.GRAPHQL_APP_REDIS_PREFIX ?? 'graphql-app:',
        }
      : { kind: kind === 'broken' ? 'broken' : 'memory' };
  const app = await NestFactory.create(
    GraphqlAppModule.forRoot({
      driver: MercuriusDriver,
      store,
      schemaFile: env.GRAPHQL_APP_SCHEMA_FILE,
      refused:
        env.GRAPHQL_APP_REFUSED === 'query' || env.GRAPHQL_APP_REFUSED === 'option'
          ? env.GRAPHQL_APP_REFUSED
          : undefined,
    }),
    new FastifyAdapter(),
    { logger: env.E2E_LOG ? undefined : false, abortOnError: false },
  );
  app.enableShutdownHooks();
  await app.listen(Number(env.GRAPHQL_APP_PORT ?? 4300), '127.0.0.1');
  console.log('graphql-app listening');
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exit(1);
});
