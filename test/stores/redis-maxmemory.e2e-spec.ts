import { randomUUID } from 'node:crypto';
import { Logger } from '@nestjs/common';
import { Test, type TestingModule } from '@nestjs/testing';
import {
  IdempotencyModule,
  IdempotencyRequestInProgressException,
  IdempotencyService,
  IdempotencyStoreUnavailableException,
} from 'nestjs-idempotency';
import { RedisIdempotencyStore } from 'nestjs-idempotency/redis';
import { OwnRedis, describeWithRedisServer } from '../utils/redis-server';

/**
 * The Redis store at Redis's memory limit, on a redis-server of this suite's own. Every record
 * has a TTL (the lease, then the retention), so a `volatile-*` policy may evict it as readily as
 * an `allkeys-*` one, before its time: the key is then new again and its retry runs the work a
 * second time. Under `noeviction` Redis refuses writes instead, and the store fails closed.
 * docs/scaling.md ("What changes at that scale") tells users to set `noeviction`; this is why.
 */

// E2E_LOG=1 shows the library's logs.
Logger.overrideLogger(process.env.E2E_LOG ? ['log', 'warn', 'error'] : false);

const COMPLETED = 600;
const IN_FLIGHT = 40;
/** A response of the size of the sample's POST /orders 201. */
const BODY = { id: randomUUID(), note: 'x'.repeat(300) };

describeWithRedisServer()('RedisIdempotencyStore at maxmemory', () => {
  let redis: OwnRedis;
  let store: RedisIdempotencyStore;
  let moduleRef: TestingModule;
  let service: IdempotencyService;
  const runs = new Map<string, number>();
  const gates: (() => void)[] = [];

  /** One call of `run()`; `held` keeps its work running until {@link releaseHeld}. */
  const send = (key: string, held = false) =>
    service.run(
      key,
      async () => {
        runs.set(key, (runs.get(key) ?? 0) + 1);
        if (held) {
          await new Promise<void>((resolve) => gates.push(resolve));
        }
        return BODY;
      },
      { scope: 'maxmemory' },
    );

  const releaseHeld = () => gates.splice(0).forEach((open) => open());

  /** What one call answered: the outcome, or the class of its error. */
  const answer = (key: string) =>
    send(key).then(
      ({ replayed }) => (replayed ? 'replayed' : 'ran'),
      (error: unknown) =>
        error instanceof IdempotencyStoreUnavailableException
          ? 503
          : error instanceof IdempotencyRequestInProgressException
            ? 409
            : Promise.reject(error),
    );

  /** `COMPLETED` keys run to completion and `IN_FLIGHT` held mid-run; returns both lists. */
  async function fill() {
    const completed = Array.from({ length: COMPLETED }, () => randomUUID());
    for (const key of completed) {
      await send(key);
    }
    const inFlight = Array.from({ length: IN_FLIGHT }, () => randomUUID());
    const running = inFlight.map((key) => send(key, true));
    await eventuallyHeld(IN_FLIGHT);
    return { completed, inFlight, running };
  }

  async function eventuallyHeld(count: number) {
    for (let i = 0; gates.length < count; i++) {
      if (i > 500) throw new Error(`only ${gates.length} of ${count} runs started`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** Sets `policy` and a limit just below what Redis uses now, so the next writes meet it. */
  async function atLimit(policy: string) {
    const used = Number(/used_memory:(\d+)/.exec(await redis.admin.info('memory'))?.[1]);
    await redis.admin.config('SET', 'maxmemory-policy', policy);
    await redis.admin.config('SET', 'maxmemory', String(used - 32 * 1024));
  }

  const evicted = async () =>
    Number(/evicted_keys:(\d+)/.exec(await redis.admin.info('stats'))?.[1]);

  beforeEach(async () => {
    runs.clear();
    redis = await OwnRedis.start();
    store = new RedisIdempotencyStore({ client: redis.url, keyPrefix: 'maxmemory:' });
    moduleRef = await Test.createTestingModule({
      imports: [IdempotencyModule.forRoot({ store, lockTtl: 30_000 })],
    }).compile();
    Logger.overrideLogger(process.env.E2E_LOG ? ['log', 'warn', 'error'] : false);
    await moduleRef.init();
    service = moduleRef.get(IdempotencyService);
  }, 30_000);

  afterEach(async () => {
    await redis.admin.config('SET', 'maxmemory', '0');
    releaseHeld();
    await moduleRef.close();
    await store.close();
    await redis.destroy();
  });

  it('noeviction: new keys fail closed (503, nothing runs), every record stays, and replays go on', async () => {
    const { completed, inFlight, running } = await fill();
    await atLimit('noeviction');

    const fresh = randomUUID();
    expect(await answer(fresh)).toBe(503);
    expect(runs.get(fresh)).toBeUndefined();
    // Claims that find a record write nothing, so Redis still runs them.
    for (const key of completed) {
      expect(await answer(key)).toBe('replayed');
    }
    for (const key of inFlight) {
      expect(await answer(key)).toBe(409);
    }
    expect(await evicted()).toBe(0);
    expect([...runs.values()].every((count) => count === 1)).toBe(true);

    // Memory given back: the refused key runs, once.
    await redis.admin.config('SET', 'maxmemory', '0');
    expect(await answer(fresh)).toBe('ran');
    releaseHeld();
    await Promise.all(running);
    expect(await answer(inFlight[0])).toBe('replayed');
  }, 60_000);

  it('an evicting policy (volatile-ttl here) drops records before their time, and their keys run twice', async () => {
    const { completed, inFlight } = await fill();
    await atLimit('volatile-ttl');
    // New traffic makes Redis evict to stay under the limit.
    for (let i = 0; i < 300; i++) {
      expect(await answer(randomUUID())).toBe('ran');
    }
    expect(await evicted()).toBeGreaterThan(0);

    // volatile-ttl evicts the keys closest to expiry first: the leases of runs still going.
    const runTwiceWhileRunning = [];
    for (const key of inFlight) {
      if ((await answer(key)) === 'ran') runTwiceWhileRunning.push(key);
    }
    expect(runTwiceWhileRunning.length).toBeGreaterThan(0);
    for (const key of runTwiceWhileRunning) {
      expect(runs.get(key)).toBe(2);
    }
    // Completed records are not safe from it either once the leases are gone.
    await atLimit('volatile-ttl');
    for (let i = 0; i < 300; i++) {
      await answer(randomUUID());
    }
    let completedRunAgain = 0;
    for (const key of completed) {
      if ((await answer(key)) === 'ran') completedRunAgain += 1;
    }
    expect(completedRunAgain).toBeGreaterThan(0);
  }, 60_000);
});
