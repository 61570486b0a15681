import { jest } from '@jest/globals';
import { randomUUID } from 'node:crypto';
import { Logger } from '@nestjs/common';
import { Test, type TestingModule } from '@nestjs/testing';
import { Cluster, Redis } from 'ioredis';
import {
  IdempotencyModule,
  type IdempotencyModuleOptions,
  IdempotencyService,
  IdempotencyStoreUnavailableException,
} from 'nestjs-idempotency';
import { RedisIdempotencyStore, RedisReplicationError } from 'nestjs-idempotency/redis';
import { describeIdempotencyStoreContract } from 'nestjs-idempotency/testing';
import { eventually } from '../utils/processes';
import { ReplicatedRedisCluster } from '../utils/redis-cluster-replicas';
import { OwnRedis, describeWithRedisServer } from '../utils/redis-server';

/**
 * `replication` (WAIT after writes) on real servers: a master with one replica of this suite's
 * own, and a Cluster of three masters with one replica each on loopback ports 7400-7405. A
 * replica that should not acknowledge is paused with SIGSTOP.
 */

const describeOwnRedis = describeWithRedisServer();

// E2E_LOG=1 shows the library's logs.
Logger.overrideLogger(process.env.E2E_LOG ? ['log', 'warn', 'error'] : false);

const newKey = () => randomUUID().replaceAll('-', '').padEnd(64, '0');
const claimOf = (key: string, ownerToken = 'owner') => ({
  key,
  fingerprint: 'fp',
  ownerToken,
  leaseMs: 10_000,
});
const response = { status: 201, headers: {}, body: '"ok"' };

/** How many WAITs the server has run so far. */
async function waits(redis: Redis): Promise<number> {
  const stats = await redis.info('commandstats');
  return Number(/cmdstat_wait:calls=(\d+)/.exec(stats)?.[1] ?? 0);
}

describe('RedisIdempotencyStore replication options', () => {
  const create = (options: object) =>
    new RedisIdempotencyStore({ client: { lazyConnect: true }, ...options });

  it.each([
    [{ replicas: 0 }, /"replication.replicas" must be an integer of at least 1.*got 0/],
    [{ replicas: 1.5 }, /"replication.replicas" must be an integer of at least 1.*got 1.5/],
    [{}, /"replication.replicas" must be an integer.*got undefined/],
    [{ replicas: 1, timeoutMs: 0 }, /"replication.timeoutMs" must be a number.*above 0.*got 0/],
    [{ replicas: 1, timeoutMs: Number.NaN }, /"replication.timeoutMs".*got NaN/],
    [{ replicas: 1, onTimeout: 'warn' }, /"replication.onTimeout" must be 'fail' or 'ignore'/],
    [{ replicas: 1, timeout: 100 }, /"replication" has no "timeout"; its options are replicas/],
    [{ replicas: 1, timeoutMs: 2_000 }, /below commandTimeoutMs \(2000\).*raise commandTimeoutMs/],
  ])('refuses replication %j at construction, naming the option', (replication, message) => {
    expect(() => create({ replication })).toThrow(message);
  });

  it('refuses a non-object, and a WAIT timeout at or above the command timeout of a given client', async () => {
    expect(() => create({ replication: 1 })).toThrow(/"replication" must be an object/);
    const client = new Redis({ lazyConnect: true, commandTimeout: 50 });
    expect(() => new RedisIdempotencyStore({ client, replication: { replicas: 1 } })).toThrow(
      /"replication.timeoutMs" \(100\) must be below the client's commandTimeout \(50\)/,
    );
    client.disconnect();
  });

  it('accepts the documented shape and its defaults', async () => {
    const store = create({ replication: { replicas: 2 } });
    await store.close();
    const full = create({
      commandTimeoutMs: 500,
      replication: { replicas: 1, timeoutMs: 100, onTimeout: 'ignore' },
    });
    await full.close();
  });
});

describeOwnRedis('RedisIdempotencyStore with replication, on a master and a replica', () => {
  let master: OwnRedis;
  let replica: OwnRedis;
  const stores: RedisIdempotencyStore[] = [];
  const modules: TestingModule[] = [];
  const keyPrefix = 'replicated:';

  const storeWith = (replication = {}, options = {}) => {
    const store = new RedisIdempotencyStore({
      client: master.url,
      keyPrefix,
      replication: { replicas: 1, timeoutMs: 100, ...replication },
      ...options,
    });
    stores.push(store);
    return store;
  };

  const service = async (store: RedisIdempotencyStore, options: IdempotencyModuleOptions = {}) => {
    const moduleRef = await Test.createTestingModule({
      imports: [IdempotencyModule.forRoot({ lockTtl: 5_000, ...options, store })],
    }).compile();
    // compile() installs Nest's testing logger, which prints errors (the refused claims here).
    Logger.overrideLogger(process.env.E2E_LOG ? ['log', 'warn', 'error'] : false);
    await moduleRef.init();
    modules.push(moduleRef);
    return moduleRef.get(IdempotencyService);
  };

  /** Runs `work` with the replica paused, so no WAIT is satisfied. */
  const withoutReplica = async <T>(work: () => Promise<T>): Promise<T> => {
    replica.pause();
    try {
      return await work();
    } finally {
      replica.resume();
      await master.waitForReplicas(1);
    }
  };

  beforeAll(async () => {
    master = await OwnRedis.start();
    replica = await OwnRedis.start({ replicaOf: master });
    await master.waitForReplicas(1);
  }, 30_000);
  afterAll(async () => {
    await Promise.all(modules.map((moduleRef) => moduleRef.close()));
    await Promise.all(stores.map((store) => store.close()));
    await replica?.destroy();
    await master?.destroy();
  });

  describeIdempotencyStoreContract('RedisIdempotencyStore (replication: { replicas: 1 })', {
    create: () => storeWith(),
    createPeer: () => storeWith(),
    destroy: async () => undefined,
  });

  it('WAITs after an acquired claim and a completion only, and the replica holds the record when they resolve', async () => {
    const store = storeWith();
    const key = newKey();
    const recordKey = `${keyPrefix}{${key}}`;
    let before = await waits(master.admin);

    await expect(store.claim(claimOf(key))).resolves.toEqual({ outcome: 'acquired' });
    expect(await waits(master.admin)).toBe(++before);
    expect(await replica.admin.hget(recordKey, 's')).toBe('f');

    await expect(store.claim(claimOf(key, 'other'))).resolves.toMatchObject({
      outcome: 'in_flight',
    });
    await expect(store.renew({ key, ownerToken: 'owner', leaseMs: 10_000 })).resolves.toBe(true);
    expect(await waits(master.admin)).toBe(before);

    await expect(
      store.complete({ key, ownerToken: 'owner', response, ttlMs: 60_000 }),
    ).resolves.toBe(true);
    expect(await waits(master.admin)).toBe(++before);
    expect(await replica.admin.hget(recordKey, 's')).toBe('c');

    // A replay wrote nothing: no WAIT. Nor does a fenced-out completion, or a release.
    await expect(store.claim(claimOf(key, 'other'))).resolves.toMatchObject({
      outcome: 'completed',
      response,
    });
    await expect(store.complete({ key, ownerToken: 'gone', response, ttlMs: 1 })).resolves.toBe(
      false,
    );
    const released = newKey();
    await store.claim(claimOf(released));
    before = await waits(master.admin);
    await expect(store.release({ key: released, ownerToken: 'owner' })).resolves.toBe(true);
    expect(await waits(master.admin)).toBe(before);
  });

  it("with onTimeout 'fail', refuses an unacknowledged claim and releases it; replays stay fast", async () => {
    const store = storeWith({ onTimeout: 'fail' });
    const completed = newKey();
    await store.claim(claimOf(completed));
    await store.complete({ key: completed, ownerToken: 'owner', response, ttlMs: 60_000 });
    const key = newKey();

    await withoutReplica(async () => {
      const started = performance.now();
      const error = await store.claim(claimOf(key)).catch((thrown: unknown) => thrown);
      expect(performance.now() - started).toBeGreaterThanOrEqual(95);
      expect(error).toBeInstanceOf(RedisReplicationError);
      expect(error).toMatchObject({ operation: 'claim', acknowledged: 0, required: 1 });
      expect((error as Error).message).toMatch(
        /0 of the 1 replicas required \(replication.replicas\) acknowledged the claim within 100 ms.*released/,
      );
      // Released: the handler never ran, so a retry may claim at once.
      expect(await master.admin.exists(`${keyPrefix}{${key}}`)).toBe(0);

      const replayStarted = performance.now();
      await expect(store.claim(claimOf(completed, 'other'))).resolves.toMatchObject({
        outcome: 'completed',
      });
      expect(performance.now() - replayStarted).toBeLessThan(50);
    });
    await expect(store.claim(claimOf(key))).resolves.toEqual({ outcome: 'acquired' });
  });

  it("with onTimeout 'fail', throws on an unacknowledged completion, which the master kept", async () => {
    const store = storeWith();
    const key = newKey();
    await store.claim(claimOf(key));
    await withoutReplica(async () => {
      await expect(
        store.complete({ key, ownerToken: 'owner', response, ttlMs: 60_000 }),
      ).rejects.toMatchObject({ name: 'RedisReplicationError', operation: 'complete' });
    });
    await expect(store.claim(claimOf(key, 'other'))).resolves.toMatchObject({
      outcome: 'completed',
    });
  });

  it("with onTimeout 'ignore', goes on and warns once, not once per write", async () => {
    const warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    try {
      const store = storeWith({ onTimeout: 'ignore' });
      const keys = [newKey(), newKey(), newKey()];
      await withoutReplica(async () => {
        for (const key of keys) {
          await expect(store.claim(claimOf(key))).resolves.toEqual({ outcome: 'acquired' });
        }
        await expect(
          store.complete({ key: keys[0], ownerToken: 'owner', response, ttlMs: 60_000 }),
        ).resolves.toBe(true);
      });
      const warnings = warn.mock.calls.filter(([message]) => /replication/.test(String(message)));
      expect(warnings).toHaveLength(1);
      expect(String(warnings[0][0])).toMatch(
        /1 write\(s\) acknowledged by fewer than 1 replica\(s\) within 100 ms.*onTimeout: 'ignore'/,
      );
    } finally {
      warn.mockRestore();
    }
  });

  it('trusts no WAIT that ran on another connection than the write (ioredis resent it after a reconnection)', async () => {
    const store = storeWith({ timeoutMs: 500 }, { commandTimeoutMs: 3_000 });
    const key = newKey();
    await store.claim(claimOf(key));
    const id = String(await store.client.client('ID'));
    await withoutReplica(async () => {
      const completion = store
        .complete({ key, ownerToken: 'owner', response, ttlMs: 60_000 })
        .catch((error: unknown) => error);
      // The completion's WAIT blocks (the replica is paused): cut the connection under it. On the
      // new connection WAIT has no write to wait for and would answer 1 at once.
      await eventually('the WAIT to block', async () =>
        /blocked_clients:1/.test(await master.admin.info('clients')),
      );
      await master.admin.client('KILL', 'ID', id);
      await expect(completion).resolves.toMatchObject({
        name: 'RedisReplicationError',
        acknowledged: null,
      });
    });
  });

  it('a claim that was not acknowledged answers 503 through the engine and runs nothing; a retry runs once', async () => {
    const run = await service(storeWith());
    const key = randomUUID();
    let runs = 0;
    await withoutReplica(async () => {
      await expect(run.run(key, async () => ++runs)).rejects.toBeInstanceOf(
        IdempotencyStoreUnavailableException,
      );
    });
    expect(runs).toBe(0);
    await expect(run.run(key, async () => ++runs)).resolves.toMatchObject({ value: 1 });
    await expect(run.run(key, async () => ++runs)).resolves.toMatchObject({
      value: 1,
      replayed: true,
    });
    expect(runs).toBe(1);
  });

  it('a completion that was not acknowledged: the caller gets its value, the log says it was written, a retry replays it', async () => {
    const run = await service(storeWith());
    const error = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
    const key = randomUUID();
    let runs = 0;
    try {
      // The claim is acknowledged; the replica stops during the work, so the completion is not.
      const first = await run
        .run(key, async () => {
          replica.pause();
          return ++runs;
        })
        .finally(async () => {
          replica.resume();
          await master.waitForReplicas(1);
        });
      expect(first).toEqual({ value: 1, replayed: false });
      expect(error.mock.calls.map(([message]) => String(message))).toContainEqual(
        expect.stringMatching(
          /^The idempotency record was written, but the store reported a failure/,
        ),
      );
    } finally {
      error.mockRestore();
    }
    await expect(run.run(key, async () => ++runs)).resolves.toEqual({ value: 1, replayed: true });
    expect(runs).toBe(1);
  });

  it("with onStoreError 'open', an unacknowledged claim runs the work unprotected", async () => {
    const run = await service(storeWith(), { onStoreError: 'open' });
    let runs = 0;
    await withoutReplica(async () => {
      await expect(run.run(randomUUID(), async () => ++runs)).resolves.toMatchObject({ value: 1 });
    });
    expect(runs).toBe(1);
  });
});

describeOwnRedis('RedisIdempotencyStore with replication, on a Cluster with replicas', () => {
  let cluster: ReplicatedRedisCluster;
  /** Which replica follows each master. */
  let replicaOf: Map<number, number>;
  let client: Cluster;
  let store: RedisIdempotencyStore;

  beforeAll(async () => {
    cluster = await ReplicatedRedisCluster.start(
      Number(process.env.REDIS_REPLICATED_CLUSTER_PORT ?? 7400),
      2_000,
    );
    replicaOf = new Map(
      (await cluster.waitHealthy()).map(({ master, replica }) => [master, replica]),
    );
    client = new Cluster(cluster.nodes);
    store = new RedisIdempotencyStore({ client, replication: { replicas: 1, timeoutMs: 100 } });
    // A replica shown in sync may not acknowledge yet, just after its first sync: wait until
    // each master's replica acknowledges a write to a key of that master.
    const pending = new Set(replicaOf.keys());
    for (let i = 0; pending.size > 0; i++) {
      const key = `replication-check:${i}`;
      const port = Number(
        client.slots[Number(await client.cluster('KEYSLOT', key))][0].split(':')[1],
      );
      if (pending.delete(port)) {
        const admin = cluster.admin(port);
        await eventually(`the replica of ${port} to acknowledge`, async () => {
          await admin.set(key, '1');
          return (await admin.wait(1, 100)) >= 1;
        });
      }
    }
  }, 30_000);
  afterAll(async () => {
    await store?.close();
    await client?.quit();
    await cluster?.stop();
  });

  /** The port of the master that owns the slot of `key`'s record. */
  const masterOf = async (key: string) => {
    const slot = Number(await client.cluster('KEYSLOT', `idempotency:{${key}}`));
    return Number(client.slots[slot][0].split(':')[1]);
  };

  it("sends each WAIT to the master of the key's slot, and fails only the claims whose replica is paused", async () => {
    const keys = Array.from({ length: 24 }, () => newKey());
    const masters = [...replicaOf.keys()];
    const before = new Map(
      await Promise.all(
        masters.map(async (port) => [port, await waits(cluster.admin(port))] as const),
      ),
    );
    const expected = new Map(masters.map((port) => [port, 0]));
    for (const key of keys) {
      await expect(store.claim(claimOf(key))).resolves.toEqual({ outcome: 'acquired' });
      const port = await masterOf(key);
      expected.set(port, expected.get(port)! + 1);
    }
    for (const port of masters) {
      expect((await waits(cluster.admin(port))) - before.get(port)!).toBe(expected.get(port));
    }
    expect([...expected.values()].filter((count) => count > 0).length).toBeGreaterThan(1);

    // Pause the replica of one master: only the claims in that master's slots fail.
    const paused = masters[0];
    const replica = replicaOf.get(paused)!;
    const onPaused: string[] = [];
    const elsewhere: string[] = [];
    while (onPaused.length < 3 || elsewhere.length < 3) {
      const key = newKey();
      ((await masterOf(key)) === paused ? onPaused : elsewhere).push(key);
    }
    cluster.signal(replica, 'SIGSTOP');
    try {
      for (const key of onPaused.slice(0, 3)) {
        await expect(store.claim(claimOf(key))).rejects.toBeInstanceOf(RedisReplicationError);
      }
      for (const key of elsewhere.slice(0, 3)) {
        await expect(store.claim(claimOf(key))).resolves.toEqual({ outcome: 'acquired' });
      }
    } finally {
      cluster.signal(replica, 'SIGCONT');
    }
  });
});
