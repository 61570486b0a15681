import type { ExecutionContext } from '@nestjs/common';
import type { IdempotencyStore } from './stores/idempotency-store';

/** A duration: milliseconds, or a string understood by the `ms` package (`'30s'`, `'24h'`). */
export type Duration = number | string;

/** HTTP verbs the library can protect. GET, HEAD and OPTIONS are never protected. */
export type IdempotentMethod = 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/**
 * Where the key comes from: the request header (`'header'`), the request fingerprint
 * (`'fingerprint'`, a dedup window for clients that send no key), a field of the payload
 * ({@link IdempotencyPayloadKeySource}), a function, or only keys this server issued (`'issued'`,
 * or {@link IdempotencyIssuedKeySource} to name their scope or read them from elsewhere than the
 * header). Issued keys need the module option `issuedKeys`.
 */
export type IdempotencyKeySource =
  | 'header'
  | 'fingerprint'
  | 'issued'
  | IdempotencyPayloadKeySource
  | IdempotencyIssuedKeySource
  | ((context: ExecutionContext) => string | undefined);

/**
 * The key is a field of the payload, named by a dot-separated path: of the request body over HTTP,
 * of the message data on a microservice handler, of the arguments of a GraphQL mutation. A string
 * is taken as it is, a finite number as its decimal form; a missing field (or `null`) is no key,
 * anything else an invalid one.
 *
 * @example key: { path: 'meta.eventId' }
 */
export interface IdempotencyPayloadKeySource {
  /**
   * Dot-separated path of the field: `'idempotencyKey'`, `'meta.eventId'`.
   * @example 'meta.eventId'
   */
  path: string;
}

/**
 * Accept only keys `IdempotencyKeyIssuer` issued for the scope name `issued`; any other key answers
 * 400 `IDEMPOTENCY_KEY_NOT_ISSUED` (an expired one, 400 `IDEMPOTENCY_KEY_EXPIRED`) before the store
 * is touched. `key: 'issued'` is `{ issued: 'default' }`.
 *
 * @example
 * // A plain HTML form posts the key it was rendered with in a hidden field.
 * key: {
 *   issued: 'checkout',
 *   from: (context) => context.switchToHttp().getRequest().body?.idempotencyKey,
 * }
 */
export interface IdempotencyIssuedKeySource {
  /**
   * Scope name the key must have been issued for (`issuer.issue({ scope })`): a key issued for
   * another name is refused. 1 to 100 printable ASCII characters; it is not a storage scope (see
   * `scope`), only what the key was issued for.
   * @example 'checkout'
   */
  issued: string;
  /**
   * Where the issued key is read from: the request header (`headerName`), or a function (for
   * example a hidden field of a form, which cannot set headers).
   * @default 'header'
   */
  from?: 'header' | ((context: ExecutionContext) => string | undefined);
}

/**
 * What a key is unique within. `'endpoint'`: verb + route template, plus the principal when the
 * request is authenticated (on a microservice handler: its pattern, plus the principal when
 * `principal` resolves one). `'user'`: the principal only (one key space per user across routes).
 * `'global'`: nothing (one key space for the whole application). A function returns the parts.
 */
export type IdempotencyScope =
  'endpoint' | 'user' | 'global' | ((context: ExecutionContext) => readonly string[]);

/** Computes a request fingerprint; two requests with one key must have equal fingerprints. */
export type IdempotencyFingerprintFn = (context: ExecutionContext) => string;

/** SQL isolation levels of a transactional run. */
export type IdempotencyIsolationLevel =
  'READ UNCOMMITTED' | 'READ COMMITTED' | 'REPEATABLE READ' | 'SERIALIZABLE';

/** Options of transactional mode (`transaction`). */
export interface IdempotencyTransactionOptions {
  /**
   * Isolation level of the transaction the handler runs in. SQLite has one level (SERIALIZABLE) and
   * ignores this.
   * @default 'READ COMMITTED'
   */
  isolationLevel?: IdempotencyIsolationLevel;
}

/** Options of `@Idempotent()`, also accepted module-wide by `IdempotencyModule.forRoot()`. */
export interface IdempotentOptions {
  /**
   * How long a completed response is replayed, from completion.
   * @default '24h'
   */
  ttl?: Duration;
  /**
   * What the key is unique within.
   * @default 'endpoint'
   */
  scope?: IdempotencyScope;
  /**
   * When `true`, a request without a key answers 400 `IDEMPOTENCY_KEY_MISSING`; when `false` the
   * handler runs unprotected.
   * @default true
   */
  required?: boolean;
  /**
   * Verbs a class-level `@Idempotent()` applies to. A handler-level decorator applies to the verb of
   * its handler whatever this says (except GET, HEAD and OPTIONS, never protected). HTTP only: a
   * class-level decorator covers every `@MessagePattern` and `@EventPattern` handler of its class.
   * @default ['POST', 'PATCH']
   */
  methods?: readonly IdempotentMethod[];
  /**
   * Where the key comes from. `'header'` on a microservice handler is the transport's own: the
   * AMQP header `headerName` (else the `messageId` property), the NATS header, the MQTT 5 user
   * property, the Redis or TCP packet metadata entry, the Kafka header.
   * @default 'header'
   */
  key?: IdempotencyKeySource;
  /**
   * Request fingerprint used to catch a key reused for another payload; `false` turns it off.
   * The default hashes (SHA-256) the verb, the route template, its path parameters (so one key on
   * `/payments/1/capture` then `/payments/2/capture` is a reuse, never a replay), and the
   * canonical JSON of the body (object keys sorted) and of the query. On a microservice handler:
   * the pattern and the canonical JSON of the message data.
   * @default the built-in fingerprint
   */
  fingerprint?: IdempotencyFingerprintFn | false;
  /**
   * Lease length while the handler runs. It is renewed every `lockTtl / 3`; a process that dies
   * stops renewing, and once the lease lapses the next retry runs the handler again.
   * @default '30s'
   */
  lockTtl?: Duration;
  /**
   * Longest time a lease is renewed for one run. A handler still running after this is taken for
   * hung: its lease is no longer renewed (a warning is logged), so the key frees once the lease
   * lapses and a retry can run.
   * @default '1h'
   */
  maxLockHold?: Duration;
  /**
   * `Retry-After` of a 409 for a request in flight (whole seconds in the header, rounded up),
   * never more than the remaining lease.
   * @default '1s'
   */
  retryAfter?: Duration;
  /**
   * What a duplicate does while the first request is in flight: `'reject'` answers 409 with
   * `Retry-After`; `'wait'` waits up to `waitTimeout` for the first to finish and replays its
   * response (409 on timeout).
   * @default 'reject'
   */
  concurrent?: 'reject' | 'wait';
  /**
   * Longest wait of a duplicate with `concurrent: 'wait'`.
   * @default '10s'
   */
  waitTimeout?: Duration;
  /**
   * Which outcomes are stored and replayed; the others release the key, so a retry runs again.
   * It gets the status, and the error when the handler threw (a non-HTTP error comes as status
   * 500): returning `true` for one stores it as a 500, so the handler never runs again for that key.
   * @default (status) => status < 500
   * @example storeIf: (status, error) => status < 500 || error instanceof PaymentDeclinedError
   */
  storeIf?: (status: number, error?: unknown) => boolean;
  /**
   * Response headers to replay besides the default allow-list (`Location`, `Content-Type`,
   * `Content-Location`, `Content-Language`, `ETag`, `Last-Modified`). `Set-Cookie`,
   * `Authorization` and hop-by-hop headers are never stored.
   * @default []
   */
  replayHeaders?: readonly string[];
  /**
   * Largest stored body, in bytes of its encoded form. A larger response is sent but cannot be
   * replayed: see `unreplayable`.
   * @default 1048576 (1 MiB)
   */
  maxResponseBytes?: number;
  /**
   * What a result that cannot be stored leaves behind (a stream, `StreamableFile`, `@Res()`
   * without passthrough, a body over `maxResponseBytes` or one that cannot be serialized). Its
   * client gets it as usual. `'reject'` completes the record as done but not replayable: a retry
   * gets 409 `IDEMPOTENCY_RESPONSE_NOT_REPLAYABLE` and the handler does not run again. `'release'`
   * frees the key, so a retry runs the handler again: only for handlers that are safe to re-run.
   * @default 'reject'
   */
  unreplayable?: 'reject' | 'release';
  /**
   * What happens when the store fails: `'closed'` answers 503 and the handler does not run;
   * `'open'` runs the handler unprotected and logs an error.
   * @default 'closed'
   */
  onStoreError?: 'closed' | 'open';
  /**
   * Transactional mode, for a store that supports it (`TypeOrmIdempotencyStore`): the handler's
   * database work and the record's completion commit in one transaction. Just before COMMIT the
   * completion runs fenced (owner token, lease still live by the database clock); when it matches
   * nothing the lease was lost, the transaction rolls back, and this request gets the winner's
   * answer (a replay, or 409 while it runs) instead of a second effect. The handler reaches the
   * transaction through `transactionalEntityManager()` (or `TransactionHost` of
   * `@nestjs-cls/transactional`). `true` uses READ COMMITTED.
   * @default false
   * @example transaction: { isolationLevel: 'SERIALIZABLE' }
   */
  transaction?: boolean | IdempotencyTransactionOptions;
  /**
   * RabbitMQ with manual acknowledgements (`noAck: false`) only: the library acknowledges each
   * message of a covered `@MessagePattern` / `@EventPattern` handler itself, once its outcome is
   * known and its record settled (after COMMIT in transactional mode), so a crash before that
   * leaves the message to be redelivered. Acked: executed, replayed (a stored error too),
   * `IDEMPOTENCY_RESPONSE_NOT_REPLAYABLE`. Requeued (`nack`, after `retryAfter`): in flight, store
   * unavailable, a handler error that released the key. Rejected without requeue (dead-lettered
   * when the queue has a dead-letter exchange): a missing, invalid, not issued, expired or reused
   * key. The handler must not ack or nack the message itself. Other transports and HTTP ignore it.
   * @default false
   */
  acknowledge?: boolean;
  /**
   * Request header carrying the key (case-insensitive). On microservice handlers: the AMQP
   * header, NATS header, MQTT 5 user property or Redis / TCP packet metadata entry of that name.
   * @default 'Idempotency-Key'
   */
  headerName?: string;
  /**
   * Status answered when a key is reused with another payload (some APIs prefer 409).
   * @default 422
   */
  mismatchStatus?: number;
  /**
   * Resolves the authenticated principal put into the default scope.
   * @default (context) => request.user?.id ?? request.user?.sub (none on microservice handlers)
   */
  principal?: (context: ExecutionContext) => string | number | undefined;
}

/**
 * A 256-bit AES key: a `Buffer` (or any `Uint8Array`) of 32 bytes, a string of 64 hex characters,
 * or the base64 (or base64url) form of 32 bytes (44 characters with its `=`, 43 without).
 */
export type IdempotencyEncryptionKey = Buffer | Uint8Array | string;

/**
 * Encryption at rest of stored responses with AES-256-GCM (`node:crypto`). The stored body and
 * headers become one authenticated ciphertext; the status, the fingerprint hash and the hashed
 * storage key stay in clear (the stores need them).
 *
 * Rotation: add the new key to `keys`, point `keyId` at it (new records use it, old ones still
 * decrypt), and remove the old key once the longest `ttl` has passed since the switch.
 *
 * @example
 * // Generate a key: `openssl rand -base64 32`, or `randomBytes(32)` from node:crypto.
 * encryption: {
 *   keyId: '2026-01',
 *   keys: { '2026-01': process.env.IDEMPOTENCY_KEY_2026_01! },
 * }
 */
export interface IdempotencyEncryptionOptions {
  /**
   * Id of the key in `keys` that encrypts new records. It is written in clear into every record
   * (so the matching key decrypts it): 1 to 64 letters, digits, `.`, `_` or `-`; never a secret.
   * @example '2026-01'
   */
  keyId: string;
  /**
   * Every key that may decrypt a record, by id; `keys[keyId]` also encrypts. Each is 32 bytes: a
   * `Buffer`, 64 hex characters, or base64 of 32 bytes. A record whose key id is missing here is
   * never replayed and never runs the handler: it answers like a store failure (`onStoreError`).
   * @example { '2026-01': randomBytes(32), '2025-07': process.env.IDEMPOTENCY_KEY_2025_07! }
   */
  keys: Readonly<Record<string, IdempotencyEncryptionKey>>;
}

/**
 * An HMAC-SHA256 secret of `issuedKeys`. Its `id` is written in clear into every key it signs (so
 * the matching secret verifies it): 1 to 32 letters, digits, `_` or `-`; never a secret.
 */
export interface IdempotencyIssuedKeySecret {
  /**
   * Id written into the keys this secret signs.
   * @example '2026-01'
   */
  id: string;
  /**
   * At least 32 bytes: a `Buffer` (`randomBytes(32)`) or a string, used as its UTF-8 bytes
   * (`openssl rand -base64 32` gives 44 characters).
   */
  secret: Buffer | Uint8Array | string;
}

/**
 * Server-issued keys: `IdempotencyKeyIssuer.issue()` signs a key holding its scope name, its expiry
 * and a random nonce, and routes with `key: 'issued'` accept only such keys, checked by their
 * signature alone (no store round trip).
 *
 * Rotation, as with `encryption`: put the new secret first (it signs new keys, the others still
 * verify), and remove the old one once the longest `ttl` has passed since the switch. A key signed
 * by a secret no longer listed answers 400 `IDEMPOTENCY_KEY_NOT_ISSUED`.
 *
 * @example
 * issuedKeys: {
 *   secrets: [{ id: '2026-01', secret: process.env.IDEMPOTENCY_KEY_SECRET_2026_01! }],
 *   ttl: '1h',
 * }
 */
export interface IdempotencyIssuedKeysOptions {
  /**
   * Every secret that may verify a key; the first one also signs new keys. Ids are unique.
   * @example [{ id: '2026-02', secret: newSecret }, { id: '2026-01', secret: oldSecret }]
   */
  secrets: readonly IdempotencyIssuedKeySecret[];
  /**
   * How long an issued key is accepted, from issue; after that it answers 400
   * `IDEMPOTENCY_KEY_EXPIRED`, retries included. Keep it at most the routes' `ttl`, so that every
   * use of a key after its first completion replays it. `issue({ ttl })` overrides it per key.
   * @default '1h'
   */
  ttl?: Duration;
  /**
   * The clock, in epoch milliseconds; tests inject a fake one.
   * @default Date.now
   */
  now?: () => number;
}

/** Options of `IdempotencyModule.forRoot()`: defaults for every route, and the store. */
export interface IdempotencyModuleOptions extends IdempotentOptions {
  /**
   * The store keeping records. Pass an instance (for example a `RedisIdempotencyStore`).
   * @default a new `MemoryIdempotencyStore` (one process only)
   */
  store?: IdempotencyStore;
  /**
   * Encrypt stored response bodies and headers at rest with AES-256-GCM. Records stored before it
   * was turned on still replay. A record that cannot be decrypted (unknown key id, altered, wrong
   * key) answers 503 `IDEMPOTENCY_STORE_UNAVAILABLE` without running the handler (with
   * `onStoreError: 'open'`, the handler runs unprotected), and an error naming the key id is logged.
   * Module only.
   * @default undefined (stored in clear)
   * @example encryption: { keyId: 'k1', keys: { k1: process.env.IDEMPOTENCY_KEY! } }
   */
  encryption?: IdempotencyEncryptionOptions;
  /**
   * Secrets and lifetime of server-issued keys (`IdempotencyKeyIssuer`, `key: 'issued'`). Checked
   * at bootstrap; a route with `key: 'issued'` fails the start without it. Module only.
   * @default undefined (no keys are issued)
   * @example issuedKeys: { secrets: [{ id: 'k1', secret: process.env.IDEMPOTENCY_KEY_SECRET! }] }
   */
  issuedKeys?: IdempotencyIssuedKeysOptions;
}

/** A class that builds the module options, for `forRootAsync({ useClass })`. */
export interface IdempotencyOptionsFactory {
  createIdempotencyOptions(): Promise<IdempotencyModuleOptions> | IdempotencyModuleOptions;
}

/**
 * Options of `IdempotencyService.run()`. Unset fields take the module's options (`forRoot()`), then
 * the defaults; the HTTP-only ones (`key`, `headerName`, `required`, `principal`, `methods`,
 * `replayHeaders`, `fingerprint`) do not apply.
 */
export interface IdempotencyRunOptions extends Pick<
  IdempotentOptions,
  | 'ttl'
  | 'lockTtl'
  | 'maxLockHold'
  | 'retryAfter'
  | 'concurrent'
  | 'waitTimeout'
  | 'storeIf'
  | 'maxResponseBytes'
  | 'unreplayable'
  | 'onStoreError'
  | 'transaction'
> {
  /**
   * What the key is unique within, for example `['stripe-webhook']` or `['emails', tenantId]`.
   * Keys of different scopes never meet, and none meets a key of an HTTP route.
   * @default [] (one key space shared by every call without a scope)
   */
  scope?: string | readonly string[];
  /**
   * Accept only a key `IdempotencyKeyIssuer` issued for this scope name: any other throws
   * `IdempotencyKeyNotIssuedException` (an expired one, `IdempotencyKeyExpiredException`) before
   * the store is touched. Needs the module option `issuedKeys`.
   * @default undefined (any valid key)
   */
  issued?: string;
  /**
   * What the key stands for. Its canonical JSON (object keys sorted) is fingerprinted, so the same
   * key with another payload throws `IdempotencyKeyReusedException` instead of replaying the
   * other payload's result.
   * @default undefined (the payload is not checked)
   */
  payload?: unknown;
}

/** What `IdempotencyService.run()` resolves to. */
export interface IdempotencyRunResult<T> {
  /** The work's value: its own on the first run, the stored one (decoded) on a replay. */
  value: T;
  /** `true` when the work did not run and `value` is the first run's stored result. */
  replayed: boolean;
}
