import { type INestApplication, Logger } from '@nestjs/common';
import type { Server } from 'node:http';

/**
 * Shuts the app down on SIGTERM / SIGINT without cutting requests short. Nest's own shutdown
 * destroys providers (the database, the Redis client) before it closes the HTTP server, which
 * would fail requests still running. Here the server first stops accepting connections, running
 * requests finish (up to `timeoutMs`; their idempotency records complete as usual), and only then
 * does Nest close the app: the outbox relay stops once its publishes under way settle (its
 * `beforeApplicationShutdown`), the mailer stops consuming and waits for the emails it is sending
 * to be recorded and acknowledged (its transport's `close()`, up to `timeoutMs` again), and then
 * the stores, RabbitMQ and SMTP connections close. Requests or sends still running at a deadline
 * keep their idempotency records in flight until their lease lapses, so a retry (or the
 * redelivery) is never lost and never runs twice.
 */
export function enableGracefulShutdown(app: INestApplication, timeoutMs: number): void {
  const logger = new Logger('Shutdown');
  const running = new Set<{ headersSent: boolean; setHeader(name: string, value: string): void }>();
  let draining = false;
  let onIdle: (() => void) | undefined;

  app.use(
    (
      _req: unknown,
      res: {
        headersSent: boolean;
        setHeader(name: string, value: string): void;
        once(event: 'close', listener: () => void): void;
      },
      next: () => void,
    ) => {
      running.add(res);
      if (draining) {
        res.setHeader('Connection', 'close');
      }
      res.once('close', () => {
        running.delete(res);
        if (running.size === 0) {
          onIdle?.();
        }
      });
      next();
    },
  );

  const shutdown = async (signal: NodeJS.Signals) => {
    if (draining) {
      return;
    }
    draining = true;
    const server = app.getHttpServer() as Server;
    logger.log(`${signal}: closing; waiting for ${running.size} running request(s)`);
    server.close();
    server.closeIdleConnections();
    for (const res of running) {
      if (!res.headersSent) {
        res.setHeader('Connection', 'close');
      }
    }
    if (running.size > 0) {
      const idle = new Promise<void>((resolve) => (onIdle = resolve));
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), timeoutMs);
      });
      if ((await Promise.race([idle, deadline])) === 'timeout') {
        logger.warn(
          `${running.size} request(s) still running after ${timeoutMs} ms; their idempotency leases will lapse.`,
        );
      }
      clearTimeout(timer);
    }
    server.closeAllConnections();
    await app.close();
    logger.log('Closed');
    process.exit(0);
  };
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, (received) => void shutdown(received));
  }
}
