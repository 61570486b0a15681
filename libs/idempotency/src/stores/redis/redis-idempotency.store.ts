import { Logger, type OnModuleDestroy } from '@nestjs/common';
import { Cluster, Redis, type ClusterNode, type ClusterOptions, type RedisOptions } from 'ioredis';
import {
  type ClaimOptions,
  type ClaimResult,
  type CompleteOptions,
  IdempotencyStore,
  type ReleaseOptions,
  type RenewOptions,
  type StoredResponse,
} from '../idempotency-store';

/** Options of {@link RedisIdempotencyStore}. */
export interface RedisIdempotencyStoreOptions {
  /**
   * The Redis to use: an ioredis `Redis` or `Cluster` instance (the store leaves it open on close),
   * or a URL / `RedisOptions` / `{ nodes, options }` for a Cluster, from which the store creates a
   * client of its own and closes it on shutdown. A URL may also come first, before the other
   * options: `new RedisIdempotencyStore('redis://user:password@host:6379/2', { keyPrefix })`.
   * @default 'redis://127.0.0.1:6379'
   */
  client?:
    Redis | Cluster | string | RedisOptions | { nodes: ClusterNode[]; options?: ClusterOptions };
  /**
   * Prefix of every key. Each key is `prefix + '{' + storage key + '}'`, hash-tagged so one record
   * lives in one Cluster slot.
   * @default 'idempotency:'
   */
  keyPrefix?: string;
  /**
   * For a client the store creates: how long a command may take before it fails (and the request
   * gets a 503), in milliseconds.
   * @default 2000
   */
  commandTimeoutMs?: number;
}

// One script per operation, each touching one key: atomic on standalone Redis and on a Cluster.
// A record is a hash { s: 'f' (in flight) | 'c' (completed), fp, o (owner), r (response) } whose
// key expires (PEXPIRE) with the lease while in flight, and with the retention once completed.
const CLAIM = `
local rec = redis.call('HMGET', KEYS[1], 's', 'fp', 'r')
if not rec[1] then
  redis.call('HSET', KEYS[1], 's', 'f', 'fp', ARGV[1], 'o', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'a'}
end
if rec[1] == 'c' then
  return {'c', rec[2], rec[3]}
end
return {'f', rec[2], redis.call('PTTL', KEYS[1])}
`;

const OWNED = `
local rec = redis.call('HMGET', KEYS[1], 's', 'o')
if rec[1] ~= 'f' or rec[2] ~= ARGV[1] then
  return 0
end
`;

const COMPLETE = `${OWNED}
redis.call('HSET', KEYS[1], 's', 'c', 'r', ARGV[2])
redis.call('HDEL', KEYS[1], 'o')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`;

const RELEASE = `${OWNED}
redis.call('DEL', KEYS[1])
return 1
`;

const RENEW = `${OWNED}
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`;

interface IdempotencyCommands {
  idempotencyClaim(
    key: string,
    fingerprint: string,
    owner: string,
    leaseMs: number,
  ): Promise<[string, string?, (string | number)?]>;
  idempotencyComplete(key: string, owner: string, response: string, ttlMs: number): Promise<number>;
  idempotencyRelease(key: string, owner: string): Promise<number>;
  idempotencyRenew(key: string, owner: string, leaseMs: number): Promise<number>;
}

type ScriptedClient = (Redis | Cluster) & IdempotencyCommands;

/**
 * A store in Redis, standalone or Cluster, through ioredis. Each operation is one Lua script
 * (sent with EVALSHA, loaded once) in one round trip; a claim of a completed key returns the
 * stored response in that same round trip. Records expire by Redis itself (`PEXPIRE`): the lease
 * while in flight, the retention once completed, so there is nothing to purge.
 *
 * A Redis error or timeout is thrown, so the interceptor answers 503 (fail closed).
 *
 * @example
 * // A URL, redis:// or rediss:// (TLS), with user, password and database as ioredis reads them:
 * new RedisIdempotencyStore('redis://127.0.0.1:6379')
 * new RedisIdempotencyStore('rediss://app:secret@redis.internal:6380/2', { keyPrefix: 'orders:' })
 * // Options, whose client may also be the app's own ioredis Redis or Cluster:
 * new RedisIdempotencyStore({ client: redis, keyPrefix: 'orders:' })
 * IdempotencyModule.forRoot({ store: new RedisIdempotencyStore({ client: process.env.REDIS_URL }) })
 */
export class RedisIdempotencyStore extends IdempotencyStore implements OnModuleDestroy {
  /** The ioredis client in use. */
  readonly client: Redis | Cluster;
  private readonly scripted: ScriptedClient;
  private readonly owned: boolean;
  private readonly logger = new Logger('RedisIdempotencyStore');
  private readonly keyPrefix: string;

  /**
   * @param url A `redis://` or `rediss://` URL, e.g. `redis://user:password@host:6379/2`, passed to
   * ioredis as it is; the same as `{ client: url, ...options }`.
   * @param options The options other than `client`.
   * @throws Error when the first argument is neither such a URL nor an options object.
   * @example new RedisIdempotencyStore('redis://127.0.0.1:6379/2', { keyPrefix: 'orders:' })
   */
  constructor(url: string, options?: Omit<RedisIdempotencyStoreOptions, 'client'>);
  /**
   * @example new RedisIdempotencyStore({ client: 'redis://127.0.0.1:6379/2', keyPrefix: 'orders:' })
   */
  constructor(options?: RedisIdempotencyStoreOptions);
  constructor(
    urlOrOptions: string | RedisIdempotencyStoreOptions = {},
    urlOptions?: Omit<RedisIdempotencyStoreOptions, 'client'>,
  ) {
    super();
    const options = storeOptions(urlOrOptions, urlOptions);
    const { client = 'redis://127.0.0.1:6379', keyPrefix = 'idempotency:' } = options;
    const commandTimeout = options.commandTimeoutMs ?? 2_000;
    this.owned = !isClient(client);
    if (isClient(client)) {
      this.client = client;
    } else if (typeof client === 'string') {
      this.client = new Redis(client, { commandTimeout, maxRetriesPerRequest: 1 });
    } else if ('nodes' in client) {
      this.client = new Cluster(client.nodes, {
        ...client.options,
        redisOptions: { commandTimeout, maxRetriesPerRequest: 1, ...client.options?.redisOptions },
      });
    } else {
      this.client = new Redis({ commandTimeout, maxRetriesPerRequest: 1, ...client });
    }
    if (this.owned) {
      this.watchConnection();
    }
    this.keyPrefix = keyPrefix;
    this.scripted = this.client as ScriptedClient;
    if (typeof this.scripted.idempotencyClaim !== 'function') {
      this.client.defineCommand('idempotencyClaim', { numberOfKeys: 1, lua: CLAIM });
      this.client.defineCommand('idempotencyComplete', { numberOfKeys: 1, lua: COMPLETE });
      this.client.defineCommand('idempotencyRelease', { numberOfKeys: 1, lua: RELEASE });
      this.client.defineCommand('idempotencyRenew', { numberOfKeys: 1, lua: RENEW });
    }
  }

  async claim({ key, fingerprint, ownerToken, leaseMs }: ClaimOptions): Promise<ClaimResult> {
    const [outcome, fp, detail] = await this.scripted.idempotencyClaim(
      this.redisKey(key),
      fingerprint ?? '',
      ownerToken,
      Math.ceil(leaseMs),
    );
    const storedFingerprint = fp ? fp : null;
    switch (outcome) {
      case 'a':
        return { outcome: 'acquired' };
      case 'c':
        return {
          outcome: 'completed',
          fingerprint: storedFingerprint,
          response: JSON.parse(String(detail)) as StoredResponse,
        };
      default:
        return {
          outcome: 'in_flight',
          fingerprint: storedFingerprint,
          leaseRemainingMs: Math.max(0, Number(detail)),
        };
    }
  }

  async complete({ key, ownerToken, response, ttlMs }: CompleteOptions): Promise<boolean> {
    const done = await this.scripted.idempotencyComplete(
      this.redisKey(key),
      ownerToken,
      JSON.stringify(response),
      Math.ceil(ttlMs),
    );
    return done === 1;
  }

  async release({ key, ownerToken }: ReleaseOptions): Promise<boolean> {
    return (await this.scripted.idempotencyRelease(this.redisKey(key), ownerToken)) === 1;
  }

  async renew({ key, ownerToken, leaseMs }: RenewOptions): Promise<boolean> {
    return (
      (await this.scripted.idempotencyRenew(this.redisKey(key), ownerToken, Math.ceil(leaseMs))) ===
      1
    );
  }

  /** Closes the client if the store created it; a client passed in is left open. */
  async close(): Promise<void> {
    if (!this.owned || this.client.status === 'end') {
      return;
    }
    const ended = new Promise((resolve) => this.client.once('end', resolve));
    if (this.client.status === 'ready') {
      await this.client.quit().catch(() => this.client.disconnect());
    } else {
      this.client.disconnect();
    }
    // A client waiting between reconnection attempts (Redis is down) has no socket left to close
    // and never emits 'end'; disconnect() has stopped its reconnecting, so do not wait for it.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([ended, new Promise((resolve) => (timer = setTimeout(resolve, 1_000)))]);
    clearTimeout(timer);
  }

  async onModuleDestroy(): Promise<void> {
    await this.close();
  }

  /**
   * Logs a lost connection once, and its return, for a client the store created. Without an
   * `error` listener ioredis prints every failed reconnection attempt as an unhandled error event.
   */
  private watchConnection(): void {
    let down = false;
    this.client.on('error', (error: Error) => {
      if (!down) {
        down = true;
        this.logger.error(
          `Redis connection lost (${error.message}); requests get 503 until it is back.`,
        );
      }
    });
    this.client.on('ready', () => {
      if (down) {
        down = false;
        this.logger.log('Redis connection is back.');
      }
    });
  }

  private redisKey(key: string): string {
    return `${this.keyPrefix}{${key}}`;
  }
}

/** The schemes ioredis reads as a URL (it matches them the same way). */
const REDIS_URL = /^rediss?:\/\//i;

/**
 * The options of `new RedisIdempotencyStore(url, options?)` or `(options?)`. Anything else is
 * refused here, before any connection: it used to be read as an empty options object, and the
 * store silently connected to 127.0.0.1:6379.
 */
function storeOptions(first: unknown, second: unknown): RedisIdempotencyStoreOptions {
  if (typeof first === 'string' && REDIS_URL.test(first)) {
    if (second === undefined) {
      return { client: first };
    }
    if (isOptions(second) && second.client === undefined) {
      return { ...second, client: first };
    }
  } else if (isOptions(first) && second === undefined) {
    return first;
  }
  throw new Error(
    `nestjs-idempotency: RedisIdempotencyStore takes a redis:// or rediss:// URL (optionally followed by options other than "client") or an options object ({ client, keyPrefix, commandTimeoutMs }); got ${describeArguments(first, second)}.`,
  );
}

function isOptions(value: unknown): value is RedisIdempotencyStoreOptions {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !isClient(value);
}

/** What was passed, for the error, without repeating a string: it may hold a password. */
function describeArguments(first: unknown, second: unknown): string {
  const after = typeof second === 'string' ? 'a string' : describeValue(second);
  if (typeof first === 'string' && REDIS_URL.test(first)) {
    return `a URL followed by ${isOptions(second) ? 'options with a "client"' : after}`;
  }
  return isOptions(first) ? `an options object followed by ${after}` : describeValue(first);
}

function describeValue(value: unknown): string {
  if (typeof value === 'string') {
    return value === '' ? 'an empty string' : 'a string that is not a redis:// or rediss:// URL';
  }
  if (isClient(value)) {
    return 'an ioredis client (pass it as { client })';
  }
  if (isOptions(value)) {
    return 'another options object';
  }
  return value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
}

/** A client from another copy of ioredis fails `instanceof`, so look at its shape instead. */
function isClient(value: unknown): value is Redis | Cluster {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { defineCommand?: unknown }).defineCommand === 'function'
  );
}
