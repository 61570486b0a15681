import { bodyLimitBytes, ConfigError, loadConfig, parseDatabaseUrl } from './orders-api.config';

describe('orders API configuration', () => {
  it('needs no variable: SQLite file, TypeORM store, port 3000', () => {
    expect(loadConfig({})).toMatchObject({
      port: 3000,
      httpPlatform: 'express',
      database: { type: 'better-sqlite3', database: 'orders-api.sqlite' },
      idempotencyStore: 'typeorm',
      redisUrl: 'redis://127.0.0.1:6379',
      idempotencyLockTtlMs: 30_000,
      gatewayLatencyMs: 0,
      gatewayFailureRate: 0,
      paymentLeaseMs: 30_000,
      bodyLimit: '100kb',
      shutdownTimeoutMs: 10_000,
      amqpUrl: undefined,
      amqpQueue: 'emails',
      smtpUrl: undefined,
      mailFrom: 'Orders API <orders@example.com>',
      outboxPollIntervalMs: 500,
      outboxLeaseMs: 30_000,
    });
  });

  it('reads the emails variables', () => {
    expect(
      loadConfig({
        AMQP_URL: 'amqps://user:secret@rabbit.example.com:5671/orders',
        AMQP_QUEUE: 'emails.eu',
        SMTP_URL: 'smtp://127.0.0.1:2525',
        MAIL_FROM: 'shop@example.com',
        OUTBOX_POLL_INTERVAL: '2s',
        OUTBOX_LEASE: '1500',
      }),
    ).toMatchObject({
      amqpUrl: 'amqps://user:secret@rabbit.example.com:5671/orders',
      amqpQueue: 'emails.eu',
      smtpUrl: 'smtp://127.0.0.1:2525',
      mailFrom: 'shop@example.com',
      outboxPollIntervalMs: 2_000,
      outboxLeaseMs: 1_500,
    });
  });

  it('never shows the password of a bad AMQP_URL or SMTP_URL', () => {
    expect(() => loadConfig({ AMQP_URL: 'http://guest:hunter2@localhost' })).toThrow(
      'orders-api: AMQP_URL must be a URL (amqp:// or amqps://) with a host; got "http://guest:***@localhost".',
    );
    expect(() => loadConfig({ SMTP_URL: 'imap://me:hunter2@mail.example.com' })).toThrow(
      /SMTP_URL must be a URL \(smtp:\/\/ or smtps:\/\/\) with a host; got "imap:\/\/me:\*\*\*@mail/,
    );
    expect(() => loadConfig({ SMTP_URL: 'smtp//me:hunter2@mail.example.com' })).toThrow(
      /got "smtp\/\/me:\*\*\*@mail.example.com"/,
    );
  });

  it.each([
    ['postgres://u@h:5432/db', { type: 'postgres', url: 'postgres://u@h:5432/db' }],
    ['postgresql://u@h/db', { type: 'postgres', url: 'postgresql://u@h/db' }],
    ['mysql://root@h:3306/db', { type: 'mysql', url: 'mysql://root@h:3306/db' }],
    ['mariadb://root@h:3306/db', { type: 'mariadb', url: 'mysql://root@h:3306/db' }],
    ['/var/data/orders.sqlite', { type: 'better-sqlite3', database: '/var/data/orders.sqlite' }],
    ['sqlite:orders.db', { type: 'better-sqlite3', database: 'orders.db' }],
    ['file:///tmp/o.sqlite', { type: 'better-sqlite3', database: '/tmp/o.sqlite' }],
  ])('reads DATABASE_URL %s', (url, expected) => {
    expect(parseDatabaseUrl(url)).toEqual(expected);
  });

  it('reads durations in milliseconds or as strings', () => {
    const config = loadConfig({ IDEMPOTENCY_LOCK_TTL: '1500', PAYMENT_LEASE: '2s' });
    expect(config.idempotencyLockTtlMs).toBe(1_500);
    expect(config.paymentLeaseMs).toBe(2_000);
  });

  it.each([
    ['express', 'express'],
    ['fastify', 'fastify'],
    [' Fastify ', 'fastify'],
  ])('reads HTTP_PLATFORM=%s', (value, expected) => {
    expect(loadConfig({ HTTP_PLATFORM: value }).httpPlatform).toBe(expected);
  });

  it.each([
    ['100kb', 102_400],
    ['1mb', 1_048_576],
    ['512', 512],
    ['64B', 64],
  ])('counts BODY_LIMIT %s as %d bytes, as body-parser does', (limit, bytes) => {
    expect(bodyLimitBytes(limit)).toBe(bytes);
  });

  it.each([
    ['HTTP_PLATFORM', 'koa'],
    ['DATABASE_URL', 'ftp://host/db'],
    ['IDEMPOTENCY_STORE', 'postgres'],
    ['REDIS_URL', 'localhost:6379'],
    ['PORT', '70000'],
    ['PORT', '3000abc'],
    ['PAYMENT_GATEWAY_FAILURE_RATE', '2'],
    ['PAYMENT_GATEWAY_LATENCY_MS', '-1'],
    ['IDEMPOTENCY_LOCK_TTL', 'soon'],
    ['BODY_LIMIT', 'large'],
    ['AMQP_URL', 'localhost:5672'],
    ['AMQP_URL', 'amqp://'],
    ['SMTP_URL', 'mail.example.com:25'],
    ['SMTP_URL', 'http://mail.example.com'],
    ['SMTP_URL', 'smtp//user@mail.example.com'],
    ['AMQP_QUEUE', 'amq.emails'],
    ['MAIL_FROM', 'orders'],
    ['MAIL_FROM', 'Orders <orders>'],
    ['OUTBOX_POLL_INTERVAL', 'often'],
    ['OUTBOX_LEASE', '0'],
  ])('refuses %s=%s with a message naming the variable', (variable, value) => {
    const attempt = () => loadConfig({ [variable]: value });
    expect(attempt).toThrow(ConfigError);
    expect(attempt).toThrow(
      new RegExp(
        `^orders-api: ${variable} must be .*; got "${value.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}"`,
      ),
    );
  });
});
