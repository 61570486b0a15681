import { Logger, type OnModuleDestroy } from '@nestjs/common';
import { createHash } from 'node:crypto';
import type { Socket } from 'node:net';
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
  /**
   * Opt-in durability: after a claim that acquired the key and after a completion, wait with
   * Redis `WAIT` until at least `replicas` replicas acknowledged the write, for at most
   * `timeoutMs`. It narrows the window in which a failover loses a record; it is not consensus
   * (see the README, "Replication and failover"). Off by default: writes are acknowledged by the
   * master alone, and replicated asynchronously.
   * @example new RedisIdempotencyStore({ client, replication: { replicas: 1, timeoutMs: 100 } })
   */
  replication?: RedisReplicationOptions;
  /**
   * Writes the commands that requests issue during one turn of the event loop to the connection
   * together, four to a system call: the first command corks the socket, and it is uncorked after
   * every fourth command and in a `setImmediate` after the turn's I/O callbacks ran, so they leave
   * in one `writev` where ioredis would write each one on its own. Under load that saves part of a
   * `write` per request (on loopback the sender also pays the receiver's TCP work); a command waits
   * for the rest of its turn at most. It applies to every command sent on the client meanwhile, the
   * application's own included when the client is shared. `false` writes each command at once, as
   * ioredis does.
   * @default true
   */
  coalesceWrites?: boolean;
}

/** Options of {@link RedisIdempotencyStoreOptions.replication}. */
export interface RedisReplicationOptions {
  /** How many replicas must acknowledge each claim and completion: an integer, at least 1. */
  replicas: number;
  /**
   * How long a `WAIT` may block, in milliseconds. It also blocks the connection it runs on, so
   * every command queued behind it (other requests sharing the client) waits as long. Must be
   * below the client's command timeout.
   * @default 100
   */
  timeoutMs?: number;
  /**
   * When fewer replicas acknowledge in time: `'fail'` throws a {@link RedisReplicationError} (a
   * claim then answers 503, or runs unprotected with `onStoreError: 'open'`, and the in-flight
   * record it wrote is released; a completion is logged and the client still gets its response);
   * `'ignore'` logs a warning (at most one a minute, with a count) and goes on.
   * @default 'fail'
   */
  onTimeout?: 'fail' | 'ignore';
}

/**
 * Thrown by a claim or a completion of {@link RedisIdempotencyStore} with `replication` and
 * `onTimeout: 'fail'` when fewer replicas than `replication.replicas` acknowledged the write in
 * time. The write itself was applied on the master (a claim's in-flight record is then released).
 */
export class RedisReplicationError extends Error {
  override readonly name = 'RedisReplicationError';
  /**
   * Whether the write stays on the master: `true` for a completion (the response is stored, only
   * not known to be on a replica), `false` for a claim (its record was released).
   */
  readonly written: boolean;

  constructor(
    /** The operation whose write was not acknowledged. */
    readonly operation: 'claim' | 'complete',
    /** Replicas that acknowledged, or `null` when it is unknown (the WAIT failed, or ran elsewhere). */
    readonly acknowledged: number | null,
    /** `replication.replicas`. */
    readonly required: number,
    /** `replication.timeoutMs`. */
    readonly timeoutMs: number,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(
      `nestjs-idempotency: ${acknowledged ?? 'an unknown number'} of the ${required} replicas required (replication.replicas) acknowledged the ${operation} within ${timeoutMs} ms (replication.timeoutMs); ${detail} Check the replicas (INFO replication on the master), raise replication.timeoutMs, or set replication.onTimeout: 'ignore' to go on without the acknowledgement.`,
      options,
    );
    this.written = operation === 'complete';
  }
}

// One script per operation, each touching one key: atomic on standalone Redis and on a Cluster.
// A record is a hash { s: 'f' (in flight) | 'c' (completed), fp, o (owner), r (response), b (body) }
// whose key expires (PEXPIRE) with the lease while in flight, and with the retention once completed.
// `r` is the JSON of the status, headers and error flag, and `b` the stored body as it is, so that
// the body (JSON already) is neither escaped again nor parsed twice. Records written before `b`
// existed hold the whole response, body included, in `r`, and are read as such.
const CLAIM = `
local rec = redis.call('HMGET', KEYS[1], 's', 'fp', 'r', 'b')
if not rec[1] then
  redis.call('HSET', KEYS[1], 's', 'f', 'fp', ARGV[1], 'o', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'a'}
end
if rec[1] == 'c' then
  return {'c', rec[2], rec[3], rec[4]}
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
redis.call('HSET', KEYS[1], 's', 'c', 'r', ARGV[2], 'b', ARGV[4])
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

/**
 * A script, sent by hand: EVALSHA, then EVAL if the server does not know it (NOSCRIPT: after a
 * restart, a failover or a SCRIPT FLUSH). Not an ioredis `defineCommand`, whose wrapper costs
 * client CPU on every call (a subclassed command, an extra promise and a callback adapter).
 */
interface Script {
  lua: string;
  sha: string;
}

function script(lua: string): Script {
  return { lua, sha: createHash('sha1').update(lua).digest('hex') };
}

const SCRIPTS = {
  claim: script(CLAIM),
  complete: script(COMPLETE),
  release: script(RELEASE),
  renew: script(RENEW),
};

/**
 * Commands corked together at most (see `coalesceWrites`). Without a bound, callers in a closed
 * loop (a worker with 16 calls in flight) move in lock-step: the whole turn's commands leave at its
 * end, Redis works while the process waits, then the reverse. Four per write kept that overlap and
 * most of the saving in `bench/` (in process: 15% more calls per second than no coalescing, where
 * unbounded had 40% fewer).
 */
const MAX_COALESCED = 4;

/** How long between two warnings of `onTimeout: 'ignore'`. */
const IGNORED_WARNING_INTERVAL_MS = 60_000;

/**
 * The claim script's reply: `['a']`; `['c', fingerprint, response, body]` (`body` null for a record
 * written before the body had a field of its own); `['f', fingerprint, remaining lease]`.
 */
type ClaimReply = [string, string?, (string | number)?, (string | null)?];

/**
 * A store in Redis, standalone or Cluster, through ioredis. Each operation is one Lua script
 * (sent with EVALSHA, loaded once) in one round trip; a claim of a completed key returns the
 * stored response in that same round trip. Records expire by Redis itself (`PEXPIRE`): the lease
 * while in flight, the retention once completed, so there is nothing to purge.
 *
 * A Redis error or timeout is thrown, so the interceptor answers 503 (fail closed).
 *
 * With `replication`, an acquired claim and a completion also wait (`WAIT`) for replicas to
 * acknowledge them; a replay, a release and a renewal do not. An ioredis client configured for
 * Sentinel (`new Redis({ sentinels, name })`, or those options as `client`) works as any `Redis`.
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
  private readonly owned: boolean;
  private readonly logger = new Logger('RedisIdempotencyStore');
  private readonly keyPrefix: string;
  private readonly replication: Required<RedisReplicationOptions> | undefined;
  private lastIgnoredWarningAt = -Infinity;
  private ignoredSinceWarning = 0;
  /** `coalesceWrites`. */
  private readonly coalesceWrites: boolean;
  /** The sockets corked in this turn of the event loop, until the `setImmediate` uncorks them. */
  private corked: Socket[] | undefined;
  /** Commands sent since the sockets were corked. */
  private corkedCommands = 0;
  private flushScheduled = false;
  private readonly flush = (): void => {
    this.flushScheduled = false;
    this.uncork();
  };
  private readonly uncork = (): void => {
    const corked = this.corked;
    this.corked = undefined;
    for (const socket of corked ?? []) {
      socket.uncork();
    }
  };

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
    this.replication = replicationOptions(
      options.replication,
      this.owned ? commandTimeout : clientCommandTimeout(client as Redis | Cluster),
      this.owned ? 'commandTimeoutMs' : "the client's commandTimeout",
    );
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
    this.coalesceWrites = options.coalesceWrites ?? true;
  }

  async claim({ key, fingerprint, ownerToken, leaseMs }: ClaimOptions): Promise<ClaimResult> {
    const redisKey = this.redisKey(key);
    const args = [fingerprint ?? '', ownerToken, Math.ceil(leaseMs)];
    let reply: ClaimReply;
    if (this.replication) {
      // A replay or an in-flight answer wrote nothing, so only an acquired claim waits: in a
      // second round trip, since which of them it is only shows in the script's reply.
      const run = await this.pipelined(redisKey, SCRIPTS.claim, args, false);
      reply = run.reply as typeof reply;
      if (reply[0] === 'a') {
        await this.waitForClaim(redisKey, ownerToken, run.connection, run.node);
      }
    } else {
      reply = (await this.run(SCRIPTS.claim, redisKey, args)) as ClaimReply;
    }
    const [outcome, fp, detail, body] = reply;
    const storedFingerprint = fp ? fp : null;
    switch (outcome) {
      case 'a':
        return { outcome: 'acquired' };
      case 'c':
        return {
          outcome: 'completed',
          fingerprint: storedFingerprint,
          response: storedResponse(String(detail), body),
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
    const { body, ...rest } = response;
    const args = [ownerToken, JSON.stringify(rest), Math.ceil(ttlMs), body] as const;
    if (!this.replication) {
      return (await this.run(SCRIPTS.complete, this.redisKey(key), args)) === 1;
    }
    // The script and its WAIT in one round trip, on one connection.
    const run = await this.pipelined(this.redisKey(key), SCRIPTS.complete, [...args], true);
    if (run.reply !== 1) {
      return false;
    }
    this.checkAcknowledged(
      'complete',
      run.waited,
      'the response is stored on the master, and a failover before a replica has it loses it (the key is then in flight there until its lease lapses, and a retry after that runs the handler again).',
    );
    return true;
  }

  /**
   * Never waits for replicas, even with `replication`: a lost release only leaves the key in
   * flight (409) until its lease lapses.
   */
  async release({ key, ownerToken }: ReleaseOptions): Promise<boolean> {
    return (await this.run(SCRIPTS.release, this.redisKey(key), [ownerToken])) === 1;
  }

  /**
   * Never waits for replicas, even with `replication`: a renewal lost in a failover leaves the
   * previous expiry, still at least two thirds of the lease away, and the next one renews again.
   */
  async renew({ key, ownerToken, leaseMs }: RenewOptions): Promise<boolean> {
    return (
      (await this.run(SCRIPTS.renew, this.redisKey(key), [ownerToken, Math.ceil(leaseMs)])) === 1
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
   * WAIT for an acquired claim, on the connection that ran the script. When too few replicas
   * acknowledged and `onTimeout` is `'fail'`, releases the record before throwing: the handler has
   * not run, so a retry may claim the key at once instead of meeting 409 until the lease lapses.
   */
  private async waitForClaim(
    redisKey: string,
    ownerToken: string,
    connection: number,
    /** The node the claim ran on after an ASK (its slot migrating), where its WAIT must run. */
    node?: Redis,
  ) {
    const replication = this.replication!;
    let waited: Waited;
    try {
      const pipeline = (node ?? this.client)
        .pipeline()
        .wait(replication.replicas, replication.timeoutMs)
        .client('ID');
      // EXISTS only routes the pipeline to the key's slot on a Cluster (WAIT has no key).
      const replies = (await (node ? pipeline : pipeline.exists(redisKey)).exec()) ?? [];
      waited = waitedReply(replies[0], connection, replies[1]);
    } catch (error) {
      waited = { acknowledged: null, error };
    }
    try {
      this.checkAcknowledged('claim', waited, 'the claim was released and the request refused.');
    } catch (error) {
      await this.run(SCRIPTS.release, redisKey, [ownerToken]).catch((releaseError: Error) =>
        this.logger.warn(
          `Could not release the unacknowledged claim (${releaseError.message}); it lapses with its lease.`,
        ),
      );
      throw error;
    }
  }

  /** Throws or warns, as `onTimeout` says, when `waited` is short of `replication.replicas`. */
  private checkAcknowledged(operation: 'claim' | 'complete', waited: Waited, detail: string) {
    const { replicas, timeoutMs, onTimeout } = this.replication!;
    if (waited.acknowledged !== null && waited.acknowledged >= replicas) {
      return;
    }
    const why = waited.error
      ? ` (the WAIT failed: ${waited.error instanceof Error ? waited.error.message : String(waited.error)})`
      : waited.acknowledged === null
        ? ' (the WAIT ran on another connection than the write, after a reconnection)'
        : '';
    if (onTimeout === 'fail') {
      throw new RedisReplicationError(
        operation,
        waited.acknowledged,
        replicas,
        timeoutMs,
        `${why ? why.slice(1) + '; ' : ''}${detail}`,
        { cause: waited.error },
      );
    }
    this.ignoredSinceWarning += 1;
    const now = Date.now();
    if (now - this.lastIgnoredWarningAt >= IGNORED_WARNING_INTERVAL_MS) {
      this.logger.warn(
        `${this.ignoredSinceWarning} write(s) acknowledged by fewer than ${replicas} replica(s) within ${timeoutMs} ms since the last warning, last a ${operation} acknowledged by ${waited.acknowledged ?? 'an unknown number'}${why}; going on (replication.onTimeout: 'ignore'). A failover now may lose these records.`,
      );
      this.lastIgnoredWarningAt = now;
      this.ignoredSinceWarning = 0;
    }
  }

  /**
   * Runs `script` on the master of the key's slot in one pipeline, between two `CLIENT ID`s, with
   * a WAIT after it when `wait`. On a Cluster, ioredis sends a whole pipeline to the node of the
   * slot of its keyed commands, keyless ones (WAIT, CLIENT) included, on that node's connection.
   */
  private async pipelined(
    redisKey: string,
    { lua, sha }: Script,
    args: (string | number)[],
    wait: boolean,
  ): Promise<{ reply: unknown; connection: number; waited: Waited; node?: Redis }> {
    const { replicas, timeoutMs } = this.replication!;
    let useEval = false;
    let redirected = false;
    /** The node an ASK sent the key to, while its slot migrates: asked directly, with ASKING. */
    let asked: Redis | undefined;
    for (;;) {
      const pipeline = (asked ?? this.client).pipeline().client('ID');
      if (asked) {
        pipeline.asking();
      }
      // EVALSHA, not the defined command: ioredis resends a defined command that met NOSCRIPT
      // outside the pipeline, after the WAIT, which would then not cover its write.
      if (useEval) {
        pipeline.eval(lua, 1, redisKey, ...args);
      } else {
        pipeline.evalsha(sha, 1, redisKey, ...args);
      }
      if (wait) {
        pipeline.wait(replicas, timeoutMs).client('ID');
      }
      this.cork();
      const replies = (await pipeline.exec()) ?? [];
      const at = asked ? 2 : 1;
      const [scriptError, reply] = replies[at] ?? [new Error('no reply to the script')];
      if (scriptError) {
        // The server refused the script before running it: nothing was written, so run it again.
        if (!useEval && scriptError.message.startsWith('NOSCRIPT')) {
          useEval = true;
          continue;
        }
        if (!redirected && isCluster(this.client)) {
          if (scriptError.message.startsWith('MOVED')) {
            redirected = true;
            await this.refreshSlots(this.client);
            continue;
          }
          const target = /^ASK \d+ (\S+)/.exec(scriptError.message)?.[1];
          asked = target ? nodeAt(this.client, target) : undefined;
          if (asked) {
            redirected = true;
            continue;
          }
        }
        throw scriptError;
      }
      const [idError, connection] = replies[0];
      if (idError) {
        throw idError;
      }
      return {
        reply,
        connection: Number(connection),
        waited: wait
          ? waitedReply(replies[at + 1], Number(connection), replies[at + 2])
          : { acknowledged: 0 },
        node: asked,
      };
    }
  }

  /**
   * Runs a script on its key in one round trip: EVALSHA, and EVAL only if the server answers
   * NOSCRIPT (it refused the script before running it, so nothing was written).
   */
  private async run(
    { lua, sha }: Script,
    redisKey: string,
    args: readonly (string | number)[],
  ): Promise<unknown> {
    this.cork();
    try {
      return await this.client.evalsha(sha, 1, redisKey, ...args);
    } catch (error) {
      if (error instanceof Error && error.message.startsWith('NOSCRIPT')) {
        return this.client.eval(lua, 1, redisKey, ...args);
      }
      throw error;
    }
  }

  private refreshSlots(cluster: Cluster): Promise<void> {
    return new Promise((resolve) => cluster.refreshSlotsCache(() => resolve()));
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

  /**
   * Corks the client's sockets (a Cluster's masters) for the rest of this turn of the event loop,
   * once per turn (see `coalesceWrites`). A socket that is not connected yet is left alone: ioredis
   * queues the commands and writes them when it connects.
   */
  private cork(): void {
    if (!this.coalesceWrites) {
      return;
    }
    if (this.corked) {
      if (++this.corkedCommands < MAX_COALESCED) {
        return;
      }
      // Enough for one write: send them, so that Redis works on them while this turn goes on.
      this.uncork();
    }
    const corked: Socket[] = [];
    for (const node of isCluster(this.client) ? this.client.nodes('master') : [this.client]) {
      const socket = node.stream as Socket | undefined;
      if (node.status === 'ready' && socket && !socket.writableCorked) {
        socket.cork();
        corked.push(socket);
      }
    }
    if (corked.length > 0) {
      this.corked = corked;
      this.corkedCommands = 1;
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(this.flush);
      }
    }
  }

  private redisKey(key: string): string {
    return `${this.keyPrefix}{${key}}`;
  }
}

/**
 * A completed record's response: `r` without the body and `b` the body, or, for a record written
 * before `b` existed, `r` alone with the body inside.
 */
function storedResponse(r: string, body: string | null | undefined): StoredResponse {
  const response = JSON.parse(r) as StoredResponse;
  if (typeof body === 'string') {
    response.body = body;
  }
  return response;
}

/** What a WAIT answered: replicas that acknowledged, `null` when unknown. */
interface Waited {
  acknowledged: number | null;
  error?: unknown;
}

/**
 * A WAIT's reply, trusted only if the connection after it is the one that ran the write: on a
 * new connection (ioredis resends unanswered commands after a reconnection, maybe to a promoted
 * replica) WAIT has no write of its own to wait for, and answers at once.
 */
function waitedReply(wait: unknown, connection: number, after: unknown): Waited {
  const [waitError, acknowledged] = wait as [Error | null, unknown];
  if (waitError) {
    return { acknowledged: null, error: waitError };
  }
  const [idError, id] = after as [Error | null, unknown];
  if (idError) {
    return { acknowledged: null, error: idError };
  }
  return { acknowledged: Number(id) === connection ? Number(acknowledged) : null };
}

/** The command timeout of a client passed in, in milliseconds, if it has one. */
function clientCommandTimeout(client: Redis | Cluster): number | undefined {
  const options = client.options as RedisOptions & ClusterOptions;
  return isCluster(client) ? options.redisOptions?.commandTimeout : options.commandTimeout;
}

const REPLICATION_KEYS = ['replicas', 'timeoutMs', 'onTimeout'];

/** `replication` with its defaults, or an error naming the option and the fix. */
function replicationOptions(
  value: unknown,
  commandTimeout: number | undefined,
  commandTimeoutName: string,
): Required<RedisReplicationOptions> | undefined {
  if (value === undefined) {
    return undefined;
  }
  const fail = (message: string): never => {
    throw new Error(`nestjs-idempotency: RedisIdempotencyStore option ${message}`);
  };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return fail(
      `"replication" must be an object such as { replicas: 1, timeoutMs: 100, onTimeout: 'fail' }, or left out to not wait for replicas.`,
    );
  }
  const unknown = Object.keys(value).filter((key) => !REPLICATION_KEYS.includes(key));
  if (unknown.length > 0) {
    fail(
      `"replication" has no ${unknown.map((key) => `"${key}"`).join(', ')}; its options are replicas, timeoutMs and onTimeout.`,
    );
  }
  const { replicas, timeoutMs = 100, onTimeout = 'fail' } = value as RedisReplicationOptions;
  if (!Number.isInteger(replicas) || replicas < 1) {
    fail(
      `"replication.replicas" must be an integer of at least 1 (how many replicas must acknowledge each write); got ${String(replicas)}. Leave "replication" out to not wait for replicas.`,
    );
  }
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    fail(
      `"replication.timeoutMs" must be a number of milliseconds above 0 (WAIT 0 would block forever); got ${String(timeoutMs)}.`,
    );
  }
  if (onTimeout !== 'fail' && onTimeout !== 'ignore') {
    fail(`"replication.onTimeout" must be 'fail' or 'ignore'; got ${String(onTimeout)}.`);
  }
  const waitMs = Math.ceil(timeoutMs);
  if (commandTimeout !== undefined && commandTimeout > 0 && waitMs >= commandTimeout) {
    fail(
      `"replication.timeoutMs" (${waitMs}) must be below ${commandTimeoutName} (${commandTimeout}), or the command timeout cuts every WAIT short; lower replication.timeoutMs or raise ${commandTimeoutName}.`,
    );
  }
  return { replicas, timeoutMs: waitMs, onTimeout };
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
    `nestjs-idempotency: RedisIdempotencyStore takes a redis:// or rediss:// URL (optionally followed by options other than "client") or an options object ({ client, keyPrefix, commandTimeoutMs, replication }); got ${describeArguments(first, second)}.`,
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

/** The node of `cluster` at `address` (`host:port`, as an ASK names it), if it knows one. */
function nodeAt(cluster: Cluster, address: string): Redis | undefined {
  return cluster.nodes('all').find(({ options }) => `${options.host}:${options.port}` === address);
}

function isCluster(client: Redis | Cluster): client is Cluster {
  return (client as { isCluster?: boolean }).isCluster === true;
}

/** A client from another copy of ioredis fails `instanceof`, so look at its shape instead. */
function isClient(value: unknown): value is Redis | Cluster {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { defineCommand?: unknown }).defineCommand === 'function'
  );
}
