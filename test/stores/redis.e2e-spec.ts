import { jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { RedisIdempotencyStore } from 'nestjs-idempotency/redis';
import { describeIdempotencyStoreContract } from 'nestjs-idempotency/testing';
import { OwnRedis, describeWithRedisServer } from '../utils/redis-server';
import { describeWithServer } from '../utils/services';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const describeRedis = await describeWithServer('Redis', REDIS_URL);
const describeOwnRedis = describeWithRedisServer();
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

    it.each([
      // Four commands to a write at most: 5 flushes, each one or two socket writes (a flush
      // during a write still in progress waits for it and goes out in a write of its own).
      [true, 5, 10],
      [false, 20, 20],
    ])(
      'with coalesceWrites %s, writes 20 claims made in one turn of the event loop in %i to %i socket writes',
      async (coalesceWrites, fewest, most) => {
        const given = new Redis(REDIS_URL);
        const store = new RedisIdempotencyStore({ client: given, keyPrefix, coalesceWrites });
        try {
          await given.ping();
          const socket = given.stream as unknown as Record<'_write' | '_writev', () => void>;
          let count = 0;
          for (const method of ['_write', '_writev'] as const) {
            const original = socket[method];
            socket[method] = function (this: unknown, ...args: unknown[]) {
              count++;
              return (original as (...a: unknown[]) => void).apply(this, args);
            };
          }
          const base = randomUUID().replace(/-/g, '');
          const claims = await Promise.all(
            Array.from({ length: 20 }, (_, i) =>
              store.claim({
                key: `${base}${String(i).padStart(32, '0')}`,
                fingerprint: 'fp',
                ownerToken: 'o',
                leaseMs: 5_000,
              }),
            ),
          );
          expect(claims.every((claim) => claim.outcome === 'acquired')).toBe(true);
          expect(count).toBeGreaterThanOrEqual(fewest);
          expect(count).toBeLessThanOrEqual(most);
          // A later turn corks again: the next command is not held back.
          await expect(given.ping()).resolves.toBe('PONG');
        } finally {
          await store.close();
          await given.quit();
        }
      },
    );

    it('keeps the body in a field of its own, unescaped, and still replays records that hold it inside the response', async () => {
      const store = new RedisIdempotencyStore({ client: REDIS_URL, keyPrefix });
      try {
        const body = '{"id":"ord_1","note":"say \\"hi\\""}';
        const response = { status: 201, headers: { 'content-type': 'application/json' }, body };
        const key = randomUUID().replace(/-/g, '').padEnd(64, '0');
        await store.claim({ key, fingerprint: 'fp', ownerToken: 'o', leaseMs: 5_000 });
        await expect(
          store.complete({ key, ownerToken: 'o', response, ttlMs: 5_000 }),
        ).resolves.toBe(true);
        const hash = await store.client.hgetall(`${keyPrefix}{${key}}`);
        expect(hash.b).toBe(body);
        expect(JSON.parse(hash.r)).toEqual({ status: 201, headers: response.headers });
        await expect(
          store.claim({ key, fingerprint: 'fp', ownerToken: 'p', leaseMs: 5_000 }),
        ).resolves.toEqual({ outcome: 'completed', fingerprint: 'fp', response });

        // A record as versions before the body field wrote it: the whole response JSON in `r`.
        const old = randomUUID().replace(/-/g, '').padEnd(64, '1');
        const oldResponse = { ...response, status: 409, error: true };
        await store.client.hset(`${keyPrefix}{${old}}`, {
          s: 'c',
          fp: 'fp',
          r: JSON.stringify(oldResponse),
        });
        await store.client.pexpire(`${keyPrefix}{${old}}`, 5_000);
        await expect(
          store.claim({ key: old, fingerprint: 'fp', ownerToken: 'p', leaseMs: 5_000 }),
        ).resolves.toEqual({ outcome: 'completed', fingerprint: 'fp', response: oldResponse });
      } finally {
        await store.close();
      }
    });

    it('sends each script as EVALSHA, and as EVAL once the server has forgotten it (SCRIPT FLUSH)', async () => {
      const store = new RedisIdempotencyStore({ client: REDIS_URL, keyPrefix });
      const admin = new Redis(REDIS_URL);
      try {
        const response = { status: 201, headers: {}, body: '{"id":1}' };
        const base = randomUUID().replace(/-/g, '');
        const key = (i: number) => `${base}${String(i).padStart(32, '0')}`;
        const cycle = async (i: number) => {
          await expect(
            store.claim({ key: key(i), fingerprint: 'fp', ownerToken: 'o', leaseMs: 5_000 }),
          ).resolves.toEqual({ outcome: 'acquired' });
          await expect(store.renew({ key: key(i), ownerToken: 'o', leaseMs: 5_000 })).resolves.toBe(
            true,
          );
          await expect(
            store.complete({ key: key(i), ownerToken: 'o', response, ttlMs: 5_000 }),
          ).resolves.toBe(true);
          await expect(
            store.claim({ key: key(i), fingerprint: 'fp', ownerToken: 'p', leaseMs: 5_000 }),
          ).resolves.toEqual({ outcome: 'completed', fingerprint: 'fp', response });
          await store.claim({
            key: key(i + 1),
            fingerprint: null,
            ownerToken: 'o',
            leaseMs: 5_000,
          });
          await expect(store.release({ key: key(i + 1), ownerToken: 'o' })).resolves.toBe(true);
        };
        await cycle(0);
        await admin.script('FLUSH');
        await cycle(2);
        // The EVALs reloaded the scripts: the next cycle runs on EVALSHA again.
        await cycle(8);
        await admin.script('FLUSH');
        // Several at once, each meeting NOSCRIPT: each runs once, by EVAL.
        const claims = await Promise.all(
          [4, 5, 6].map((i) =>
            store.claim({ key: key(i), fingerprint: 'fp', ownerToken: 'o', leaseMs: 5_000 }),
          ),
        );
        expect(claims).toEqual([
          { outcome: 'acquired' },
          { outcome: 'acquired' },
          { outcome: 'acquired' },
        ]);
      } finally {
        await admin.quit();
        await store.close();
      }
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

  describe('a Redis URL as the first argument', () => {
    describeOwnRedis('on a Redis of its own', () => {
      let own: OwnRedis;
      beforeAll(async () => {
        own = await OwnRedis.start();
        await own.admin.call('ACL', 'SETUSER', 'idem', 'on', '>s3cret', '~*', '&*', '+@all');
      });
      afterAll(() => own?.destroy());

      it('connects to the host, port, user and database of the URL, with the options given after it', async () => {
        const store = new RedisIdempotencyStore(`redis://idem:s3cret@127.0.0.1:${own.port}/3`, {
          keyPrefix,
        });
        const key = randomUUID();
        const recordKey = `${keyPrefix}{${key}}`;
        const db3 = new Redis(`${own.url}/3`);
        const standard = new Redis(REDIS_URL);
        try {
          await store.claim({ key, fingerprint: null, ownerToken: 'o', leaseMs: 5_000 });
          expect(await store.client.call('ACL', 'WHOAMI')).toBe('idem');
          expect(await db3.exists(recordKey)).toBe(1);
          expect(await own.admin.exists(recordKey)).toBe(0);
          expect(await standard.exists(recordKey)).toBe(0);
        } finally {
          await db3.quit();
          await standard.quit();
        }
        // The store created that client, so it closes it.
        await store.close();
        expect(store.client.status).toBe('end');
      });
    });

    it('keeps records in the database of the URL, under the default prefix', async () => {
      const url = new URL(REDIS_URL);
      url.pathname = '/5';
      const store = new RedisIdempotencyStore(url.toString());
      const key = randomUUID();
      const recordKey = `idempotency:{${key}}`;
      const db5 = new Redis(url.toString());
      url.pathname = '/0';
      const db0 = new Redis(url.toString());
      try {
        await store.claim({ key, fingerprint: null, ownerToken: 'o', leaseMs: 5_000 });
        expect(await db5.exists(recordKey)).toBe(1);
        expect(await db0.exists(recordKey)).toBe(0);
        await store.onModuleDestroy();
        expect(store.client.status).toBe('end');
      } finally {
        await db5.del(recordKey);
        await db5.quit();
        await db0.quit();
        await store.close();
      }
    });

    it('takes rediss:// (TLS) URLs', async () => {
      const error = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
      try {
        const store = new RedisIdempotencyStore('rediss://127.0.0.1:1', { keyPrefix });
        expect((store.client as Redis).options).toMatchObject({ host: '127.0.0.1', port: 1 });
        expect((store.client as Redis).options.tls).toBeDefined();
        await store.close();
      } finally {
        error.mockRestore();
      }
    });

    it.each<[string, unknown[]]>([
      ['a number', [6379]],
      ['an empty string', ['']],
      ['a host and port without a scheme', ['127.0.0.1:6379']],
      ['a URL of another scheme', ['http://user:hunter2@127.0.0.1:6379']],
      ['null', [null]],
      ['an ioredis client (not inside options)', [{ defineCommand: () => undefined }]],
      [
        'a URL followed by options with a client',
        ['redis://127.0.0.1:6379', { client: REDIS_URL }],
      ],
      ['a URL followed by a non-object', ['redis://127.0.0.1:6379', 'idempotency:']],
      ['an options object followed by more options', [{ client: REDIS_URL }, { keyPrefix }]],
    ])('throws at construction for %s, naming the accepted forms', (_, args) => {
      const construct = () =>
        new (RedisIdempotencyStore as new (...args: unknown[]) => RedisIdempotencyStore)(...args);
      expect(construct).toThrow(
        /^nestjs-idempotency: RedisIdempotencyStore takes a redis:\/\/ or rediss:\/\/ URL .* or an options object /,
      );
      // A password in a rejected string is not repeated in the message (it may end up in logs).
      expect(construct).not.toThrow(/hunter2/);
    });
  });
});
