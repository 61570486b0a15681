import { Inject, Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { decodeBody, encodeBody } from './body-codec';
import {
  ENCRYPTED_BODY_PREFIX,
  IdempotencyDecryptionError,
  IdempotencyResponseCipher,
} from './idempotency.encryption';
import {
  channels,
  type IdempotencyContextType,
  type IdempotencyExecutedEvent,
  type IdempotencyStoreErrorEvent,
} from './idempotency.events';
import { IdempotencyErrorCode, type IdempotencyRejection } from './idempotency-rejection';
import type { ResolvedIdempotencyOptions } from './resolved-options';
import { IDEMPOTENCY_MODULE_OPTIONS } from '../idempotency.constants';
import type { IdempotencyModuleOptions } from '../idempotency.options';
import {
  type ClaimResult,
  IdempotencyStore,
  type IdempotencyStoreTransaction,
  type StoredResponse,
} from '../stores/idempotency-store';

/** One call the engine is asked to make idempotent; a context adapter builds it. */
export interface IdempotentCall<T> {
  /** The hashed storage key (see `storageKeyOf`). */
  key: string;
  /** Fingerprint of what the call asks for, or `null` when it is not checked. */
  fingerprint: string | null;
  options: ResolvedIdempotencyOptions;
  /** The entry point, for events. */
  context: IdempotencyContextType;
  /** Route template, pattern or scope, for events and logs. */
  target: string;
  /** Runs the work once. */
  work: () => Promise<T>;
  /** What to store of the work's value. */
  capture: (value: T) => Capture;
  /** The status an error of the work stands for, and the body to store should `storeIf` want it. */
  captureError: (error: unknown) => CapturedError;
  /**
   * Told what became of the record of a run once it is settled (stored, released, committed), as
   * the `executed` event says it; a context that acknowledges messages waits for it.
   */
  onSettled?: (record: IdempotencyExecutedEvent['record']) => void;
}

/**
 * What a successful run leaves to store: a result (its body is encoded by the engine), a result
 * that cannot be replayed and why, or `null` for nothing to store (the key is released).
 */
export type Capture =
  | { status: number; headers?: Record<string, string | string[]>; body: unknown }
  | { status: number; unreplayable: string }
  | null;

/** A failed run, as it would be stored. */
export interface CapturedError {
  status: number;
  body: unknown;
}

/** A stored result, decoded, to be replayed by the context. */
export interface ReplayedResult {
  status: number;
  headers: Record<string, string | string[]>;
  body: unknown;
  /** `true` when the first run threw (an HTTP error): the context throws it again. */
  error: boolean;
}

/** How a call ended: ran (its own value), replayed (the stored one) or refused (why). */
export type IdempotencyOutcome<T> =
  | { type: 'executed'; value: T }
  | { type: 'replayed'; result: ReplayedResult }
  | { type: 'rejected'; rejection: IdempotencyRejection };

/** Runs of one transactional call rolled back for a lost lease before it answers 409. */
const MAX_TRANSACTION_ATTEMPTS = 3;

/** The work of a transactional run threw (the transaction rolled back): carries its error out. */
class WorkFailed {
  constructor(readonly error: unknown) {}
}

/** The fenced completion inside the transaction matched nothing: roll back. */
class LeaseLost {}

/** The stored body of a result that ran but could not be stored; JSON never starts with `u`. */
const UNREPLAYABLE_BODY = 'unreplayable:';

/** One run's claim: who holds it, and the renewal that keeps it. */
interface Lease<T> {
  call: IdempotentCall<T>;
  ownerToken: string;
  startedAt: number;
  timer?: NodeJS.Timeout;
  settled: boolean;
}

type Settled = IdempotencyExecutedEvent['record'];

/** What the executed event reports of one run. */
interface RunTiming {
  claimMs: number;
  workMs: number;
  failed: boolean;
  status: number | undefined;
}

/**
 * The protocol-neutral state machine behind every entry point: the interceptor's HTTP routes and
 * `IdempotencyService.run()` alike. Given a storage key, a fingerprint, resolved options and the
 * work, it claims the key atomically and then runs the work under a renewed lease (executed),
 * replays the stored result (replayed), or refuses (rejected: in progress, key reused, not
 * replayable, store unavailable). It owns renewal and `maxLockHold`, the wait mode, fencing,
 * encryption, storing or releasing the record, and the diagnostics-channel events.
 *
 * It knows nothing of HTTP: adapters say what a result is (`capture`) and render the outcome.
 */
@Injectable()
export class IdempotencyEngine implements OnApplicationShutdown {
  private readonly logger = new Logger('Idempotency');
  private readonly leases = new Set<Lease<unknown>>();
  /** Set when `encryption` is configured; `undefined` keeps the stored form in clear. */
  private readonly cipher?: IdempotencyResponseCipher;
  /** Targets already warned about an unreplayable result, so a streaming route warns once. */
  private readonly warnedUnreplayable = new Set<string>();
  /** The `store` of every event, read once. */
  private readonly storeName: string;

  constructor(
    readonly store: IdempotencyStore,
    @Inject(IDEMPOTENCY_MODULE_OPTIONS) options: IdempotencyModuleOptions,
  ) {
    this.storeName = store.constructor.name;
    // Throws at bootstrap, naming the option, when a key or the key id is invalid.
    this.cipher = options.encryption
      ? new IdempotencyResponseCipher(options.encryption)
      : undefined;
  }

  /**
   * Runs `call` idempotently. Resolves with how it ended; rejects with the work's own error when
   * the work threw (after storing or releasing the record as `storeIf` says).
   */
  process<T>(call: IdempotentCall<T>): Promise<IdempotencyOutcome<T>> {
    return this.run(call, 1);
  }

  /** `attempt` counts the runs of a transactional call rolled back for a lost lease. */
  private async run<T>(call: IdempotentCall<T>, attempt: number): Promise<IdempotencyOutcome<T>> {
    if (call.options.transaction && !this.store.transaction) {
      throw new Error(transactionUnsupported(this.store, call.target));
    }
    const started = performance.now();
    const ownerToken = randomUUID();
    let result: ClaimResult;
    try {
      result = await this.claim(call, ownerToken);
      if (
        result.outcome === 'in_flight' &&
        call.options.concurrent === 'wait' &&
        this.sameFingerprint(call, result)
      ) {
        result = await this.waitForCompletion(call, ownerToken, result);
      }
    } catch (error) {
      // Only a claim (the first, or one while waiting) throws here.
      this.storeError(call, 'claim', error, started);
      return this.onStoreFailure(call, error, started);
    }
    if (result.outcome !== 'acquired' && !this.sameFingerprint(call, result)) {
      return this.reject(call, { code: IdempotencyErrorCode.KeyReused }, started);
    }
    switch (result.outcome) {
      case 'acquired':
        return call.options.transaction
          ? this.executeInTransaction(call, ownerToken, performance.now() - started, attempt)
          : this.execute(call, ownerToken, performance.now() - started);
      case 'in_flight':
        return this.reject(
          call,
          {
            code: IdempotencyErrorCode.RequestInProgress,
            retryAfterMs: Math.max(
              1,
              Math.min(call.options.retryAfterMs, Math.ceil(result.leaseRemainingMs)),
            ),
          },
          started,
        );
      case 'completed':
        return this.replay(call, result.response, started);
    }
  }

  /** Stops every lease renewal; records in flight are left to lapse with their lease. */
  onApplicationShutdown(): void {
    for (const lease of this.leases) {
      this.stopRenewal(lease);
    }
  }

  private replay<T>(
    call: IdempotentCall<T>,
    stored: StoredResponse,
    started: number,
  ): IdempotencyOutcome<T> | Promise<IdempotencyOutcome<T>> {
    let result: ReplayedResult;
    try {
      const clear = this.readStored(stored, call.key);
      if (clear.body.startsWith(UNREPLAYABLE_BODY)) {
        return this.reject(call, { code: IdempotencyErrorCode.ResponseNotReplayable }, started);
      }
      // Decoded here: a corrupt record fails before the context starts replaying it.
      result = {
        status: clear.status,
        headers: clear.headers,
        body: decodeBody(clear.body),
        error: clear.error === true,
      };
    } catch (error) {
      // A record that cannot be read (undecryptable, or corrupt) is never replayed and never run:
      // it is answered like a store failure (onStoreError).
      return this.onStoreFailure(call, error, started);
    }
    if (channels.replayed.hasSubscribers) {
      channels.replayed.publish({
        key: call.key,
        context: call.context,
        target: call.target,
        store: this.storeName,
        status: result.status,
        claimMs: performance.now() - started,
      });
    }
    return { type: 'replayed', result };
  }

  private reject<T>(
    call: IdempotentCall<T>,
    rejection: IdempotencyRejection,
    started: number,
  ): IdempotencyOutcome<T> {
    if (channels.rejected.hasSubscribers) {
      channels.rejected.publish({
        key: call.key,
        context: call.context,
        target: call.target,
        store: this.storeName,
        code: rejection.code,
        claimMs: performance.now() - started,
      });
    }
    return { type: 'rejected', rejection };
  }

  private async execute<T>(
    call: IdempotentCall<T>,
    ownerToken: string,
    claimMs: number,
  ): Promise<IdempotencyOutcome<T>> {
    const lease = this.startRenewal(call, ownerToken);
    const workStarted = performance.now();
    let value: T;
    try {
      value = await call.work();
    } catch (error) {
      await this.settleError(lease, error, claimMs, performance.now() - workStarted);
      throw error;
    }
    await this.settleValue(lease, value, claimMs, performance.now() - workStarted);
    return { type: 'executed', value };
  }

  /**
   * Transactional mode: the work and the record's completion commit in one transaction of the
   * store. The completion is the transaction's last statement, fenced by the owner token and a
   * live lease; when it matches nothing the lease was lost (a paused holder, another instance took
   * over), the transaction rolls back, and the call is decided again: the winner's stored result,
   * or a 409 while it runs. A work that throws rolls back; its error is then stored (fenced) or the
   * key released, as `storeIf` says.
   */
  private async executeInTransaction<T>(
    call: IdempotentCall<T>,
    ownerToken: string,
    claimMs: number,
    attempt: number,
  ): Promise<IdempotencyOutcome<T>> {
    const lease = this.startRenewal(call, ownerToken);
    const timing: RunTiming = { claimMs, workMs: 0, failed: false, status: undefined };
    const workStarted = performance.now();
    let result: { response?: StoredResponse; record: Settled } = { record: 'released' };
    let value: T;
    try {
      value = await this.transactional(call, async (transaction) => {
        let ran: T;
        try {
          ran = await call.work();
        } catch (error) {
          throw new WorkFailed(error);
        }
        timing.workMs = performance.now() - workStarted;
        result = this.resultOf(lease, ran, timing);
        if (result.response) {
          lease.settled = true;
          this.stopRenewal(lease);
          const { key } = call;
          const written = await transaction.complete({
            key,
            ownerToken,
            response: this.cipher ? this.cipher.encrypt(result.response, key) : result.response,
            ttlMs: call.options.ttlMs,
          });
          if (!written) {
            throw new LeaseLost();
          }
        }
        return ran;
      });
    } catch (error) {
      if (error instanceof WorkFailed) {
        timing.workMs = performance.now() - workStarted;
        await this.settleError(lease, error.error, claimMs, timing.workMs);
        throw error.error;
      }
      lease.settled = true;
      this.stopRenewal(lease);
      if (error instanceof LeaseLost) {
        this.logger.warn(
          `${call.target}: lease lost before COMMIT; the transaction was rolled back, so this run left no effect, and the call is answered as a retry would be.`,
        );
        this.leaseLost(lease, 'completion');
        this.executed(call, 'lease-lost', timing, 0);
        if (attempt >= MAX_TRANSACTION_ATTEMPTS) {
          return this.reject(
            call,
            {
              code: IdempotencyErrorCode.RequestInProgress,
              retryAfterMs: call.options.retryAfterMs,
            },
            performance.now(),
          );
        }
        return this.run(call, attempt + 1);
      }
      // The transaction itself failed (BEGIN, the completion, or COMMIT): a store failure,
      // answered as one (503), never run again here. Nothing of it committed, or, if COMMIT failed
      // after the database applied it, the record is completed and the fenced release below
      // changes nothing: either way no key stays stuck and a retry never doubles the effect.
      this.storeError(call, 'transaction', error, workStarted);
      this.logger.error(
        `${call.target}: the transaction of a transactional run failed; nothing of the run was kept unless COMMIT had gone through, and the call was refused.`,
        error instanceof Error ? error.stack : String(error),
      );
      await this.settle(lease, undefined, timing);
      return this.reject(
        call,
        { code: IdempotencyErrorCode.StoreUnavailable, cause: error },
        workStarted,
      );
    }
    if (result.response) {
      this.executed(call, result.record, timing, 0);
    } else {
      // Nothing to store (storeIf said no, or unreplayable: 'release'): the work's own writes
      // committed; the key is released, as outside transactional mode.
      await this.settle(lease, undefined, timing, result.record);
    }
    return { type: 'executed', value };
  }

  private transactional<T>(
    call: IdempotentCall<T>,
    work: (transaction: IdempotencyStoreTransaction) => Promise<T>,
  ): Promise<T> {
    return this.store.transaction!(
      { isolationLevel: call.options.transaction!.isolationLevel },
      work,
    );
  }

  private async settleValue<T>(
    lease: Lease<T>,
    value: T,
    claimMs: number,
    workMs: number,
  ): Promise<void> {
    const timing: RunTiming = { claimMs, workMs, failed: false, status: undefined };
    const { response, record } = this.resultOf(lease, value, timing);
    return this.settle(lease, response, timing, record);
  }

  /**
   * What a successful run leaves in the record: its result to replay, the marker of a result that
   * cannot be replayed, or nothing (the key is released: `storeIf` said no, or `unreplayable` is
   * `'release'`).
   */
  private resultOf<T>(
    lease: Lease<T>,
    value: T,
    timing: RunTiming,
  ): { response?: StoredResponse; record: Settled } {
    const { call } = lease;
    let capture: Capture;
    try {
      capture = call.capture(value);
    } catch (error) {
      capture = { status: 200, unreplayable: `it could not be captured (${String(error)})` };
    }
    timing.status = capture?.status;
    if (capture === null || !call.options.storeIf(capture.status)) {
      return { record: 'released' };
    }
    if ('unreplayable' in capture || isStream(capture.body)) {
      const reason = 'unreplayable' in capture ? capture.unreplayable : 'it is a stream';
      return this.unreplayable(lease, capture.status, reason);
    }
    let body: string;
    try {
      body = encodeBody(capture.body);
    } catch (error) {
      return this.unreplayable(lease, capture.status, `it cannot be serialized (${String(error)})`);
    }
    if (Buffer.byteLength(body) > call.options.maxResponseBytes) {
      return this.unreplayable(
        lease,
        capture.status,
        `it is larger than maxResponseBytes (${call.options.maxResponseBytes})`,
      );
    }
    return {
      response: { status: capture.status, headers: capture.headers ?? {}, body },
      record: 'stored',
    };
  }

  private async settleError<T>(
    lease: Lease<T>,
    error: unknown,
    claimMs: number,
    workMs: number,
  ): Promise<void> {
    const timing: RunTiming = { claimMs, workMs, failed: true, status: undefined };
    let captured: CapturedError | undefined;
    try {
      captured = lease.call.captureError(error);
    } catch {
      captured = undefined;
    }
    timing.status = captured?.status;
    if (!captured || !lease.call.options.storeIf(captured.status, error)) {
      return this.settle(lease, undefined, timing);
    }
    let body: string;
    try {
      body = encodeBody(captured.body);
    } catch {
      return this.settle(lease, undefined, timing);
    }
    return this.settle(lease, { status: captured.status, headers: {}, body, error: true }, timing);
  }

  /**
   * A result that ran but cannot be replayed: by default the record completes as done but not
   * replayable (a retry is refused and nothing runs twice); with `unreplayable: 'release'` the key
   * is freed for a handler that is safe to run again.
   */
  private unreplayable<T>(
    lease: Lease<T>,
    status: number,
    reason: string,
  ): { response?: StoredResponse; record: Settled } {
    const { call } = lease;
    const release = call.options.unreplayable === 'release';
    const warning = `${call.target}: result not stored, ${reason}; ${
      release
        ? 'the key was released (unreplayable: release), so a retry runs again.'
        : 'retries with its key get 409 IDEMPOTENCY_RESPONSE_NOT_REPLAYABLE and do not run again.'
    }`;
    if (!this.warnedUnreplayable.has(warning)) {
      this.warnedUnreplayable.add(warning);
      this.logger.warn(warning);
    }
    return release
      ? { record: 'released' }
      : {
          response: { status, headers: {}, body: UNREPLAYABLE_BODY + reason },
          record: 'unreplayable',
        };
  }

  /**
   * Completes the record with `response`, or releases it when there is none, fenced by the owner
   * token. A failure is logged and published, never thrown: the caller still gets its result, and
   * the record lapses with its unrenewed lease.
   */
  private async settle<T>(
    lease: Lease<T>,
    response: StoredResponse | undefined,
    timing: RunTiming,
    done: Settled = response ? 'stored' : 'released',
  ): Promise<void> {
    lease.settled = true;
    this.stopRenewal(lease);
    const { call, ownerToken } = lease;
    const { key } = call;
    const action = response ? 'complete' : 'release';
    const started = performance.now();
    let record = done;
    try {
      const written = response
        ? await this.store.complete({
            key,
            ownerToken,
            response: this.cipher ? this.cipher.encrypt(response, key) : response,
            ttlMs: call.options.ttlMs,
          })
        : await this.store.release({ key, ownerToken });
      if (!written) {
        record = 'lease-lost';
        this.logger.warn(
          `Lease lost before ${response ? 'the response was stored' : 'release'}; another request may have run the handler. Consider a longer lockTtl.`,
        );
        this.leaseLost(lease, response ? 'completion' : 'release');
      }
    } catch (error) {
      record = 'store-failed';
      this.storeError(call, action, error, started);
      this.logger.error(
        // A store may fail after writing (`written`: the Redis store's replication, when too few
        // replicas acknowledged): the record is then there, only less durable than asked.
        (error as { written?: unknown }).written === true
          ? `The idempotency record was written, but the store reported a failure after it; if it is lost (a failover), it stays in flight until its lease lapses (${call.options.lockTtlMs} ms).`
          : `Could not ${action} the idempotency record; it stays in flight until its lease lapses (${call.options.lockTtlMs} ms).`,
        error instanceof Error ? error.stack : String(error),
      );
    }
    this.executed(call, record, timing, performance.now() - started);
  }

  private executed<T>(
    call: IdempotentCall<T>,
    record: Settled,
    timing: RunTiming,
    settleMs: number,
  ): void {
    call.onSettled?.(record);
    if (channels.executed.hasSubscribers) {
      channels.executed.publish({
        key: call.key,
        context: call.context,
        target: call.target,
        store: this.storeName,
        record,
        status: timing.status,
        failed: timing.failed,
        claimMs: timing.claimMs,
        workMs: timing.workMs,
        settleMs,
      });
    }
  }

  /** The store failed: refuse the call (fail closed), or run it unprotected with `'open'`. */
  private async onStoreFailure<T>(
    call: IdempotentCall<T>,
    error: unknown,
    started: number,
  ): Promise<IdempotencyOutcome<T>> {
    const detail = error instanceof Error ? error.stack : String(error);
    if (call.options.onStoreError === 'closed') {
      this.logger.error(
        'Idempotency store failed; the call was refused (onStoreError: closed).',
        detail,
      );
      return this.reject(
        call,
        { code: IdempotencyErrorCode.StoreUnavailable, cause: error },
        started,
      );
    }
    this.logger.error(
      'Idempotency store failed; running the handler unprotected (onStoreError: open).',
      detail,
    );
    const claimMs = performance.now() - started;
    const value = await call.work();
    const workMs = performance.now() - started - claimMs;
    this.executed(call, 'unprotected', { claimMs, workMs, failed: false, status: undefined }, 0);
    return { type: 'executed', value };
  }

  private claim<T>(call: IdempotentCall<T>, ownerToken: string): Promise<ClaimResult> {
    return this.store.claim({
      key: call.key,
      fingerprint: call.fingerprint,
      ownerToken,
      leaseMs: call.options.lockTtlMs,
    });
  }

  private sameFingerprint<T>(call: IdempotentCall<T>, result: ClaimResult): boolean {
    return (
      result.outcome === 'acquired' ||
      call.fingerprint === null ||
      result.fingerprint === null ||
      result.fingerprint === call.fingerprint
    );
  }

  /**
   * Polls with a growing delay until the holder finishes, its lease lapses (this call then
   * acquires), another payload holds the key, or `waitTimeout` passes.
   */
  private async waitForCompletion<T>(
    call: IdempotentCall<T>,
    ownerToken: string,
    first: ClaimResult,
  ): Promise<ClaimResult> {
    const deadline = Date.now() + call.options.waitTimeoutMs;
    let result = first;
    let delay = 10;
    while (result.outcome === 'in_flight' && this.sameFingerprint(call, result)) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        return result;
      }
      await new Promise<void>((resolve) => setTimeout(resolve, Math.min(delay, remaining)).unref());
      delay = Math.min(delay * 2, 250);
      result = await this.claim(call, ownerToken);
    }
    return result;
  }

  /** The stored response in clear: decrypted, or refused when encrypted and encryption is off. */
  private readStored(stored: StoredResponse, key: string): StoredResponse {
    if (this.cipher) {
      return this.cipher.decrypt(stored, key);
    }
    if (stored.body.startsWith(ENCRYPTED_BODY_PREFIX)) {
      throw new IdempotencyDecryptionError(
        'The stored response is encrypted but the "encryption" option is not set; it cannot be replayed until it expires.',
      );
    }
    return stored;
  }

  /**
   * Renews the lease every `lockTtl / 3` (one unref'd timer) until the run settles, the lease is
   * lost, the application shuts down, or `maxLockHold` has passed (a hung run frees its key).
   */
  private startRenewal<T>(call: IdempotentCall<T>, ownerToken: string): Lease<T> {
    const lease: Lease<T> = { call, ownerToken, startedAt: performance.now(), settled: false };
    const { key, options } = call;
    this.leases.add(lease as Lease<unknown>);
    lease.timer = setInterval(
      () => {
        if (performance.now() - lease.startedAt >= options.maxLockHoldMs) {
          this.stopRenewal(lease);
          this.logger.warn(
            `${call.target}: still running after maxLockHold (${options.maxLockHoldMs} ms); its lease is no longer renewed, so the key frees within ${options.lockTtlMs} ms and a retry may run it again.`,
          );
          return;
        }
        const started = performance.now();
        this.store.renew({ key, ownerToken, leaseMs: options.lockTtlMs }).then(
          (renewed) => {
            if (!renewed && !lease.settled) {
              this.logger.warn(
                'Lease lost while the handler was running; its response will not be stored.',
              );
              this.stopRenewal(lease);
              this.leaseLost(lease, 'renewal');
            }
          },
          (error: unknown) => {
            this.storeError(call, 'renew', error, started);
            this.logger.error(`Lease renewal failed: ${String(error)}`);
          },
        );
      },
      Math.max(1, Math.floor(options.lockTtlMs / 3)),
    );
    lease.timer.unref();
    return lease;
  }

  private stopRenewal<T>(lease: Lease<T>): void {
    clearInterval(lease.timer);
    lease.timer = undefined;
    this.leases.delete(lease as Lease<unknown>);
  }

  private leaseLost<T>(lease: Lease<T>, during: 'renewal' | 'completion' | 'release'): void {
    if (channels.leaseLost.hasSubscribers) {
      channels.leaseLost.publish({
        key: lease.call.key,
        context: lease.call.context,
        target: lease.call.target,
        store: this.storeName,
        during,
        heldMs: performance.now() - lease.startedAt,
      });
    }
  }

  private storeError<T>(
    call: IdempotentCall<T>,
    operation: IdempotencyStoreErrorEvent['operation'],
    error: unknown,
    started: number,
  ): void {
    if (channels.storeError.hasSubscribers) {
      channels.storeError.publish({
        key: call.key,
        context: call.context,
        target: call.target,
        store: this.storeName,
        operation,
        error,
        durationMs: performance.now() - started,
      });
    }
  }
}

function isStream(value: unknown): boolean {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { pipe?: unknown }).pipe === 'function'
  );
}

/** Why transactional mode cannot run on `store`, and what to do. */
export function transactionUnsupported(store: IdempotencyStore, where: string): string {
  return `nestjs-idempotency: ${where} uses transactional mode (option "transaction"), but ${store.constructor.name} has no transactions; use TypeOrmIdempotencyStore, or turn the option off.`;
}
