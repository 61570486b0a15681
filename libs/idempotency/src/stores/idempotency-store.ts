import type { IdempotencyIsolationLevel } from '../idempotency.options';

/**
 * A response as the store keeps it: enough to replay what the first client saw.
 */
export interface StoredResponse {
  /** HTTP status code of the first response (for example 201, or 404 for a stored `HttpException`). */
  status: number;
  /** Allow-listed response headers, names in lower case. */
  headers: Record<string, string | string[]>;
  /**
   * The response body in the library's tagged JSON encoding (see `encodeBody`), so that `Date`,
   * `Buffer` and `undefined` survive the round trip. Stores keep it as an opaque string.
   */
  body: string;
  /** `true` when the first response was an `HttpException` (it is replayed by re-throwing). */
  error?: boolean;
}

/** Options of {@link IdempotencyStore.claim}. */
export interface ClaimOptions {
  /** Hashed storage key (hex SHA-256); never the raw client key. */
  key: string;
  /** Fingerprint of the request, or `null` when fingerprinting is turned off. */
  fingerprint: string | null;
  /** Random token that identifies this claimer; later writes are fenced by it. */
  ownerToken: string;
  /** Lease length in milliseconds: how long the record stays in flight without renewal. */
  leaseMs: number;
}

/** The record was free (new, expired, or its lease lapsed): the caller owns it and runs the handler. */
export interface ClaimAcquired {
  outcome: 'acquired';
}

/** Another claimer holds a live lease on the record. */
export interface ClaimInFlight {
  outcome: 'in_flight';
  /** Fingerprint the holder claimed with (`null` when it had none). */
  fingerprint: string | null;
  /** Milliseconds until the holder's lease lapses unless it is renewed. */
  leaseRemainingMs: number;
}

/** The record holds a completed response. */
export interface ClaimCompleted {
  outcome: 'completed';
  /** Fingerprint the first request claimed with (`null` when it had none). */
  fingerprint: string | null;
  /** The stored response to replay. */
  response: StoredResponse;
}

/** What one atomic claim answers. */
export type ClaimResult = ClaimAcquired | ClaimInFlight | ClaimCompleted;

/** Options of {@link IdempotencyStore.complete}. */
export interface CompleteOptions {
  key: string;
  ownerToken: string;
  response: StoredResponse;
  /** Retention in milliseconds: how long the completed record is replayed. */
  ttlMs: number;
}

/** Options of {@link IdempotencyStore.release}. */
export interface ReleaseOptions {
  key: string;
  ownerToken: string;
}

/** Options of {@link IdempotencyStore.renew}. */
export interface RenewOptions {
  key: string;
  ownerToken: string;
  /** New lease length in milliseconds, counted from now. */
  leaseMs: number;
}

/** Options of {@link IdempotencyStore.transaction}. */
export interface StoreTransactionOptions {
  isolationLevel: IdempotencyIsolationLevel;
}

/** What transactional work can do inside its transaction. */
export interface IdempotencyStoreTransaction {
  /**
   * Completes the record inside the transaction, fenced as {@link IdempotencyStore.complete} is:
   * `false` (and nothing written) when the lease was lost, and the caller then rolls back. Call it
   * last: a store may commit with it in the same round trip (`TypeOrmIdempotencyStore` does on
   * PostgreSQL), after which the work can no longer roll back.
   */
  complete(options: CompleteOptions): Promise<boolean>;
}

/**
 * The storage behind the interceptor. It is an abstract class so that it is its own injection
 * token: inject `IdempotencyStore` to reach the configured store.
 *
 * Every method must be atomic on its own: `claim` decides acquired / in flight / completed in one
 * operation, with no read-then-write window between concurrent callers (across processes for a
 * shared store). `complete`, `release` and `renew` are fenced: they change the record only while
 * it is in flight, under a live lease, with the caller's owner token, and answer whether they did.
 *
 * A store that cannot reach its backend throws; the interceptor turns that into a 503 (or runs the
 * handler unprotected with `onStoreError: 'open'`).
 *
 * Verify an implementation with the contract suite from `nestjs-idempotency/testing`.
 *
 * @example
 * export class MyStore extends IdempotencyStore {
 *   async claim(options: ClaimOptions): Promise<ClaimResult> { ... }
 *   async complete(options: CompleteOptions): Promise<boolean> { ... }
 *   async release(options: ReleaseOptions): Promise<boolean> { ... }
 *   async renew(options: RenewOptions): Promise<boolean> { ... }
 * }
 */
export abstract class IdempotencyStore {
  /**
   * Atomically claims `key`: creates an in-flight record owned by `ownerToken` when there is none
   * (or the existing one expired, or its lease lapsed), otherwise reports what is there.
   */
  abstract claim(options: ClaimOptions): Promise<ClaimResult>;

  /**
   * Stores the response and marks the record completed for `ttlMs`, only if `ownerToken` still
   * holds a live lease. Answers `false` (and writes nothing) when the lease was lost.
   */
  abstract complete(options: CompleteOptions): Promise<boolean>;

  /**
   * Deletes the in-flight record so the key behaves as new, only if `ownerToken` still holds it.
   * Answers `false` when it did not.
   */
  abstract release(options: ReleaseOptions): Promise<boolean>;

  /** Extends the lease of `ownerToken` to `leaseMs` from now. Answers `false` when it was lost. */
  abstract renew(options: RenewOptions): Promise<boolean>;

  /**
   * Deletes expired records and answers how many it removed. Stores whose backend expires records
   * by itself (Redis) may answer 0.
   */
  purgeExpired?(): Promise<number>;

  /**
   * Transactional mode (optional; `TypeOrmIdempotencyStore` has it). Runs `work` in one database
   * transaction, in which the handler's own database work runs too, and commits when `work`
   * resolves or rolls back when it throws. `work` completes the record through the transaction it
   * is given, as its last statement, so the record and the work commit together or not at all.
   * The claim, renewals and other records are not part of it: they commit on their own, and the
   * record's row is not locked before that last statement.
   */
  transaction?<T>(
    options: StoreTransactionOptions,
    work: (transaction: IdempotencyStoreTransaction) => Promise<T>,
  ): Promise<T>;
}
