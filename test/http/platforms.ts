import type { INestApplication, ModuleMetadata } from '@nestjs/common';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { Test } from '@nestjs/testing';

/** The HTTP platforms every e2e case runs on. */
export const PLATFORMS = ['express', 'fastify'] as const;
export type Platform = (typeof PLATFORMS)[number];

/** A running app and the loopback URL it listens on. */
export interface TestApp {
  app: INestApplication;
  url: string;
}

/**
 * Boots an app on `platform` from module metadata, listening on a free loopback port, so that
 * concurrent requests share one real server.
 */
export async function createApp(platform: Platform, metadata: ModuleMetadata): Promise<TestApp> {
  const moduleRef = await Test.createTestingModule(metadata).compile();
  // E2E_LOG=1 shows the apps' logs, for debugging a failing case.
  const logger = process.env.E2E_LOG ? undefined : false;
  const app =
    platform === 'fastify'
      ? moduleRef.createNestApplication(new FastifyAdapter(), { logger })
      : moduleRef.createNestApplication({ logger });
  await app.listen(0, '127.0.0.1');
  const { port } = app.getHttpServer().address() as { port: number };
  return { app, url: `http://127.0.0.1:${port}` };
}

export const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
