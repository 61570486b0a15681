import {
  Body,
  Controller,
  Get,
  Header,
  type CallHandler,
  type ExecutionContext,
  Injectable,
  type NestInterceptor,
  Post,
  UseInterceptors,
} from '@nestjs/common';
import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { Registry } from 'prom-client';
import { Observable } from 'rxjs';
import {
  type ClaimOptions,
  type ClaimResult,
  Idempotent,
  IdempotencyInterceptor,
  IdempotencyModule,
  MemoryIdempotencyStore,
} from 'nestjs-idempotency';
import { IdempotencyTracingModule } from 'nestjs-idempotency/opentelemetry';
import { IdempotencyPrometheusModule } from 'nestjs-idempotency/prometheus';
import { parsePrometheusText, type PrometheusSample } from '../utils/prometheus-text';
import { createApp, PLATFORMS, type TestApp } from './platforms';

/** The memory store, whose next claim fails when asked: a store error the test controls. */
class FlakyMemoryStore extends MemoryIdempotencyStore {
  failNextClaim = false;

  override async claim(options: ClaimOptions): Promise<ClaimResult> {
    if (this.failNextClaim) {
      this.failNextClaim = false;
      throw new Error('store down');
    }
    return super.claim(options);
  }
}

/** Holds POST /payments until the test opens it; `entered` says a request is being held. */
let opened: Promise<void> = Promise.resolve();
let entered: () => void = () => undefined;

@Controller()
class PaymentsController {
  @Post('payments')
  @Idempotent()
  async pay(@Body() body: { amount: number }) {
    entered();
    await opened;
    return { paid: body.amount };
  }
}

/** The sample's `GET /metrics`: the registry in Prometheus text format. */
@Controller('metrics')
class MetricsController {
  constructor(private readonly registry: Registry) {}

  @Get()
  @Header('Content-Type', Registry.PROMETHEUS_CONTENT_TYPE)
  metrics(): Promise<string> {
    return this.registry.metrics();
  }
}

const CLIENT_KEY = 'client-key-7d2e91';
const OTHER_KEY = 'client-key-held-03';
const FAILING_KEY = 'client-key-unlucky';

describe.each(PLATFORMS)('GET /metrics after a known sequence of requests (%s)', (platform) => {
  let t: TestApp;
  let store: FlakyMemoryStore;
  let series: PrometheusSample[];
  let text: string;
  let contentType: string | null;

  const post = (key: string | undefined, body: unknown) =>
    fetch(`${t.url}/payments`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(key ? { 'idempotency-key': key } : {}) },
      body: JSON.stringify(body),
    });

  beforeAll(async () => {
    const registry = new Registry();
    store = new FlakyMemoryStore();
    t = await createApp(platform, {
      imports: [
        IdempotencyModule.forRoot({ store }),
        IdempotencyPrometheusModule.forRoot({ registry }),
      ],
      controllers: [PaymentsController, MetricsController],
      providers: [{ provide: Registry, useValue: registry }],
    });
    const statuses: number[] = [];
    const send = async (key: string | undefined, body: unknown) => {
      const response = await post(key, body);
      statuses.push(response.status);
      await response.arrayBuffer();
    };
    await send(CLIENT_KEY, { amount: 10 }); // executed
    await send(CLIENT_KEY, { amount: 10 }); // replayed
    await send(CLIENT_KEY, { amount: 10 }); // replayed
    await send(CLIENT_KEY, { amount: 99 }); // rejected: key reused (422)
    await send(undefined, { amount: 10 }); // rejected: key missing (400)
    let open!: () => void;
    opened = new Promise<void>((resolve) => (open = resolve));
    const inHandler = new Promise<void>((resolve) => (entered = resolve));
    const held = post(OTHER_KEY, { amount: 5 }); // executed, once opened
    await inHandler;
    await send(OTHER_KEY, { amount: 5 }); // rejected: in progress (409)
    open();
    statuses.push((await held).status);
    store.failNextClaim = true;
    await send(FAILING_KEY, { amount: 1 }); // rejected: store unavailable (503), a store error
    expect(statuses).toEqual([201, 201, 201, 422, 400, 409, 201, 503]);

    const response = await fetch(`${t.url}/metrics`);
    expect(response.status).toBe(200);
    contentType = response.headers.get('content-type');
    text = await response.text();
    series = parsePrometheusText(text);
  });
  afterAll(() => t.app.close());

  const route = { target: 'POST /payments', context: 'http', store: 'FlakyMemoryStore' };
  /** The value of the one series with exactly these labels; undefined when there is none. */
  const value = (name: string, labels: Record<string, string>) => {
    const found = series.filter(
      (s) =>
        s.name === name &&
        Object.keys(s.labels).length === Object.keys(labels).length &&
        Object.entries(labels).every(([k, v]) => s.labels[k] === v),
    );
    expect(found.length).toBeLessThanOrEqual(1);
    return found[0]?.value;
  };

  it('answers in the Prometheus text format', () => {
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(text).toContain('# TYPE idempotency_requests_total counter');
    expect(text).toContain('# TYPE idempotency_store_duration_seconds histogram');
  });

  it('counts executed, replayed and rejected requests by code, labelled by route template and store', () => {
    const requests = 'idempotency_requests_total';
    expect(value(requests, { outcome: 'executed', ...route })).toBe(2);
    expect(value(requests, { outcome: 'replayed', ...route })).toBe(2);
    for (const code of [
      'IDEMPOTENCY_KEY_REUSED',
      'IDEMPOTENCY_KEY_MISSING',
      'IDEMPOTENCY_REQUEST_IN_PROGRESS',
      'IDEMPOTENCY_STORE_UNAVAILABLE',
    ]) {
      expect([code, value(requests, { outcome: 'rejected', code, ...route })]).toEqual([code, 1]);
    }
    expect(series.filter((s) => s.name === requests).map((s) => s.value)).toHaveLength(6);
  });

  it('counts the store error, and no lease lost', () => {
    expect(value('idempotency_store_errors_total', { operation: 'claim', ...route })).toBe(1);
    expect(series.filter((s) => s.name === 'idempotency_lease_lost_total')).toEqual([]);
  });

  it('observes one claim per request that reached the store, one settle per stored response', () => {
    const count = 'idempotency_store_duration_seconds_count';
    // 2 executed, 2 replayed, 1 reused, 1 in progress, 1 failed claim; not the missing key.
    expect(value(count, { operation: 'claim', ...route })).toBe(7);
    expect(value(count, { operation: 'settle', ...route })).toBe(2);
    const inf = value('idempotency_store_duration_seconds_bucket', {
      le: '+Inf',
      operation: 'claim',
      ...route,
    });
    expect(inf).toBe(7);
  });

  it('never shows a client key, a hashed key or a key label', () => {
    for (const key of [CLIENT_KEY, OTHER_KEY, FAILING_KEY]) {
      expect(text).not.toContain(key);
    }
    expect(text).not.toMatch(/[0-9a-f]{64}/);
    expect(series.every((s) => !('key' in s.labels))).toBe(true);
  });
});

const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });

/**
 * Stands in for the HTTP instrumentation: a server span, active while the rest of the chain runs
 * (applied before `IdempotencyInterceptor`, so the engine runs inside it).
 */
@Injectable()
class ServerSpanInterceptor implements NestInterceptor {
  intercept(execution: ExecutionContext, next: CallHandler): Observable<unknown> {
    const name = execution.switchToHttp().getRequest<{ headers: Record<string, string> }>().headers[
      'x-span-name'
    ];
    return new Observable((subscriber) => {
      const span = trace.getTracer('e2e').startSpan(name);
      const subscription = context.with(trace.setSpan(context.active(), span), () =>
        next.handle().subscribe({
          next: (value) => subscriber.next(value),
          error: (error: unknown) => {
            span.end();
            subscriber.error(error);
          },
          complete: () => {
            span.end();
            subscriber.complete();
          },
        }),
      );
      return () => subscription.unsubscribe();
    });
  }
}

@Controller('traced')
@UseInterceptors(ServerSpanInterceptor, IdempotencyInterceptor)
class TracedController {
  @Post()
  @Idempotent()
  create(@Body() body: { amount: number }) {
    return { amount: body.amount };
  }
}

describe.each(PLATFORMS)('a replayed request on the trace (%s)', (platform) => {
  let t: TestApp;

  beforeAll(async () => {
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    trace.setGlobalTracerProvider(provider);
    t = await createApp(platform, {
      imports: [
        IdempotencyModule.forRoot({ registerInterceptor: false }),
        IdempotencyTracingModule.forRoot(),
      ],
      controllers: [TracedController],
    });
  });
  afterAll(async () => {
    await t.app.close();
    trace.disable();
    context.disable();
    exporter.reset();
  });

  const post = (span: string, key: string) =>
    fetch(`${t.url}/traced`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': key, 'x-span-name': span },
      body: JSON.stringify({ amount: 3 }),
    });

  it('gets idempotency.outcome "replayed" and an idempotency.replayed event', async () => {
    const key = `trace-key-${platform}`;
    expect((await post('first', key)).status).toBe(201);
    const retry = await post('retry', key);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    const spans = exporter.getFinishedSpans();
    const first = spans.find((s) => s.name === 'first')!;
    const replayed = spans.find((s) => s.name === 'retry')!;
    expect(first.attributes).toMatchObject({
      'idempotency.outcome': 'executed',
      'idempotency.target': 'POST /traced',
    });
    expect(replayed.attributes).toMatchObject({
      'idempotency.outcome': 'replayed',
      'idempotency.replayed': true,
      'idempotency.target': 'POST /traced',
      'idempotency.context': 'http',
      'idempotency.store': 'MemoryIdempotencyStore',
      'idempotency.key_hash': first.attributes['idempotency.key_hash'],
    });
    expect(replayed.events.map((e) => [e.name, e.attributes?.['idempotency.status']])).toEqual([
      ['idempotency.replayed', 201],
    ]);
    expect(JSON.stringify(spans.map((s) => [s.attributes, s.events]))).not.toContain(key);
  });
});
