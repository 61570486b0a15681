import { jest } from '@jest/globals';
import { describeIdempotencyStoreContract } from '../../testing';
import { MemoryIdempotencyStore } from './memory-idempotency.store';

let now = 1_000_000;
describeIdempotencyStoreContract('MemoryIdempotencyStore', {
  create: () => new MemoryIdempotencyStore({ now: () => now, sweepIntervalMs: 0 }),
  destroy: (store) => (store as MemoryIdempotencyStore).close(),
  advance: async (ms) => {
    now += ms;
  },
});

describe('MemoryIdempotencyStore', () => {
  const response = { status: 201, headers: {}, body: '{}' };

  afterEach(() => {
    jest.useRealTimers();
  });

  it('sweeps expired records with one interval, without reads', async () => {
    jest.useFakeTimers({ now: 0 });
    const store = new MemoryIdempotencyStore({ sweepIntervalMs: 1_000 });
    for (let i = 0; i < 100; i++) {
      await store.claim({ key: `k${i}`, fingerprint: null, ownerToken: 'o', leaseMs: 500 });
    }
    await store.claim({ key: 'live', fingerprint: null, ownerToken: 'o', leaseMs: 60_000 });
    expect(jest.getTimerCount()).toBe(1);
    expect(store.size).toBe(101);
    await jest.advanceTimersByTimeAsync(1_000);
    expect(store.size).toBe(1);
    store.close();
  });

  it('stops its sweep on close and on module destroy', () => {
    jest.useFakeTimers();
    const first = new MemoryIdempotencyStore();
    const second = new MemoryIdempotencyStore();
    expect(jest.getTimerCount()).toBe(2);
    first.close();
    second.onModuleDestroy();
    expect(jest.getTimerCount()).toBe(0);
  });

  it('does not keep the process alive', () => {
    const store = new MemoryIdempotencyStore({ sweepIntervalMs: 10 });
    const timer = (store as unknown as { sweepTimer: NodeJS.Timeout }).sweepTimer;
    expect(timer.hasRef()).toBe(false);
    store.close();
  });

  it('treats an expired completed record as gone on read, before any sweep', async () => {
    let clock = 0;
    const store = new MemoryIdempotencyStore({ now: () => clock, sweepIntervalMs: 0 });
    await store.claim({ key: 'k', fingerprint: null, ownerToken: 'o', leaseMs: 100 });
    await store.complete({ key: 'k', ownerToken: 'o', response, ttlMs: 1_000 });
    clock = 1_000;
    await expect(
      store.claim({ key: 'k', fingerprint: null, ownerToken: 'p', leaseMs: 100 }),
    ).resolves.toEqual({ outcome: 'acquired' });
  });
});
