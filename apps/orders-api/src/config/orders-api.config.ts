import { randomBytes } from 'node:crypto';
import ms from 'ms';

/** Where the app keeps its tables, from `DATABASE_URL`. */
export type DatabaseConfig =
  | { type: 'postgres'; url: string }
  | { type: 'mysql' | 'mariadb'; url: string }
  | { type: 'better-sqlite3'; database: string };

/** Which store keeps the idempotency records, from `IDEMPOTENCY_STORE`. */
export type IdempotencyStoreKind = 'typeorm' | 'redis' | 'memory';

/** Which HTTP platform serves the app, from `HTTP_PLATFORM`. */
export type HttpPlatform = 'express' | 'fastify';

/** The whole configuration of the orders API, read once from the environment at start. */
export interface OrdersApiConfig {
  /** `PORT`, default 3000. */
  port: number;
  /** `HOST`, default all interfaces. */
  host?: string;
  /** `HTTP_PLATFORM`: `express` (the default) or `fastify`; the API behaves the same on both. */
  httpPlatform: HttpPlatform;
  /** `DATABASE_URL`: `postgres://...`, `mysql://...` / `mariadb://...`, or a SQLite file path. */
  database: DatabaseConfig;
  /** `IDEMPOTENCY_STORE`, default `typeorm` (the app's own database). */
  idempotencyStore: IdempotencyStoreKind;
  /** `REDIS_URL`, default `redis://127.0.0.1:6379`; used when the store is `redis`. */
  redisUrl: string;
  /** `IDEMPOTENCY_LOCK_TTL` (ms or a duration string), default 30 s: the lease of a running request. */
  idempotencyLockTtlMs: number;
  /** `PAYMENT_GATEWAY_LATENCY_MS`, default 0: how long the simulated gateway takes per charge. */
  gatewayLatencyMs: number;
  /** `PAYMENT_GATEWAY_FAILURE_RATE` between 0 and 1, default 0: share of charges that fail (502). */
  gatewayFailureRate: number;
  /**
   * `PAYMENT_LEASE` (ms or a duration string), default 30 s: how long a payment attempt holds its
   * order. A pending payment left behind by a process that died is taken over after it.
   */
  paymentLeaseMs: number;
  /** `BODY_LIMIT`, default `100kb`: larger request bodies get 413. */
  bodyLimit: string;
  /** `SHUTDOWN_TIMEOUT` (ms or a duration string), default 10 s: how long shutdown waits for requests. */
  shutdownTimeoutMs: number;
  /**
   * `IDEMPOTENCY_KEY_SECRETS`: the secrets of the keys the checkout page gets from
   * `POST /idempotency-keys`, `id:secret` pairs separated by commas, the signing one first. Unset:
   * one random secret for this process (its keys do not survive a restart or reach another
   * instance), and `issuedKeySecretsRandom` says so.
   */
  issuedKeySecrets: { id: string; secret: string | Buffer }[];
  issuedKeySecretsRandom: boolean;
  /** `IDEMPOTENCY_KEY_TTL` (ms or a duration string), default 1 h: how long an issued key is accepted. */
  issuedKeyTtlMs: number;
  /**
   * `AMQP_URL` (`amqp://` or `amqps://`): the RabbitMQ the outbox relay publishes emails to and the
   * mailer consumes them from. Unset: the relay hands them to the same consumer in process.
   */
  amqpUrl?: string;
  /** `AMQP_QUEUE`, default `emails`: the durable queue of the emails on `AMQP_URL`. */
  amqpQueue: string;
  /**
   * `SMTP_URL` (`smtp://` or `smtps://`, user and password in the URL): where the mailer sends.
   * Unset: mails are captured in the database, and `GET /emails/:id` shows them.
   */
  smtpUrl?: string;
  /** `MAIL_FROM`, default `Orders API <orders@example.com>`: the sender of every email. */
  mailFrom: string;
  /** `OUTBOX_POLL_INTERVAL` (ms or a duration string), default 500 ms: how often the relay looks for queued emails. */
  outboxPollIntervalMs: number;
  /**
   * `OUTBOX_LEASE` (ms or a duration string), default 30 s: how long a relay holds an email it is
   * publishing. An email left by a relay that died is published again after it; a failed publish
   * is retried sooner, after a backoff from 1 s doubling up to this lease.
   */
  outboxLeaseMs: number;
}

/** A variable that does not parse; the message names it and what it accepts. */
export class ConfigError extends Error {
  constructor(variable: string, expected: string, got: string) {
    super(`orders-api: ${variable} must be ${expected}; got ${JSON.stringify(got)}.`);
    this.name = 'ConfigError';
  }
}

const DEFAULT_SQLITE_FILE = 'orders-api.sqlite';

/**
 * Reads the configuration from `env` (the process environment by default) and checks every value,
 * so a mistake fails at start with the variable's name rather than on the first request.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): OrdersApiConfig {
  return {
    port: integer(env, 'PORT', 3000, 0, 65_535),
    host: env.HOST || undefined,
    httpPlatform: oneOf(env, 'HTTP_PLATFORM', ['express', 'fastify'], 'express'),
    database: parseDatabaseUrl(env.DATABASE_URL),
    idempotencyStore: oneOf(env, 'IDEMPOTENCY_STORE', ['typeorm', 'redis', 'memory'], 'typeorm'),
    redisUrl: redisUrl(env.REDIS_URL),
    idempotencyLockTtlMs: duration(env, 'IDEMPOTENCY_LOCK_TTL', '30s'),
    gatewayLatencyMs: integer(env, 'PAYMENT_GATEWAY_LATENCY_MS', 0, 0, 600_000),
    gatewayFailureRate: rate(env, 'PAYMENT_GATEWAY_FAILURE_RATE'),
    paymentLeaseMs: duration(env, 'PAYMENT_LEASE', '30s'),
    bodyLimit: bodyLimit(env.BODY_LIMIT),
    shutdownTimeoutMs: duration(env, 'SHUTDOWN_TIMEOUT', '10s'),
    ...issuedKeySecrets(env.IDEMPOTENCY_KEY_SECRETS),
    issuedKeyTtlMs: duration(env, 'IDEMPOTENCY_KEY_TTL', '1h'),
    amqpUrl: serviceUrl(env, 'AMQP_URL', ['amqp', 'amqps']),
    amqpQueue: amqpQueue(env.AMQP_QUEUE),
    smtpUrl: serviceUrl(env, 'SMTP_URL', ['smtp', 'smtps']),
    mailFrom: mailFrom(env.MAIL_FROM),
    outboxPollIntervalMs: duration(env, 'OUTBOX_POLL_INTERVAL', '500ms'),
    outboxLeaseMs: duration(env, 'OUTBOX_LEASE', '30s'),
  };
}

/**
 * An optional URL of one of `schemes` with a host. The message of a bad one never shows its
 * password.
 */
function serviceUrl(
  env: NodeJS.ProcessEnv,
  name: string,
  schemes: readonly string[],
): string | undefined {
  const raw = env[name]?.trim();
  if (!raw) {
    return undefined;
  }
  let url: URL | undefined;
  try {
    url = new URL(raw);
  } catch {
    url = undefined;
  }
  if (!url || !schemes.includes(url.protocol.slice(0, -1).toLowerCase()) || !url.hostname) {
    throw new ConfigError(
      name,
      `a URL (${schemes.map((scheme) => `${scheme}://`).join(' or ')}) with a host`,
      raw.replace(/([^:/@\s]+):[^@/\s]*@/, '$1:***@'),
    );
  }
  return raw;
}

/** `AMQP_QUEUE`: RabbitMQ allows up to 255 bytes and reserves names starting with `amq.`. */
function amqpQueue(value: string | undefined): string {
  const raw = value?.trim() || 'emails';
  if (Buffer.byteLength(raw) > 255 || /^amq\./i.test(raw) || /[\u0000-\u001f\u007f]/.test(raw)) {
    throw new ConfigError(
      'AMQP_QUEUE',
      'a queue name of at most 255 bytes, without control characters, not starting with "amq."',
      raw,
    );
  }
  return raw;
}

/** `MAIL_FROM`: an address, bare (`orders@example.com`) or with a name (`Shop <orders@example.com>`). */
function mailFrom(value: string | undefined): string {
  const raw = value?.trim() || 'Orders API <orders@example.com>';
  if (!/^(?:[^<>\r\n]*<[^\s<>@]+@[^\s<>@]+>|[^\s<>@]+@[^\s<>@]+)$/.test(raw)) {
    throw new ConfigError('MAIL_FROM', 'an email address, bare or as "Name <address>"', raw);
  }
  return raw;
}

/** `IDEMPOTENCY_KEY_SECRETS`: `id:secret,id:secret`; base64 secrets hold no `:` or `,`. */
function issuedKeySecrets(
  value: string | undefined,
): Pick<OrdersApiConfig, 'issuedKeySecrets' | 'issuedKeySecretsRandom'> {
  if (!value?.trim()) {
    return {
      issuedKeySecrets: [{ id: 'random', secret: randomBytes(32) }],
      issuedKeySecretsRandom: true,
    };
  }
  const pairs = value.split(',');
  const secrets = pairs.map((pair) => {
    const colon = pair.indexOf(':');
    return { id: pair.slice(0, colon).trim(), secret: pair.slice(colon + 1).trim() };
  });
  if (
    secrets.some(({ id, secret }) => !/^[\w-]{1,32}$/.test(id) || Buffer.byteLength(secret) < 32)
  ) {
    // Never the value itself in the message: it holds secrets.
    throw new ConfigError(
      'IDEMPOTENCY_KEY_SECRETS',
      'id:secret pairs separated by commas, ids of 1 to 32 letters, digits, "_" or "-", secrets of at least 32 bytes (openssl rand -base64 32)',
      `${pairs.length} entr${pairs.length === 1 ? 'y' : 'ies'}, not shown`,
    );
  }
  return { issuedKeySecrets: secrets, issuedKeySecretsRandom: false };
}

/**
 * `postgres://` / `postgresql://` is PostgreSQL, `mysql://` MySQL and `mariadb://` MariaDB (both
 * through mysql2); anything else is a SQLite file path (`sqlite:` or `file:` prefixes allowed).
 */
export function parseDatabaseUrl(value: string | undefined): DatabaseConfig {
  const url = value?.trim();
  if (!url) {
    return { type: 'better-sqlite3', database: DEFAULT_SQLITE_FILE };
  }
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase();
  switch (scheme) {
    case 'postgres':
    case 'postgresql':
      return { type: 'postgres', url };
    case 'mysql':
      return { type: 'mysql', url };
    case 'mariadb':
      // mysql2 parses the URL; it knows the mysql scheme only.
      return { type: 'mariadb', url: url.replace(/^mariadb:/i, 'mysql:') };
    case undefined:
    case 'sqlite':
    case 'file':
      return { type: 'better-sqlite3', database: url.replace(/^(sqlite|file):(\/\/)?/i, '') };
    default:
      throw new ConfigError(
        'DATABASE_URL',
        'a postgres://, mysql:// or mariadb:// URL, or a SQLite file path',
        url,
      );
  }
}

function redisUrl(value: string | undefined): string {
  const url = value?.trim() || 'redis://127.0.0.1:6379';
  if (!/^rediss?:\/\//i.test(url)) {
    throw new ConfigError('REDIS_URL', 'a redis:// or rediss:// URL', url);
  }
  return url;
}

function integer(
  env: NodeJS.ProcessEnv,
  name: string,
  fallback: number,
  min: number,
  max: number,
): number {
  const raw = env[name]?.trim();
  if (!raw) {
    return fallback;
  }
  const value = Number(raw);
  if (!/^\d+$/.test(raw) || value < min || value > max) {
    throw new ConfigError(name, `an integer from ${min} to ${max}`, raw);
  }
  return value;
}

function rate(env: NodeJS.ProcessEnv, name: string): number {
  const raw = env[name]?.trim();
  if (!raw) {
    return 0;
  }
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0 || value > 1) {
    throw new ConfigError(name, 'a number from 0 to 1', raw);
  }
  return value;
}

function duration(env: NodeJS.ProcessEnv, name: string, fallback: string): number {
  const raw = env[name]?.trim() || fallback;
  const value = /^\d+$/.test(raw) ? Number(raw) : ms(raw as ms.StringValue);
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new ConfigError(name, "milliseconds or a duration such as '500ms', '30s' or '1h'", raw);
  }
  return value;
}

function bodyLimit(value: string | undefined): string {
  const raw = value?.trim() || '100kb';
  if (!/^\d+(b|kb|mb)?$/i.test(raw)) {
    throw new ConfigError('BODY_LIMIT', "a size such as '100kb' or '1mb'", raw);
  }
  return raw;
}

/** A `BODY_LIMIT` in bytes, counted as Express's body parser does (1kb = 1024 bytes). */
export function bodyLimitBytes(limit: string): number {
  const [, digits, unit = 'b'] = /^(\d+)(b|kb|mb)?$/i.exec(limit.trim()) ?? [];
  if (digits === undefined) {
    throw new ConfigError('BODY_LIMIT', "a size such as '100kb' or '1mb'", limit);
  }
  return Number(digits) * { b: 1, kb: 1024, mb: 1024 * 1024 }[unit.toLowerCase() as 'b'];
}

function oneOf<T extends string>(
  env: NodeJS.ProcessEnv,
  name: string,
  values: readonly T[],
  fallback: T,
): T {
  const raw = env[name]?.trim().toLowerCase() || fallback;
  if (!values.includes(raw as T)) {
    throw new ConfigError(name, `one of ${values.join(', ')}`, raw);
  }
  return raw as T;
}

/** Injection token of the {@link OrdersApiConfig}. */
export const ORDERS_API_CONFIG = Symbol('ORDERS_API_CONFIG');
