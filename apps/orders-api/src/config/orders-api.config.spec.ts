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
    });
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
