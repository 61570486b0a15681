import type { OnModuleDestroy } from '@nestjs/common';
import {
  type ClaimOptions,
  type ClaimResult,
  type CompleteOptions,
  IdempotencyStore,
  type ReleaseOptions,
  type RenewOptions,
  type StoredResponse,
} from '../idempotency-store';

/** Options of {@link MemoryIdempotencyStore}. */
export interface MemoryIdempotencyStoreOptions {
  /**
   * How often one unref'd timer deletes expired records, in milliseconds. Expiry itself is checked
   * on every read, so the sweep only bounds memory. `0` turns the sweep off.
   * @default 60000
   */
  sweepIntervalMs?: number;
  /**
   * The clock, in epoch milliseconds; tests inject a fake one.
   * @default Date.now
   */
  now?: () => number;
}

type MemoryRecord =
  | { state: 'in_flight'; fingerprint: string | null; ownerToken: string; expiresAt: number }
  | { state: 'completed'; fingerprint: string | null; response: StoredResponse; expiresAt: number };

/**
 * The default store: a `Map` in this process. Records carry their expiry timestamp (checked on
 * read); one unref'd sweep deletes expired ones, never a timer per record. Stopped on shutdown.
 *
 * It protects one process only: behind a load balancer use a shared store (TypeORM or Redis).
 */
export class MemoryIdempotencyStore extends IdempotencyStore implements OnModuleDestroy {
  private readonly records = new Map<string, MemoryRecord>();
  private readonly now: () => number;
  private sweepTimer?: NodeJS.Timeout;

  constructor(options: MemoryIdempotencyStoreOptions = {}) {
    super();
    this.now = options.now ?? Date.now;
    const interval = options.sweepIntervalMs ?? 60_000;
    if (interval > 0) {
      this.sweepTimer = setInterval(() => void this.purgeExpired(), interval);
      this.sweepTimer.unref();
    }
  }

  /** Number of records held, expired ones not yet swept included. */
  get size(): number {
    return this.records.size;
  }

  async claim({ key, fingerprint, ownerToken, leaseMs }: ClaimOptions): Promise<ClaimResult> {
    const now = this.now();
    const record = this.live(key, now);
    if (record?.state === 'completed') {
      return { outcome: 'completed', fingerprint: record.fingerprint, response: record.response };
    }
    if (record?.state === 'in_flight') {
      return {
        outcome: 'in_flight',
        fingerprint: record.fingerprint,
        leaseRemainingMs: record.expiresAt - now,
      };
    }
    this.records.set(key, {
      state: 'in_flight',
      fingerprint,
      ownerToken,
      expiresAt: now + leaseMs,
    });
    return { outcome: 'acquired' };
  }

  async complete({ key, ownerToken, response, ttlMs }: CompleteOptions): Promise<boolean> {
    const now = this.now();
    const record = this.owned(key, ownerToken, now);
    if (!record) {
      return false;
    }
    this.records.set(key, {
      state: 'completed',
      fingerprint: record.fingerprint,
      response,
      expiresAt: now + ttlMs,
    });
    return true;
  }

  async release({ key, ownerToken }: ReleaseOptions): Promise<boolean> {
    return this.owned(key, ownerToken, this.now()) !== undefined && this.records.delete(key);
  }

  async renew({ key, ownerToken, leaseMs }: RenewOptions): Promise<boolean> {
    const now = this.now();
    const record = this.owned(key, ownerToken, now);
    if (record) {
      record.expiresAt = now + leaseMs;
    }
    return record !== undefined;
  }

  override async purgeExpired(): Promise<number> {
    const now = this.now();
    let purged = 0;
    for (const [key, record] of this.records) {
      if (record.expiresAt <= now) {
        this.records.delete(key);
        purged++;
      }
    }
    return purged;
  }

  /** Stops the sweep and drops every record. */
  close(): void {
    clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    this.records.clear();
  }

  onModuleDestroy(): void {
    this.close();
  }

  private live(key: string, now: number): MemoryRecord | undefined {
    const record = this.records.get(key);
    if (record && record.expiresAt <= now) {
      this.records.delete(key);
      return undefined;
    }
    return record;
  }

  private owned(
    key: string,
    ownerToken: string,
    now: number,
  ): Extract<MemoryRecord, { state: 'in_flight' }> | undefined {
    const record = this.live(key, now);
    return record?.state === 'in_flight' && record.ownerToken === ownerToken ? record : undefined;
  }
}
