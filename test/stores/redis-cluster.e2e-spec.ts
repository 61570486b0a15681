import { Cluster } from 'ioredis';
import { RedisIdempotencyStore } from 'nestjs-idempotency/redis';
import { describeIdempotencyStoreContract } from 'nestjs-idempotency/testing';
import { type LocalRedisCluster, startRedisCluster } from '../utils/redis-cluster';

/**
 * Three masters started here with redis-server on loopback ports 7301-7303 (REDIS_CLUSTER_PORT
 * to move them), torn down after the suite.
 */
const basePort = Number(process.env.REDIS_CLUSTER_PORT ?? 7301);
let cluster: LocalRedisCluster;

describe('RedisIdempotencyStore on a Redis Cluster of three masters', () => {
  beforeAll(async () => {
    cluster = await startRedisCluster(basePort);
  }, 30_000);
  afterAll(() => cluster?.stop());

  describeIdempotencyStoreContract('RedisIdempotencyStore (Cluster)', {
    create: () => new RedisIdempotencyStore({ client: { nodes: cluster.nodes } }),
    createPeer: () => new RedisIdempotencyStore({ client: { nodes: cluster.nodes } }),
    destroy: (store) => (store as RedisIdempotencyStore).close(),
  });

  it('spreads records over the masters, each script on one slot', async () => {
    const client = new Cluster(cluster.nodes);
    const store = new RedisIdempotencyStore({ client });
    const keys = Array.from({ length: 30 }, (_, i) => i.toString(16).padStart(64, '0'));
    for (const key of keys) {
      await expect(
        store.claim({ key, fingerprint: 'fp', ownerToken: 'o', leaseMs: 10_000 }),
      ).resolves.toEqual({ outcome: 'acquired' });
    }
    const sizes = await Promise.all(client.nodes('master').map((node) => node.dbsize()));
    expect(sizes.filter((size) => size > 0).length).toBeGreaterThan(1);
    await store.close();
    expect(client.status).toBe('ready');
    await client.quit();
  });
});
