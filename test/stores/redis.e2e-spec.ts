import { jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { RedisIdempotencyStore } from 'nestjs-idempotency/redis';
import { describeIdempotencyStoreContract } from 'nestjs-idempotency/testing';
import { describeWithServer } from '../utils/services';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const describeRedis = await describeWithServer('Redis', REDIS_URL);
/** Keeps this run's keys apart from other runs on the same Redis. */
const keyPrefix = `idempotency-test:${randomUUID()}:`;

describeRedis('RedisIdempotencyStore on standalone Redis', () => {
  describeIdempotencyStoreContract('RedisIdempotencyStore (standalone)', {
    create: () => new RedisIdempotencyStore({ client: REDIS_URL, keyPrefix }),
    // Each racer has its own connection, so Redis decides the winner.
    createPeer: () => new RedisIdempotencyStore({ client: REDIS_URL, keyPrefix }),
    destroy: (store) => (store as RedisIdempotencyStore).close(),
  });

  describe('clients', () => {
    it('leaves a client it was given open, and closes one it created', async () => {
      const given = new Redis(REDIS_URL);
      const withGiven = new RedisIdempotencyStore({ client: given, keyPrefix });
      await withGiven.claim({
        key: 'a'.repeat(64),
        fingerprint: null,
        ownerToken: 'o',
        leaseMs: 100,
      });
      await withGiven.close();
      expect(given.status).toBe('ready');
      await given.quit();

      const created = new RedisIdempotencyStore({ client: REDIS_URL, keyPrefix });
      await created.claim({
        key: 'b'.repeat(64),
        fingerprint: null,
        ownerToken: 'o',
        leaseMs: 100,
      });
      await created.onModuleDestroy();
      expect(created.client.status).toBe('end');
    });

    it('keeps records under hash-tagged keys with the lease as their expiry', async () => {
      const store = new RedisIdempotencyStore({ client: REDIS_URL, keyPrefix });
      const key = 'c'.repeat(64);
      await store.claim({ key, fingerprint: 'fp', ownerToken: 'o', leaseMs: 5_000 });
      const ttl = await store.client.pttl(`${keyPrefix}{${key}}`);
      expect(ttl).toBeGreaterThan(4_000);
      expect(ttl).toBeLessThanOrEqual(5_000);
      await store.close();
    });

    it('fails, rather than waits, when Redis cannot be reached', async () => {
      const store = new RedisIdempotencyStore({
        client: { host: '127.0.0.1', port: 1, retryStrategy: () => null, lazyConnect: true },
      });
      await expect(
        store.claim({ key: 'd'.repeat(64), fingerprint: null, ownerToken: 'o', leaseMs: 100 }),
      ).rejects.toThrow();
      await store.close();
    });

    it('logs a lost connection once, not once per reconnection attempt, and closes while down', async () => {
      const error = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
      const store = new RedisIdempotencyStore({
        client: { host: '127.0.0.1', port: 1, retryStrategy: () => 10 },
      });
      try {
        for (let i = 0; i < 3; i++) {
          await expect(
            store.claim({ key: 'e'.repeat(64), fingerprint: null, ownerToken: 'o', leaseMs: 100 }),
          ).rejects.toThrow();
        }
        const lost = error.mock.calls.filter(([message]) =>
          String(message).includes('Redis connection lost'),
        );
        expect(lost).toHaveLength(1);
        // Shutting down while Redis is down must not hang.
        await store.close();
      } finally {
        error.mockRestore();
      }
    });
  });
});
