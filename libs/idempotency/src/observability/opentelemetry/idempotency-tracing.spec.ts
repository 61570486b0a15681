import { context, type Span, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import type { TestingModule } from '@nestjs/testing';
import { Test } from '@nestjs/testing';
import { channels } from '../../engine/idempotency.events';
import { storageKeyOf } from '../../engine/idempotency.hashing';
import { IdempotencyModule } from '../../idempotency.module';
import { IdempotencyService } from '../../idempotency.service';
import { MemoryIdempotencyStore } from '../../stores/memory/memory-idempotency.store';
import { registerIdempotencyTracing } from './idempotency-tracing';
import { IdempotencyTracingModule } from './idempotency-tracing.module';

const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
const tracer = () => trace.getTracer('idempotency-tracing.spec');

beforeAll(() => {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  trace.setGlobalTracerProvider(provider);
});
afterAll(async () => {
  await provider.shutdown();
  trace.disable();
  context.disable();
});
afterEach(() => exporter.reset());

/** Runs `fn` in a new active span named `name`, ends it, and gives the exported span. */
async function inSpan(name: string, fn: (span: Span) => Promise<unknown>): Promise<ReadableSpan> {
  await tracer().startActiveSpan(name, async (span) => {
    try {
      await fn(span);
    } finally {
      span.end();
    }
  });
  const found = exporter.getFinishedSpans().find((s) => s.name === name);
  if (!found) {
    throw new Error(`no span ${name}`);
  }
  return found;
}

const base = { key: 'f'.repeat(64), context: 'http', target: 'POST /orders', store: 'S' };

describe('IdempotencyTracingModule, with the real engine under IdempotencyService.run()', () => {
  let moduleRef: TestingModule;
  let service: IdempotencyService;

  beforeEach(async () => {
    moduleRef = await Test.createTestingModule({
      imports: [
        IdempotencyModule.forRoot({ store: new MemoryIdempotencyStore() }),
        IdempotencyTracingModule.forRoot(),
      ],
    }).compile();
    await moduleRef.init();
    service = moduleRef.get(IdempotencyService);
  });
  afterEach(() => moduleRef.close());

  it('marks the first call executed and the retry replayed, with the hashed key only', async () => {
    const key = 'client-key-4f1c9';
    const options = { scope: 'charges', payload: { amount: 42 } };
    const first = await inSpan('first', () => service.run(key, async () => 'charged', options));
    const retry = await inSpan('retry', () => service.run(key, async () => 'again', options));
    const hashed = storageKeyOf(['run', 'charges'], key);
    expect(first.attributes).toEqual({
      'idempotency.outcome': 'executed',
      'idempotency.replayed': false,
      'idempotency.record': 'stored',
      'idempotency.target': 'charges',
      'idempotency.context': 'service',
      'idempotency.store': 'MemoryIdempotencyStore',
      'idempotency.key_hash': hashed,
    });
    expect(first.events.map((e) => e.name)).toEqual(['idempotency.executed']);
    expect(retry.attributes).toEqual({
      'idempotency.outcome': 'replayed',
      'idempotency.replayed': true,
      'idempotency.target': 'charges',
      'idempotency.context': 'service',
      'idempotency.store': 'MemoryIdempotencyStore',
      'idempotency.key_hash': hashed,
    });
    expect(retry.events).toEqual([
      expect.objectContaining({
        name: 'idempotency.replayed',
        attributes: { 'idempotency.status': 200, 'idempotency.claim_ms': expect.any(Number) },
      }),
    ]);
    expect(
      JSON.stringify([first.attributes, first.events, retry.attributes, retry.events]),
    ).not.toContain(key);
  });

  it('shows "rejected: in progress" on the span of a concurrent retry', async () => {
    const key = 'client-key-busy';
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const running = inSpan('holder', () => service.run(key, () => held.then(() => 'done')));
    const busy = await inSpan('busy', (span) =>
      service
        .run(key, async () => 'never')
        .catch((error: Error) => span.setAttribute('error', error.name)),
    );
    release();
    await running;
    expect(busy.attributes).toMatchObject({
      'idempotency.outcome': 'rejected',
      'idempotency.replayed': false,
      'idempotency.code': 'IDEMPOTENCY_REQUEST_IN_PROGRESS',
    });
    expect(busy.events).toEqual([
      expect.objectContaining({
        name: 'idempotency.rejected',
        attributes: expect.objectContaining({
          'idempotency.code': 'IDEMPOTENCY_REQUEST_IN_PROGRESS',
        }),
      }),
    ]);
    // The holder's span got its own outcome, not the retry's.
    const holder = exporter.getFinishedSpans().find((s) => s.name === 'holder')!;
    expect(holder.attributes['idempotency.outcome']).toBe('executed');
  });

  it('stops when the application closes', async () => {
    await moduleRef.close();
    const span = await inSpan('after close', () =>
      service.run('k-after', async () => 1).catch(() => 1),
    );
    expect(span.attributes).toEqual({});
    expect(span.events).toEqual([]);
  });
});

describe('registerIdempotencyTracing', () => {
  const disposers: (() => void)[] = [];
  afterEach(() => disposers.splice(0).forEach((dispose) => dispose()));
  const register = async (options?: Parameters<typeof registerIdempotencyTracing>[0]) => {
    const dispose = await registerIdempotencyTracing(options);
    disposers.push(dispose);
    return dispose;
  };

  it('leaves the key hash out with keyHash: false', async () => {
    await register({ keyHash: false });
    const span = await inSpan('no hash', async () => {
      channels.replayed.publish({ ...base, status: 201, claimMs: 1 });
    });
    expect(span.attributes['idempotency.key_hash']).toBeUndefined();
    expect(span.attributes['idempotency.outcome']).toBe('replayed');
  });

  it('adds lease-lost and store-error events, with the error type and message', async () => {
    await register();
    const span = await inSpan('faults', async () => {
      channels.leaseLost.publish({ ...base, during: 'renewal', heldMs: 5 });
      channels.storeError.publish({
        ...base,
        operation: 'claim',
        error: new RangeError('timed out'),
        durationMs: 2000,
      });
    });
    expect(span.events.map((e) => [e.name, e.attributes])).toEqual([
      ['idempotency.lease_lost', { 'idempotency.during': 'renewal' }],
      [
        'idempotency.store_error',
        {
          'idempotency.operation': 'claim',
          'exception.type': 'RangeError',
          'exception.message': 'timed out',
        },
      ],
    ]);
  });

  it('does nothing without an active span, or on an ended one', async () => {
    await register();
    const warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    channels.rejected.publish({ ...base, code: 'X', claimMs: 0 });
    const ended = tracer().startSpan('ended');
    ended.end();
    const setAttributes = jest.spyOn(ended, 'setAttributes');
    const addEvent = jest.spyOn(ended, 'addEvent');
    context.with(trace.setSpan(context.active(), ended), () =>
      channels.rejected.publish({ ...base, code: 'X', claimMs: 0 }),
    );
    expect(warn).not.toHaveBeenCalled();
    expect(setAttributes).not.toHaveBeenCalled();
    expect(addEvent).not.toHaveBeenCalled();
    jest.restoreAllMocks();
  });

  it('shares one subscription, so an event is added once, and refuses other options', async () => {
    const first = await register();
    await register();
    await expect(register({ keyHash: false })).rejects.toThrow(
      'tracing is registered already with keyHash: true; pass the same options everywhere.',
    );
    first();
    const span = await inSpan('shared', async () => {
      channels.replayed.publish({ ...base, status: 201, claimMs: 1 });
    });
    expect(span.events.map((e) => e.name)).toEqual(['idempotency.replayed']);
  });

  it('stops when every registration is disposed', async () => {
    (await register())();
    const span = await inSpan('disposed', async () => {
      channels.replayed.publish({ ...base, status: 201, claimMs: 1 });
    });
    expect(span.events).toEqual([]);
    await expect(register({ keyHash: false })).resolves.toEqual(expect.any(Function));
  });
});
