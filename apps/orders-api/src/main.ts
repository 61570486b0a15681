import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { AppModule } from './app.module';
import { configureApp, createHttpAdapter } from './app.setup';
import { enableGracefulShutdown } from './common/graceful-shutdown';
import { ConfigError, loadConfig } from './config/orders-api.config';

async function bootstrap(): Promise<void> {
  const config = loadConfig();
  const app = await NestFactory.create(AppModule.forRoot(config), createHttpAdapter(config), {
    bodyParser: false,
  });
  configureApp(app, config);
  enableGracefulShutdown(app, config.shutdownTimeoutMs);
  await app.listen(config.port, config.host ?? '0.0.0.0');
  // After listen(), which initialised the modules the mailer's interceptor needs. Not awaited:
  // with RabbitMQ down at start, the API still serves and emails wait in the outbox; the consumer
  // connects (and logs it) once RabbitMQ is up.
  app.startAllMicroservices().catch((error: unknown) => {
    new Logger('Mailer').error('The email consumer could not start', String(error));
  });
  const where =
    config.database.type === 'better-sqlite3' ? config.database.database : config.database.type;
  const logger = new Logger('OrdersApi');
  logger.log(
    `Listening on http://localhost:${config.port} on ${config.httpPlatform} (database: ${where}, idempotency store: ${config.idempotencyStore}); API docs at /docs, checkout page at /checkout`,
  );
  logger.log(
    `Emails: ${config.amqpUrl === undefined ? 'relayed to the mailer in process' : `through the RabbitMQ queue ${config.amqpQueue}`}, ${config.smtpUrl === undefined ? 'captured (GET /emails/:id shows them)' : `sent over SMTP to ${new URL(config.smtpUrl).host}`}`,
  );
  if (config.issuedKeySecretsRandom) {
    logger.warn(
      'IDEMPOTENCY_KEY_SECRETS is not set: the checkout keys are signed with a random secret of this process, so they do not survive a restart and no other instance accepts them',
    );
  }
}

bootstrap().catch((error: unknown) => {
  if (error instanceof ConfigError) {
    console.error(error.message);
  } else {
    new Logger('OrdersApi').error('Could not start', error instanceof Error ? error.stack : error);
  }
  process.exit(1);
});
