import { channel } from 'node:diagnostics_channel';
import { Test } from '@nestjs/testing';
import { Counter, Registry } from 'prom-client';
import {
  channels,
  IdempotencyChannel,
  type IdempotencyExecutedEvent,
  type IdempotencyRejectedEvent,
} from '../../engine/idempotency.events';
import { IdempotencyMetricName, registerIdempotencyMetrics } from './idempotency-metrics';
import { IdempotencyPrometheusModule } from './idempotency-prometheus.module';

const KEY = 'a'.repeat(64);
const base = { key: KEY, context: 'http', target: 'POST /orders', store: 'MemoryIdempotencyStore' };
const labels = { target: 'POST /orders', context: 'http', store: 'MemoryIdempotencyStore' };

const executed = (over: Partial<IdempotencyExecutedEvent> = {}): IdempotencyExecutedEvent => ({
  ...(base as IdempotencyExecutedEvent),
  record: 'stored',
  status: 201,
  failed: false,
  claimMs: 2,
  workMs: 5,
  settleMs: 3,
  ...over,
});
const rejected = (code: string, over: Partial<IdempotencyRejectedEvent> = {}) => ({
  ...base,
  code,
  claimMs: 1,
  ...over,
});

/** The value of one series of `name` whose labels are exactly `want`. */
async function value(
  registry: Registry,
  name: string,
  want: Record<string, string>,
): Promise<number | undefined> {
  const metric = registry.getSingleMetric(name);
  if (!metric) {
    return undefined;
  }
  const { values } = await metric.get();
  const found = values.filter(
    (v) =>
      (v as { metricName?: string }).metricName === undefined ||
      (v as { metricName?: string }).metricName === name,
  );
  const match = found.find((v) => {
    const got = Object.entries(v.labels);
    return (
      got.length === Object.keys(want).length &&
      got.every(([k, label]) => want[k] === String(label))
    );
  });
  return match?.value;
}

/** `_count` of a histogram series. */
async function histogramCount(
  registry: Registry,
  want: Record<string, string>,
): Promise<number | undefined> {
  const { values } = await registry.getSingleMetric(IdempotencyMetricName.StoreDuration)!.get();
  const series = values.filter(
    (v) =>
      (v as { metricName?: string }).metricName ===
        `${IdempotencyMetricName.StoreDuration}_count` &&
      Object.keys(want).every((k) => String(v.labels[k as never]) === want[k]),
  );
  return series.length ? series.reduce((sum, v) => sum + v.value, 0) : undefined;
}

describe('registerIdempotencyMetrics', () => {
  let registry: Registry;
  const disposers: (() => void)[] = [];

  beforeEach(() => {
    registry = new Registry();
  });
  afterEach(() => {
    disposers.splice(0).forEach((dispose) => dispose());
  });
  const register = async (options: Parameters<typeof registerIdempotencyMetrics>[0] = {}) => {
    const dispose = await registerIdempotencyMetrics({ registry, ...options });
    disposers.push(dispose);
    return dispose;
  };

  it('counts executed, replayed and rejected calls by outcome and code, labelled by target, context and store', async () => {
    await register();
    channels.executed.publish(executed());
    channels.replayed.publish({ ...base, status: 201, claimMs: 1 });
    channels.replayed.publish({ ...base, status: 201, claimMs: 1 });
    channels.rejected.publish(rejected('IDEMPOTENCY_KEY_REUSED'));
    channels.rejected.publish(rejected('IDEMPOTENCY_KEY_MISSING', { key: null, claimMs: 0 }));
    const requests = IdempotencyMetricName.Requests;
    expect(await value(registry, requests, { outcome: 'executed', ...labels })).toBe(1);
    expect(await value(registry, requests, { outcome: 'replayed', ...labels })).toBe(2);
    expect(
      await value(registry, requests, {
        outcome: 'rejected',
        code: 'IDEMPOTENCY_KEY_REUSED',
        ...labels,
      }),
    ).toBe(1);
    expect(
      await value(registry, requests, {
        outcome: 'rejected',
        code: 'IDEMPOTENCY_KEY_MISSING',
        ...labels,
      }),
    ).toBe(1);
    const text = await registry.metrics();
    expect(text).not.toContain(KEY);
    expect(text).not.toMatch(/\bkey="/);
  });

  it('counts lease losses and store errors by when and by operation', async () => {
    await register();
    channels.leaseLost.publish({ ...base, during: 'renewal', heldMs: 10 });
    channels.leaseLost.publish({ ...base, during: 'completion', heldMs: 10 });
    channels.storeError.publish({
      ...base,
      operation: 'claim',
      error: new Error('down'),
      durationMs: 7,
    });
    channels.storeError.publish({
      ...base,
      operation: 'renew',
      error: new Error('down'),
      durationMs: 7,
    });
    const { LeaseLost, StoreErrors } = IdempotencyMetricName;
    expect(await value(registry, LeaseLost, { during: 'renewal', ...labels })).toBe(1);
    expect(await value(registry, LeaseLost, { during: 'completion', ...labels })).toBe(1);
    expect(await value(registry, StoreErrors, { operation: 'claim', ...labels })).toBe(1);
    expect(await value(registry, StoreErrors, { operation: 'renew', ...labels })).toBe(1);
  });

  it('observes store latency in seconds: one claim per call that reached the store, one settle per write', async () => {
    await register();
    channels.executed.publish(executed({ claimMs: 2, settleMs: 3 }));
    channels.replayed.publish({ ...base, status: 201, claimMs: 4 });
    channels.rejected.publish(rejected('IDEMPOTENCY_REQUEST_IN_PROGRESS', { claimMs: 1 }));
    // Never reached the store: not observed.
    channels.rejected.publish(rejected('IDEMPOTENCY_KEY_MISSING', { key: null, claimMs: 0 }));
    // A failed claim: observed once, from its store-error event, not from what follows it.
    channels.storeError.publish({
      ...base,
      operation: 'claim',
      error: new Error('x'),
      durationMs: 2000,
    });
    channels.rejected.publish(rejected('IDEMPOTENCY_STORE_UNAVAILABLE', { claimMs: 2000 }));
    channels.storeError.publish({
      ...base,
      operation: 'claim',
      error: new Error('x'),
      durationMs: 5,
    });
    channels.executed.publish(executed({ record: 'unprotected', claimMs: 5, settleMs: 0 }));
    // A failed write: observed once, from its store-error event.
    channels.storeError.publish({
      ...base,
      operation: 'complete',
      error: new Error('x'),
      durationMs: 6,
    });
    channels.executed.publish(executed({ record: 'store-failed', claimMs: 1, settleMs: 6 }));
    // Transactional mode: the completion is inside the transaction (settleMs 0).
    channels.executed.publish(executed({ claimMs: 1, settleMs: 0 }));

    expect(await histogramCount(registry, { operation: 'claim' })).toBe(7);
    expect(await histogramCount(registry, { operation: 'settle' })).toBe(2);
    const { values } = await registry.getSingleMetric(IdempotencyMetricName.StoreDuration)!.get();
    const sum = (operation: string) =>
      values.find(
        (v) =>
          (v as { metricName?: string }).metricName ===
            `${IdempotencyMetricName.StoreDuration}_sum` && v.labels.operation === operation,
      )?.value;
    expect(sum('claim')).toBeCloseTo((2 + 4 + 1 + 2000 + 5 + 1 + 1) / 1000, 6);
    expect(sum('settle')).toBeCloseTo((3 + 6) / 1000, 6);
  });

  it('takes a prefix and buckets', async () => {
    await register({ prefix: 'orders_', buckets: [0.01, 0.1] });
    channels.replayed.publish({ ...base, status: 201, claimMs: 50 });
    const text = await registry.metrics();
    expect(text).toContain('orders_idempotency_requests_total{outcome="replayed"');
    expect(text).toMatch(/orders_idempotency_store_duration_seconds_bucket\{le="0.01".*\} 0/);
    expect(text).toMatch(/orders_idempotency_store_duration_seconds_bucket\{le="0.1".*\} 1/);
    expect(text).not.toMatch(/^idempotency_/m);
  });

  it('stops counting when disposed, and unsubscribes from every channel', async () => {
    const before = Object.values(IdempotencyChannel).map((name) => channel(name).hasSubscribers);
    const dispose = await register();
    expect(Object.values(IdempotencyChannel).every((name) => channel(name).hasSubscribers)).toBe(
      true,
    );
    channels.executed.publish(executed());
    dispose();
    dispose();
    channels.executed.publish(executed());
    expect(
      await value(registry, IdempotencyMetricName.Requests, { outcome: 'executed', ...labels }),
    ).toBe(1);
    expect(Object.values(IdempotencyChannel).map((name) => channel(name).hasSubscribers)).toEqual(
      before,
    );
  });

  it('shares one subscription between registrations of one registry, so nothing is counted twice', async () => {
    const first = await register();
    const second = await register();
    channels.executed.publish(executed());
    first();
    channels.executed.publish(executed());
    second();
    channels.executed.publish(executed());
    expect(
      await value(registry, IdempotencyMetricName.Requests, { outcome: 'executed', ...labels }),
    ).toBe(2);
  });

  it('carries on with the metrics already in the registry when registered again', async () => {
    (await register())();
    channels.executed.publish(executed());
    await register();
    channels.executed.publish(executed());
    channels.executed.publish(executed());
    expect(
      await value(registry, IdempotencyMetricName.Requests, { outcome: 'executed', ...labels }),
    ).toBe(2);
    expect(registry.getMetricsAsArray()).toHaveLength(4);
  });

  it('registers afresh after the registry was cleared', async () => {
    (await register())();
    registry.clear();
    await register({ buckets: [1] });
    channels.executed.publish(executed());
    expect(
      await value(registry, IdempotencyMetricName.Requests, { outcome: 'executed', ...labels }),
    ).toBe(1);
  });

  it('counts into each registry once when two registries are registered', async () => {
    const other = new Registry();
    await register();
    disposers.push(await registerIdempotencyMetrics({ registry: other }));
    channels.replayed.publish({ ...base, status: 201, claimMs: 1 });
    for (const r of [registry, other]) {
      expect(
        await value(r, IdempotencyMetricName.Requests, { outcome: 'replayed', ...labels }),
      ).toBe(1);
    }
  });

  it('refuses a registry holding a metric of the same name, and registers nothing', async () => {
    new Counter({ name: IdempotencyMetricName.LeaseLost, help: 'mine', registers: [registry] });
    await expect(register()).rejects.toThrow(
      'the registry already has a metric named idempotency_lease_lost_total, not registered by registerIdempotencyMetrics(); pass another prefix or registry.',
    );
    expect(registry.getMetricsAsArray().map((m) => m.name)).toEqual([
      IdempotencyMetricName.LeaseLost,
    ]);
    await expect(register({ prefix: 'idem_' })).resolves.toEqual(expect.any(Function));
  });

  it('refuses other buckets for a registry and prefix registered already', async () => {
    await register();
    await expect(register({ buckets: [1, 2] })).rejects.toThrow(
      /idempotency_store_duration_seconds is registered already with the buckets \[0\.0005,.*\]; pass the same buckets/,
    );
  });
});

describe('IdempotencyPrometheusModule', () => {
  it('counts from init to close (forRoot)', async () => {
    const registry = new Registry();
    const moduleRef = await Test.createTestingModule({
      imports: [IdempotencyPrometheusModule.forRoot({ registry })],
    }).compile();
    channels.executed.publish(executed());
    await moduleRef.init();
    channels.executed.publish(executed());
    await moduleRef.close();
    channels.executed.publish(executed());
    expect(
      await value(registry, IdempotencyMetricName.Requests, { outcome: 'executed', ...labels }),
    ).toBe(1);
  });

  it('takes its options from a factory (forRootAsync)', async () => {
    const registry = new Registry();
    const moduleRef = await Test.createTestingModule({
      imports: [
        IdempotencyPrometheusModule.forRootAsync({
          useFactory: async () => ({ registry, prefix: 'async_' }),
        }),
      ],
    }).compile();
    await moduleRef.init();
    channels.replayed.publish({ ...base, status: 200, claimMs: 1 });
    await moduleRef.close();
    expect(await registry.metrics()).toContain(
      'async_idempotency_requests_total{outcome="replayed",target="POST /orders",context="http",store="MemoryIdempotencyStore"} 1',
    );
  });
});
