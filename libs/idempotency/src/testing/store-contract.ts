import { randomBytes, randomUUID } from 'node:crypto';
import type {
  IdempotencyStore,
  IdempotencyStoreTransaction,
  StoredResponse,
} from '../stores/idempotency-store';

/**
 * How {@link describeIdempotencyStoreContract} reaches the store under test. `S` is the type of
 * that store and `P` that of its peers (by default the same), so that `destroy` receives the
 * user's own store type: `destroy: (store) => store.close()`.
 */
export interface IdempotencyStoreContractOptions<
  S extends IdempotencyStore = IdempotencyStore,
  P extends IdempotencyStore = S,
> {
  /** Creates the store the suite runs against; called once, before the suite. */
  create: () => S | Promise<S>;
  /**
   * Another handle onto the same storage, ideally over its own connection, so that races are
   * decided by the backend and not by this process. Called once per racer; peers are destroyed
   * with `destroy` after the suite.
   * @default the store itself
   */
  createPeer?: (store: S) => P | Promise<P>;
  /** Closes a store or peer after the suite. */
  destroy?: (store: S | P) => void | Promise<void>;
  /**
   * Moves the store's clock forward by `ms`. Stores with an injectable clock pass a function that
   * advances it; the default sleeps for real, which is why every duration in the suite is short.
   * @default a real sleep
   */
  advance?: (ms: number) => Promise<void>;
  /**
   * Whether the store implements transactional mode (`transaction()`), whose tests then run.
   * @default false
   */
  transactions?: boolean;
  /**
   * Number of concurrent claimers in the race tests.
   * @default 32
   */
  concurrency?: number;
  /**
   * Lease length, in milliseconds, for tests that let a lease lapse. It must be long enough for
   * one round trip to the backend and short enough to wait for.
   * @default 200
   */
  leaseMs?: number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A fresh storage key, shaped like the interceptor's (hex SHA-256). */
const newKey = (): string => randomBytes(32).toString('hex');

const sampleResponse = (): StoredResponse => ({
  status: 201,
  headers: { location: '/orders/42', 'x-multi': ['a', 'b'] },
  body: JSON.stringify({ id: 42, note: 'caf\u00e9 \u2713' }),
});

/**
 * Declares a jest `describe` block that proves an {@link IdempotencyStore} implementation keeps the
 * contract the interceptor relies on: one atomic claim, fenced writes, leases that lapse and renew,
 * release, retention expiry and purging. Each test uses its own random keys, so the suite can run
 * against a shared database or Redis.
 *
 * @example
 * describeIdempotencyStoreContract('RedisIdempotencyStore', {
 *   create: () => new RedisIdempotencyStore({ client: 'redis://127.0.0.1:6379' }),
 *   createPeer: () => new RedisIdempotencyStore({ client: 'redis://127.0.0.1:6379' }),
 *   destroy: (store) => store.close(),
 * });
 */
export function describeIdempotencyStoreContract<
  S extends IdempotencyStore,
  P extends IdempotencyStore = S,
>(name: string, options: IdempotencyStoreContractOptions<S, P>): void {
  const concurrency = options.concurrency ?? 32;
  const leaseMs = options.leaseMs ?? 200;
  const longMs = 60_000;
  const advance = options.advance ?? sleep;

  describe(`${name} (IdempotencyStore contract)`, () => {
    let store: S;
    const peers: (S | P)[] = [];

    beforeAll(async () => {
      store = await options.create();
      for (let i = 0; i < concurrency; i++) {
        peers.push(options.createPeer ? await options.createPeer(store) : store);
      }
    });

    afterAll(async () => {
      for (const handle of new Set<S | P>([...peers, store])) {
        await options.destroy?.(handle);
      }
    });

    const claim = (
      key: string,
      ownerToken: string = randomUUID(),
      fingerprint: string | null = 'fp',
      lease = longMs,
    ) => store.claim({ key, ownerToken, fingerprint, leaseMs: lease });

    describe('claim', () => {
      it('acquires a new key', async () => {
        await expect(claim(newKey())).resolves.toEqual({ outcome: 'acquired' });
      });

      it('reports a held key as in flight, with the holder fingerprint and remaining lease', async () => {
        const key = newKey();
        await claim(key, 'owner-1', 'fp-1', 5_000);
        const result = await claim(key, 'owner-2', 'fp-2', 5_000);
        expect(result.outcome).toBe('in_flight');
        if (result.outcome !== 'in_flight') return;
        expect(result.fingerprint).toBe('fp-1');
        expect(result.leaseRemainingMs).toBeGreaterThan(0);
        expect(result.leaseRemainingMs).toBeLessThanOrEqual(5_000);
      });

      it('keeps a null fingerprint as null', async () => {
        const key = newKey();
        await claim(key, 'owner-1', null);
        await expect(claim(key)).resolves.toMatchObject({
          outcome: 'in_flight',
          fingerprint: null,
        });
      });

      it('returns the completed response exactly as stored', async () => {
        const key = newKey();
        const response = sampleResponse();
        await claim(key, 'owner-1', 'fp-1');
        await expect(
          store.complete({ key, ownerToken: 'owner-1', response, ttlMs: longMs }),
        ).resolves.toBe(true);
        await expect(claim(key, 'owner-2', 'fp-2')).resolves.toEqual({
          outcome: 'completed',
          fingerprint: 'fp-1',
          response,
        });
      });

      it('keeps the error flag of a stored exception', async () => {
        const key = newKey();
        const response: StoredResponse = {
          status: 404,
          headers: {},
          body: '{"message":"x"}',
          error: true,
        };
        await claim(key, 'owner-1');
        await store.complete({ key, ownerToken: 'owner-1', response, ttlMs: longMs });
        const result = await claim(key);
        expect(result.outcome === 'completed' && result.response).toEqual(response);
      });

      it(`lets exactly one of ${concurrency} concurrent claimers acquire a new key`, async () => {
        const key = newKey();
        const results = await Promise.all(
          peers.map((peer, i) =>
            peer.claim({ key, ownerToken: `owner-${i}`, fingerprint: 'fp', leaseMs: longMs }),
          ),
        );
        const outcomes = results.map((r) => r.outcome);
        expect(outcomes.filter((o) => o === 'acquired')).toHaveLength(1);
        expect(outcomes.filter((o) => o === 'in_flight')).toHaveLength(concurrency - 1);
      });

      it(`lets exactly one of ${concurrency} concurrent claimers take over a lapsed lease`, async () => {
        const key = newKey();
        await claim(key, 'dead-owner', 'fp', leaseMs);
        await advance(leaseMs + 50);
        const results = await Promise.all(
          peers.map((peer, i) =>
            peer.claim({ key, ownerToken: `owner-${i}`, fingerprint: 'fp', leaseMs: longMs }),
          ),
        );
        expect(results.filter((r) => r.outcome === 'acquired')).toHaveLength(1);
        expect(results.filter((r) => r.outcome === 'in_flight')).toHaveLength(concurrency - 1);
      });
    });

    describe('fencing', () => {
      it('refuses complete, renew and release with another owner token and changes nothing', async () => {
        const key = newKey();
        await claim(key, 'owner-1');
        await expect(
          store.complete({
            key,
            ownerToken: 'intruder',
            response: sampleResponse(),
            ttlMs: longMs,
          }),
        ).resolves.toBe(false);
        await expect(store.renew({ key, ownerToken: 'intruder', leaseMs: longMs })).resolves.toBe(
          false,
        );
        await expect(store.release({ key, ownerToken: 'intruder' })).resolves.toBe(false);
        await expect(claim(key)).resolves.toMatchObject({
          outcome: 'in_flight',
          fingerprint: 'fp',
        });
        await expect(
          store.complete({ key, ownerToken: 'owner-1', response: sampleResponse(), ttlMs: longMs }),
        ).resolves.toBe(true);
      });

      it('refuses every write on a key nobody claimed', async () => {
        const key = newKey();
        await expect(
          store.complete({ key, ownerToken: 'owner', response: sampleResponse(), ttlMs: longMs }),
        ).resolves.toBe(false);
        await expect(store.renew({ key, ownerToken: 'owner', leaseMs: longMs })).resolves.toBe(
          false,
        );
        await expect(store.release({ key, ownerToken: 'owner' })).resolves.toBe(false);
        await expect(claim(key)).resolves.toEqual({ outcome: 'acquired' });
      });

      it('refuses to complete once the lease lapsed, and writes nothing', async () => {
        const key = newKey();
        await claim(key, 'owner-1', 'fp', leaseMs);
        await advance(leaseMs + 50);
        await expect(
          store.complete({ key, ownerToken: 'owner-1', response: sampleResponse(), ttlMs: longMs }),
        ).resolves.toBe(false);
        await expect(claim(key, 'owner-2')).resolves.toEqual({ outcome: 'acquired' });
      });

      it('lets the new owner complete after a takeover and fences the old one', async () => {
        const key = newKey();
        await claim(key, 'old-owner', 'fp', leaseMs);
        await advance(leaseMs + 50);
        await expect(claim(key, 'new-owner')).resolves.toEqual({ outcome: 'acquired' });
        const late = { ...sampleResponse(), body: '"late"' };
        await expect(
          store.complete({ key, ownerToken: 'old-owner', response: late, ttlMs: longMs }),
        ).resolves.toBe(false);
        await expect(store.release({ key, ownerToken: 'old-owner' })).resolves.toBe(false);
        const response = sampleResponse();
        await expect(
          store.complete({ key, ownerToken: 'new-owner', response, ttlMs: longMs }),
        ).resolves.toBe(true);
        await expect(claim(key)).resolves.toMatchObject({ outcome: 'completed', response });
      });

      it('lets exactly one of concurrent completes by different owners win after a takeover', async () => {
        const key = newKey();
        await claim(key, 'old-owner', 'fp', leaseMs);
        await advance(leaseMs + 50);
        await claim(key, 'new-owner');
        const results = await Promise.all(
          peers.map((peer, i) =>
            peer.complete({
              key,
              ownerToken: i === 0 ? 'new-owner' : 'old-owner',
              response: { ...sampleResponse(), body: JSON.stringify(i) },
              ttlMs: longMs,
            }),
          ),
        );
        expect(results.filter(Boolean)).toHaveLength(1);
        expect(results[0]).toBe(true);
        const stored = await claim(key);
        expect(stored.outcome === 'completed' && stored.response.body).toBe('0');
      });

      it('leaves a completed record alone on release and renew', async () => {
        const key = newKey();
        const response = sampleResponse();
        await claim(key, 'owner-1');
        await store.complete({ key, ownerToken: 'owner-1', response, ttlMs: longMs });
        await expect(store.release({ key, ownerToken: 'owner-1' })).resolves.toBe(false);
        await expect(store.renew({ key, ownerToken: 'owner-1', leaseMs: longMs })).resolves.toBe(
          false,
        );
        await expect(
          store.complete({
            key,
            ownerToken: 'owner-1',
            response: { ...response, body: '"again"' },
            ttlMs: longMs,
          }),
        ).resolves.toBe(false);
        await expect(claim(key)).resolves.toMatchObject({ outcome: 'completed', response });
      });
    });

    describe('release', () => {
      it('frees the key for the next claimer', async () => {
        const key = newKey();
        await claim(key, 'owner-1');
        await expect(store.release({ key, ownerToken: 'owner-1' })).resolves.toBe(true);
        await expect(claim(key, 'owner-2')).resolves.toEqual({ outcome: 'acquired' });
        await expect(store.release({ key, ownerToken: 'owner-1' })).resolves.toBe(false);
      });
    });

    describe('leases', () => {
      it('lets a lapsed lease be taken over', async () => {
        const key = newKey();
        await claim(key, 'owner-1', 'fp', leaseMs);
        await advance(leaseMs + 50);
        await expect(claim(key, 'owner-2')).resolves.toEqual({ outcome: 'acquired' });
      });

      it('extends a live lease on renew', async () => {
        const key = newKey();
        await claim(key, 'owner-1', 'fp', leaseMs);
        await advance(leaseMs / 2);
        await expect(
          store.renew({ key, ownerToken: 'owner-1', leaseMs: leaseMs * 3 }),
        ).resolves.toBe(true);
        await advance(leaseMs);
        // Past the first lease, inside the renewed one.
        await expect(claim(key, 'owner-2')).resolves.toMatchObject({ outcome: 'in_flight' });
        await expect(
          store.complete({ key, ownerToken: 'owner-1', response: sampleResponse(), ttlMs: longMs }),
        ).resolves.toBe(true);
      });

      it('refuses to renew a lapsed lease', async () => {
        const key = newKey();
        await claim(key, 'owner-1', 'fp', leaseMs);
        await advance(leaseMs + 50);
        await expect(store.renew({ key, ownerToken: 'owner-1', leaseMs: longMs })).resolves.toBe(
          false,
        );
        await expect(claim(key, 'owner-2')).resolves.toEqual({ outcome: 'acquired' });
      });

      it('answers concurrent renewals by the owner consistently', async () => {
        const key = newKey();
        await claim(key, 'owner-1', 'fp', leaseMs);
        const results = await Promise.all(
          peers.map((peer) => peer.renew({ key, ownerToken: 'owner-1', leaseMs: longMs })),
        );
        expect(results.every(Boolean)).toBe(true);
        await advance(leaseMs + 50);
        await expect(claim(key, 'owner-2')).resolves.toMatchObject({ outcome: 'in_flight' });
      });
    });

    // Transactional mode is optional; a store that has it must keep these.
    if (options.transactions) {
      describeTransactions();
    }

    function describeTransactions() {
      describe('transactions', () => {
        const transaction = <T>(
          work: (tx: IdempotencyStoreTransaction) => Promise<T>,
        ): Promise<T> => {
          if (!store.transaction) {
            throw new Error('transactions: true, but the store has no transaction() method');
          }
          return store.transaction({ isolationLevel: 'READ COMMITTED' }, work);
        };

        it('completes the record when the transaction commits', async () => {
          const key = newKey();
          await claim(key, 'owner-1');
          const value = await transaction(async (tx) => {
            await expect(
              tx.complete({
                key,
                ownerToken: 'owner-1',
                response: sampleResponse(),
                ttlMs: longMs,
              }),
            ).resolves.toBe(true);
            return 'committed';
          });
          expect(value).toBe('committed');
          const result = await claim(key, 'owner-2');
          expect(result.outcome).toBe('completed');
        });

        it('keeps the record in flight, still owned, when the work throws and the transaction rolls back', async () => {
          // The completion is the work's last statement (a store may commit with it), so a work
          // that fails does so before completing.
          const key = newKey();
          await claim(key, 'owner-1');
          await expect(
            transaction(async () => {
              throw new Error('work failed');
            }),
          ).rejects.toThrow('work failed');
          const result = await claim(key, 'owner-2');
          expect(result.outcome).toBe('in_flight');
          await expect(store.release({ key, ownerToken: 'owner-1' })).resolves.toBe(true);
        });

        it('fences the completion inside the transaction: false once another owner took over', async () => {
          const key = newKey();
          await claim(key, 'owner-1', 'fp', leaseMs);
          await advance(leaseMs + 50);
          await expect(claim(key, 'owner-2')).resolves.toEqual({ outcome: 'acquired' });
          await transaction(async (tx) => {
            await expect(
              tx.complete({
                key,
                ownerToken: 'owner-1',
                response: sampleResponse(),
                ttlMs: longMs,
              }),
            ).resolves.toBe(false);
          });
          const result = await claim(key, 'owner-3');
          expect(result.outcome).toBe('in_flight');
        });
      });
    }

    describe('retention', () => {
      it('forgets a completed record after its ttl', async () => {
        const key = newKey();
        await claim(key, 'owner-1');
        await store.complete({
          key,
          ownerToken: 'owner-1',
          response: sampleResponse(),
          ttlMs: leaseMs,
        });
        await expect(claim(key, 'probe', 'fp', leaseMs)).resolves.toMatchObject({
          outcome: 'completed',
        });
        await advance(leaseMs + 50);
        await expect(claim(key, 'owner-2')).resolves.toEqual({ outcome: 'acquired' });
      });

      it('purges expired records and keeps live ones', async () => {
        if (!store.purgeExpired) {
          return;
        }
        const expired = [newKey(), newKey(), newKey()];
        for (const key of expired) {
          await claim(key, 'owner', 'fp', leaseMs);
        }
        const completed = newKey();
        await claim(completed, 'owner');
        await store.complete({
          key: completed,
          ownerToken: 'owner',
          response: sampleResponse(),
          ttlMs: longMs,
        });
        const inFlight = newKey();
        await advance(leaseMs + 50);
        await claim(inFlight, 'owner');
        await expect(store.purgeExpired()).resolves.toBeGreaterThanOrEqual(expired.length);
        await expect(claim(completed)).resolves.toMatchObject({ outcome: 'completed' });
        await expect(claim(inFlight)).resolves.toMatchObject({ outcome: 'in_flight' });
        for (const key of expired) {
          await expect(claim(key)).resolves.toEqual({ outcome: 'acquired' });
        }
      });
    });
  });
}
