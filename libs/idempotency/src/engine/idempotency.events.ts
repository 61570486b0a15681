import { channel } from 'node:diagnostics_channel';
import type { IdempotencyErrorCode } from './idempotency-rejection';

/** Where a call came from. */
export type IdempotencyContextType = 'http' | 'rpc' | 'graphql' | 'service';

/**
 * Names of the `node:diagnostics_channel` channels the engine publishes on. Subscribe with
 * `diagnostics_channel.subscribe(IdempotencyChannel.Replayed, (event) => ...)`. Nothing is built
 * or published while a channel has no subscriber.
 */
export const IdempotencyChannel = {
  /** The work ran under a claim (or unprotected, after a store failure with `onStoreError: 'open'`). */
  Executed: 'nestjs-idempotency:executed',
  /** A completed record was replayed; the work did not run. */
  Replayed: 'nestjs-idempotency:replayed',
  /** The call was refused (a problem answer, or a typed error of `run()`); `code` says why. */
  Rejected: 'nestjs-idempotency:rejected',
  /** A holder found its lease taken over: while renewing, or when it came to store its result. */
  LeaseLost: 'nestjs-idempotency:lease-lost',
  /** A store operation failed (threw or timed out). */
  StoreError: 'nestjs-idempotency:store-error',
} as const;

/** What every event carries. */
export interface IdempotencyEventBase {
  /** The hashed storage key (hex SHA-256), never the client's key; `null` before there is one. */
  key: string | null;
  /** The entry point. */
  context: IdempotencyContextType;
  /** Route template (`POST /orders`), message pattern, field or `run()` scope. */
  target: string;
  /** Class name of the store (`MemoryIdempotencyStore`, `RedisIdempotencyStore`, a custom one). */
  store: string;
}

/** On {@link IdempotencyChannel.Executed}. */
export interface IdempotencyExecutedEvent extends IdempotencyEventBase {
  /**
   * What became of the record: `stored` (replayed from now on), `unreplayable` (done, retries get
   * 409), `released` (a retry runs again), `lease-lost` (another holder took over; nothing
   * written), `store-failed` (the write failed; the record lapses with its lease), `unprotected`
   * (no record: the store failed and `onStoreError` is `'open'`).
   */
  record: 'stored' | 'unreplayable' | 'released' | 'lease-lost' | 'store-failed' | 'unprotected';
  /** Status of the result (HTTP status, or 200 / 500 for other contexts), when it has one. */
  status?: number;
  /** Whether the work threw. */
  failed: boolean;
  /** Milliseconds spent claiming (and waiting, with `concurrent: 'wait'`). */
  claimMs: number;
  /** Milliseconds the work ran. */
  workMs: number;
  /** Milliseconds storing or releasing the record. */
  settleMs: number;
}

/** On {@link IdempotencyChannel.Replayed}. */
export interface IdempotencyReplayedEvent extends IdempotencyEventBase {
  /** The stored status. */
  status: number;
  /** Milliseconds from the claim to the stored result (waiting included). */
  claimMs: number;
}

/** On {@link IdempotencyChannel.Rejected}. */
export interface IdempotencyRejectedEvent extends IdempotencyEventBase {
  code: IdempotencyErrorCode;
  /** Milliseconds spent in the store before the rejection (0 when it never reached it). */
  claimMs: number;
}

/** On {@link IdempotencyChannel.LeaseLost}. */
export interface IdempotencyLeaseLostEvent extends IdempotencyEventBase {
  /** When it was noticed. */
  during: 'renewal' | 'completion' | 'release';
  /** Milliseconds since the claim. */
  heldMs: number;
}

/** On {@link IdempotencyChannel.StoreError}. */
export interface IdempotencyStoreErrorEvent extends IdempotencyEventBase {
  /** `transaction`: BEGIN, the completion inside it, or COMMIT of a transactional run. */
  operation: 'claim' | 'complete' | 'release' | 'renew' | 'transaction';
  error: unknown;
  /** Milliseconds until it failed. */
  durationMs: number;
}

/** The channels, created once. `hasSubscribers` is checked before anything is built. */
export const channels = {
  executed: channel(IdempotencyChannel.Executed),
  replayed: channel(IdempotencyChannel.Replayed),
  rejected: channel(IdempotencyChannel.Rejected),
  leaseLost: channel(IdempotencyChannel.LeaseLost),
  storeError: channel(IdempotencyChannel.StoreError),
};
