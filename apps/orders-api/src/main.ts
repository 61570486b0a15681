import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { AppModule } from './app.module';
import { configureApp } from './app.setup';
import { enableGracefulShutdown } from './common/graceful-shutdown';
import { ConfigError, loadConfig } from './config/orders-api.config';

async function bootstrap(): Promise<void> {
  const config = loadConfig();
  const app = await NestFactory.create<NestExpressApplication>(AppModule.forRoot(config), {
    bodyParser: false,
  });
  configureApp(app, config);
  enableGracefulShutdown(app, config.shutdownTimeoutMs);
  await app.listen(config.port, config.host ?? '0.0.0.0');
  const where =
    config.database.type === 'better-sqlite3' ? config.database.database : config.database.type;
  new Logger('OrdersApi').log(
    `Listening on http://localhost:${config.port} (database: ${where}, idempotency store: ${config.idempotencyStore}); API docs at /docs`,
  );
}

bootstrap().catch((error: unknown) => {
  if (error instanceof ConfigError) {
    console.error(error.message);
  } else {
    new Logger('OrdersApi').error('Could not start', error instanceof Error ? error.stack : error);
  }
  process.exit(1);
});
