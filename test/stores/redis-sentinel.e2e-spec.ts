import { randomUUID } from 'node:crypto';
import { Logger } from '@nestjs/common';
import { Redis } from 'ioredis';
import { RedisIdempotencyStore } from 'nestjs-idempotency/redis';
import { eventually } from '../utils/processes';
import { OwnRedis, OwnSentinel, describeWithRedisServer } from '../utils/redis-server';

/**
 * The store through an ioredis client configured with Sentinel: a master, a replica and one
 * sentinel of this suite's own on loopback ports 7430-7432 (REDIS_SENTINEL_PORT to move them),
 * through a `SENTINEL FAILOVER`.
 */

const describeOwnRedis = describeWithRedisServer();
const basePort = Number(process.env.REDIS_SENTINEL_PORT ?? 7430);
const name = 'idempotency';

Logger.overrideLogger(process.env.E2E_LOG ? ['log', 'warn', 'error'] : false);

const newKey = () => randomUUID().replaceAll('-', '').padEnd(64, '0');
const claimOf = (key: string, ownerToken = 'owner') => ({
  key,
  fingerprint: 'fp',
  ownerToken,
  leaseMs: 30_000,
});

describeOwnRedis('RedisIdempotencyStore through Redis Sentinel', () => {
  let master: OwnRedis;
  let replica: OwnRedis;
  let sentinel: OwnSentinel;
  let client: Redis;
  let store: RedisIdempotencyStore;

  beforeAll(async () => {
    master = await OwnRedis.start({ port: basePort });
    replica = await OwnRedis.start({ port: basePort + 1, replicaOf: master });
    await master.waitForReplicas(1);
    sentinel = await OwnSentinel.start(basePort + 2, name, master);
    await sentinel.waitForReplicas(1);
    client = new Redis({
      sentinels: [{ host: '127.0.0.1', port: sentinel.port }],
      name,
      maxRetriesPerRequest: 1,
      // Without it ioredis stays on the old master until Sentinel demotes it (about 10 s here).
      failoverDetector: true,
    });
    client.on('error', () => undefined);
    store = new RedisIdempotencyStore({
      client,
      replication: { replicas: 1, timeoutMs: 200 },
    });
  }, 40_000);
  afterAll(async () => {
    await store?.close();
    client?.disconnect();
    await sentinel?.destroy();
    await replica?.destroy();
    await master?.destroy();
  });

  it('accepts a Sentinel client and an options object with sentinels, and keeps a WAIT-acknowledged claim through SENTINEL FAILOVER', async () => {
    const fromOptions = new RedisIdempotencyStore({
      client: { sentinels: [{ host: '127.0.0.1', port: sentinel.port }], name },
    });
    const key = newKey();
    try {
      await expect(fromOptions.claim(claimOf(newKey()))).resolves.toEqual({
        outcome: 'acquired',
      });
      expect(await fromOptions.client.config('GET', 'port')).toEqual(['port', String(master.port)]);
    } finally {
      await fromOptions.close();
    }
    expect(fromOptions.client.status).toBe('end');

    await expect(store.claim(claimOf(key))).resolves.toEqual({ outcome: 'acquired' });
    expect(await store.client.config('GET', 'port')).toEqual(['port', String(master.port)]);

    await sentinel.admin.call('SENTINEL', 'FAILOVER', name);
    await eventually('the sentinel to promote the replica', async () => {
      return (await sentinel.masterPort()) === replica.port;
    });

    // Sentinel turns the old master into a replica of the new one once it sees it again (10 s or
    // more); until then the new master has no replica and every claim fails closed. Do it now.
    await master.admin.replicaof('127.0.0.1', replica.port);
    await replica.waitForReplicas(1);

    let after: Awaited<ReturnType<RedisIdempotencyStore['claim']>> | undefined;
    const fresh = newKey();
    await eventually(
      'a claim on the new master',
      async () => {
        after = await store.claim(claimOf(fresh)).catch(() => undefined);
        return after !== undefined;
      },
      10_000,
      100,
    );
    expect(after).toEqual({ outcome: 'acquired' });
    expect(await store.client.config('GET', 'port')).toEqual(['port', String(replica.port)]);
    // The claim from before the failover was acknowledged by the replica now promoted.
    await expect(store.claim(claimOf(key, 'other'))).resolves.toMatchObject({
      outcome: 'in_flight',
      fingerprint: 'fp',
    });
  }, 40_000);
});
