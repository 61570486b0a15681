import {
  Body,
  type CanActivate,
  Controller,
  type ExecutionContext,
  Get,
  Injectable,
  Module,
  Post,
  UseGuards,
  UseInterceptors,
} from '@nestjs/common';
import { Logger } from '@nestjs/common';
import { jest } from '@jest/globals';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import {
  type ClaimOptions,
  type ClaimResult,
  type CompleteOptions,
  IdempotencyChannel,
  IdempotencyEngine,
  IdempotencyInterceptor,
  IdempotencyModule,
  type IdempotencyModuleOptions,
  type IdempotencyOptionsFactory,
  IdempotencyStore,
  Idempotent,
  MemoryIdempotencyStore,
  type RenewOptions,
} from 'nestjs-idempotency';
import request from 'supertest';
import { createApp, delay, PLATFORMS, type Platform, type TestApp } from './platforms';

let runs = 0;

/** Attaches `request.user` from an `x-user` header, like an auth guard would. */
@Injectable()
class HeaderAuthGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const req = context.switchToHttp().getRequest<{
      headers: Record<string, string | undefined>;
      user?: { id: string };
    }>();
    const id = req.headers['x-user'];
    if (id) {
      req.user = { id };
    }
    return true;
  }
}

interface WorkBody {
  ms?: number;
  idempotency_key?: string;
  value?: string;
}

@Controller('work')
@UseGuards(HeaderAuthGuard)
class WorkController {
  @Post()
  @Idempotent()
  async work(@Body() body: WorkBody) {
    const run = ++runs;
    if (body.ms) {
      await delay(body.ms);
    }
    return { run, value: body.value };
  }

  @Post('global')
  @Idempotent({ scope: 'global' })
  global() {
    return { run: ++runs };
  }

  @Post('tenant')
  @Idempotent({ scope: (ctx) => [String(ctx.switchToHttp().getRequest().headers['x-tenant'])] })
  tenant() {
    return { run: ++runs };
  }

  @Post('per-user')
  @Idempotent({ scope: 'user' })
  perUser() {
    return { run: ++runs };
  }

  @Post('per-user-too')
  @Idempotent({ scope: 'user' })
  perUserToo() {
    return { run: ++runs };
  }

  @Post('custom-fingerprint')
  @Idempotent({
    fingerprint: (ctx) => String(ctx.switchToHttp().getRequest().body?.value),
  })
  customFingerprint(@Body() body: WorkBody) {
    return { run: ++runs, body };
  }

  @Get('read')
  @Idempotent()
  read() {
    return { run: ++runs };
  }

  @Post('body-key')
  @Idempotent({ key: (ctx) => ctx.switchToHttp().getRequest().body?.idempotency_key })
  bodyKey() {
    return { run: ++runs };
  }

  @Post('dedup')
  @Idempotent({ key: 'fingerprint' })
  dedup(@Body() body: WorkBody) {
    return { run: ++runs, value: body.value };
  }

  @Post('wait')
  @Idempotent({ concurrent: 'wait', waitTimeout: '2s' })
  async wait(@Body() body: WorkBody) {
    const run = ++runs;
    await delay(body.ms ?? 0);
    return { run };
  }

  @Post('patient')
  @Idempotent({ retryAfter: '2s', lockTtl: '30s' })
  async patient(@Body() body: WorkBody) {
    await delay(body.ms ?? 0);
    return { run: ++runs };
  }

  @Post('capped')
  @Idempotent({ retryAfter: '5s', lockTtl: 2_500 })
  async capped(@Body() body: WorkBody) {
    await delay(body.ms ?? 0);
    return { run: ++runs };
  }

  @Post('hung')
  @Idempotent({ maxLockHold: 400 })
  async hung(@Body() body: WorkBody) {
    const run = ++runs;
    await delay(body.ms ?? 0);
    return { run };
  }

  @Post('short-wait')
  @Idempotent({ concurrent: 'wait', waitTimeout: 50 })
  async shortWait(@Body() body: WorkBody) {
    await delay(body.ms ?? 0);
    return { run: ++runs };
  }
}

/** A memory store whose clock the test moves, and whose failures it switches on. */
class ControlledStore extends MemoryIdempotencyStore {
  time = 1_000_000;
  failClaim = false;
  failComplete = false;
  /** Mimics a process that died: its lease is never renewed. */
  renewals = true;
  completes: boolean[] = [];
  renewCalls = 0;

  constructor() {
    super({ now: () => this.time, sweepIntervalMs: 0 });
  }

  override async claim(options: ClaimOptions): Promise<ClaimResult> {
    if (this.failClaim) {
      throw new Error('store down');
    }
    return super.claim(options);
  }

  override async complete(options: CompleteOptions): Promise<boolean> {
    if (this.failComplete) {
      throw new Error('store down');
    }
    const done = await super.complete(options);
    this.completes.push(done);
    return done;
  }

  override async renew(options: RenewOptions): Promise<boolean> {
    this.renewCalls++;
    return this.renewals ? super.renew(options) : true;
  }
}

const work = (t: TestApp, path = '/work') => request(t.url).post(path);

describe.each(PLATFORMS)('Idempotency lifecycle (%s)', (platform: Platform) => {
  let t: TestApp;
  let store: ControlledStore;

  beforeEach(async () => {
    runs = 0;
    store = new ControlledStore();
    t = await createApp(platform, {
      imports: [IdempotencyModule.forRoot({ store, lockTtl: 300 })],
      controllers: [WorkController],
    });
  });
  afterEach(() => t.app.close());

  describe('leases', () => {
    it('renews the lease while a long handler runs, so a duplicate gets 409 and nothing runs twice', async () => {
      // Real clock here: lockTtl is 300 ms, the handler takes 900 ms (three lease lengths).
      store.time = Date.now();
      const realClock = setInterval(() => (store.time = Date.now()), 5);
      try {
        const first = work(t)
          .set('Idempotency-Key', 'long')
          .send({ ms: 900 })
          .then((r) => r);
        await delay(600);
        const duplicate = await work(t).set('Idempotency-Key', 'long').send({ ms: 900 });
        expect(duplicate.status).toBe(409);
        expect((await first).status).toBe(201);
        expect(runs).toBe(1);
        const replay = await work(t).set('Idempotency-Key', 'long').send({ ms: 900 }).expect(201);
        expect(replay.headers['idempotent-replayed']).toBe('true');
      } finally {
        clearInterval(realClock);
      }
    });

    it('lets a retry run once the lease of a dead holder lapses, and fences the late holder', async () => {
      const warn = jest.spyOn(Logger.prototype, 'warn');
      store.renewals = false;
      const first = work(t)
        .set('Idempotency-Key', 'crash')
        .send({ ms: 300 })
        .then((r) => r);
      await delay(50);
      await work(t).set('Idempotency-Key', 'crash').send({ ms: 300 }).expect(409);
      store.time += 301;
      const retry = await work(t).set('Idempotency-Key', 'crash').send({ ms: 0 }).expect(201);
      expect(retry.body.run).toBe(2);
      // The first holder finishes late: its client still gets its answer, but it stores nothing.
      expect((await first).status).toBe(201);
      expect(store.completes).toEqual([true, false]);
      expect(warn.mock.calls.map(([message]) => String(message)).join('\n')).toContain(
        'Lease lost',
      );
      warn.mockRestore();
      const replay = await work(t).set('Idempotency-Key', 'crash').send({ ms: 0 }).expect(201);
      expect(replay.body).toEqual(retry.body);
      expect(runs).toBe(2);
    });
  });

  describe('events', () => {
    it('publishes executed, replayed, rejected and lease-lost on diagnostics channels, with the hashed key and the route', async () => {
      const events: [string, Record<string, unknown>][] = [];
      const listeners = Object.values(IdempotencyChannel).map((name) => {
        const listener = (message: unknown) =>
          events.push([name, message as Record<string, unknown>]);
        subscribe(name, listener);
        return [name, listener] as const;
      });
      try {
        await work(t).set('Idempotency-Key', 'ev').send({ value: 'a' }).expect(201);
        await work(t).set('Idempotency-Key', 'ev').send({ value: 'a' }).expect(201);
        await work(t).set('Idempotency-Key', 'ev').send({ value: 'b' }).expect(422);
        await work(t).send({ value: 'a' }).expect(400);
        // A holder that stops renewing (as a dead process would) and finishes after a takeover.
        store.renewals = false;
        const late = work(t)
          .set('Idempotency-Key', 'ev-late')
          .send({ ms: 200 })
          .then((r) => r);
        await delay(50);
        store.time += 301;
        await work(t).set('Idempotency-Key', 'ev-late').send({}).expect(201);
        expect((await late).status).toBe(201);
      } finally {
        for (const [name, listener] of listeners) {
          unsubscribe(name, listener);
        }
      }
      const route = { context: 'http', target: 'POST /work' };
      const names = events.map(([name]) => name.replace('nestjs-idempotency:', ''));
      expect(names).toEqual([
        'executed',
        'replayed',
        'rejected',
        'rejected',
        'executed',
        'lease-lost',
        'executed',
      ]);
      const [executed, replayed, reused, missing, , lost, lateExecuted] = events.map(([, e]) => e);
      expect(executed).toMatchObject({ ...route, record: 'stored', status: 201, failed: false });
      expect(executed.key).toMatch(/^[0-9a-f]{64}$/);
      expect(executed.workMs).toEqual(expect.any(Number));
      expect(replayed).toMatchObject({ ...route, key: executed.key, status: 201 });
      expect(reused).toMatchObject({ ...route, key: executed.key, code: 'IDEMPOTENCY_KEY_REUSED' });
      expect(missing).toMatchObject({ ...route, key: null, code: 'IDEMPOTENCY_KEY_MISSING' });
      expect(lost).toMatchObject({ ...route, during: 'completion' });
      expect(lateExecuted).toMatchObject({ ...route, key: lost.key, record: 'lease-lost' });
      expect(JSON.stringify(events)).not.toContain('"ev"');
    });
  });

  describe('Retry-After', () => {
    it.each([
      ['the retryAfter option', '/work/patient', '2'],
      ['the remaining lease when it is shorter (2.5 s, rounded up)', '/work/capped', '3'],
    ])('answers %s', async (_name, path, seconds) => {
      // The store's clock stands still: the lease has exactly its length left.
      const first = work(t, path).set('Idempotency-Key', 'p').send({ ms: 200 });
      const pending = first.then((r) => r);
      await delay(50);
      const res = await work(t, path).set('Idempotency-Key', 'p').send({ ms: 200 });
      expect(res.status).toBe(409);
      expect(res.body.code).toBe('IDEMPOTENCY_REQUEST_IN_PROGRESS');
      expect(res.headers['retry-after']).toBe(seconds);
      expect((await pending).status).toBe(201);
    });
  });

  describe('maxLockHold', () => {
    it('stops renewing a hung handler after maxLockHold, so its key frees and a retry runs', async () => {
      const warn = jest.spyOn(Logger.prototype, 'warn');
      store.time = Date.now();
      const realClock = setInterval(() => (store.time = Date.now()), 5);
      try {
        // lockTtl 300 ms, maxLockHold 400 ms: renewed until 400 ms, lapsed by about 700 ms.
        const first = work(t, '/work/hung')
          .set('Idempotency-Key', 'hung')
          .send({ ms: 1_500 })
          .then((r) => r);
        await delay(250);
        await work(t, '/work/hung').set('Idempotency-Key', 'hung').send({ ms: 1_500 }).expect(409);
        await delay(700);
        const retry = await work(t, '/work/hung')
          .set('Idempotency-Key', 'hung')
          .send({ ms: 0 })
          .expect(201);
        expect(retry.body.run).toBe(2);
        expect(warn.mock.calls.map(([message]) => String(message)).join('\n')).toContain(
          'maxLockHold',
        );
        expect((await first).status).toBe(201);
      } finally {
        clearInterval(realClock);
        warn.mockRestore();
      }
    });
  });

  describe('wait mode', () => {
    it('runs the handler once for 50 simultaneous requests and gives all of them its response', async () => {
      const responses = await Promise.all(
        Array.from({ length: 50 }, () =>
          work(t, '/work/wait').set('Idempotency-Key', 'w').send({ ms: 150 }),
        ),
      );
      expect(runs).toBe(1);
      expect(responses.map((r) => r.status)).toEqual(Array(50).fill(201));
      expect(new Set(responses.map((r) => r.text)).size).toBe(1);
      expect(responses.filter((r) => r.headers['idempotent-replayed'] === undefined)).toHaveLength(
        1,
      );
    });

    it('answers 409 when the wait times out', async () => {
      const first = work(t, '/work/short-wait').set('Idempotency-Key', 's').send({ ms: 400 });
      const pending = first.then((r) => r);
      await delay(50);
      const res = await work(t, '/work/short-wait').set('Idempotency-Key', 's').send({ ms: 400 });
      expect(res.status).toBe(409);
      expect(res.body.code).toBe('IDEMPOTENCY_REQUEST_IN_PROGRESS');
      expect((await pending).status).toBe(201);
    });
  });

  describe('retention', () => {
    it('forgets a completed key after its ttl', async () => {
      await work(t).set('Idempotency-Key', 'ttl').send({}).expect(201);
      store.time += 24 * 60 * 60 * 1000 - 1;
      const replay = await work(t).set('Idempotency-Key', 'ttl').send({}).expect(201);
      expect(replay.headers['idempotent-replayed']).toBe('true');
      store.time += 1;
      const fresh = await work(t).set('Idempotency-Key', 'ttl').send({}).expect(201);
      expect(fresh.headers['idempotent-replayed']).toBeUndefined();
      expect(runs).toBe(2);
    });
  });

  describe('store failures', () => {
    it('answers 503 and does not run the handler when the store fails', async () => {
      store.failClaim = true;
      const res = await work(t).set('Idempotency-Key', 'down').send({}).expect(503);
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(res.body.code).toBe('IDEMPOTENCY_STORE_UNAVAILABLE');
      expect(runs).toBe(0);
      store.failClaim = false;
      await work(t).set('Idempotency-Key', 'down').send({}).expect(201);
      expect(runs).toBe(1);
    });

    it('still answers the client when storing the response fails, and the key lapses', async () => {
      store.failComplete = true;
      const first = await work(t).set('Idempotency-Key', 'late').send({}).expect(201);
      expect(first.body.run).toBe(1);
      store.failComplete = false;
      await work(t).set('Idempotency-Key', 'late').send({}).expect(409);
      store.time += 301;
      await work(t).set('Idempotency-Key', 'late').send({}).expect(201);
      expect(runs).toBe(2);
    });
  });

  describe('scope', () => {
    it("never replays one principal's response to another", async () => {
      const a = await work(t)
        .set('x-user', 'alice')
        .set('Idempotency-Key', 'shared')
        .send({ value: 'a' });
      const b = await work(t)
        .set('x-user', 'bob')
        .set('Idempotency-Key', 'shared')
        .send({ value: 'a' });
      expect(a.status).toBe(201);
      expect(b.status).toBe(201);
      expect(b.body.run).not.toBe(a.body.run);
      expect(b.headers['idempotent-replayed']).toBeUndefined();
      const anonymous = await work(t).set('Idempotency-Key', 'shared').send({ value: 'a' });
      expect(anonymous.body.run).toBe(3);
      const aliceAgain = await work(t)
        .set('x-user', 'alice')
        .set('Idempotency-Key', 'shared')
        .send({ value: 'a' });
      expect(aliceAgain.body).toEqual(a.body);
    });

    it('shares a key across principals with scope global, and splits it with a scope function', async () => {
      await work(t, '/work/global').set('x-user', 'alice').set('Idempotency-Key', 'g').expect(201);
      const bob = await work(t, '/work/global').set('x-user', 'bob').set('Idempotency-Key', 'g');
      expect(bob.headers['idempotent-replayed']).toBe('true');
      await work(t, '/work/tenant').set('x-tenant', 't1').set('Idempotency-Key', 'k').expect(201);
      const t2 = await work(t, '/work/tenant').set('x-tenant', 't2').set('Idempotency-Key', 'k');
      expect(t2.headers['idempotent-replayed']).toBeUndefined();
      const t1 = await work(t, '/work/tenant').set('x-tenant', 't1').set('Idempotency-Key', 'k');
      expect(t1.headers['idempotent-replayed']).toBe('true');
      expect(runs).toBe(3);
    });
  });

  describe('user scope and custom fingerprints', () => {
    it("shares one key space across a user's endpoints with scope user", async () => {
      await work(t, '/work/per-user')
        .set('x-user', 'alice')
        .set('Idempotency-Key', 'u')
        .expect(201);
      // The same key on another endpoint is another operation: refused, not run.
      const other = await work(t, '/work/per-user-too')
        .set('x-user', 'alice')
        .set('Idempotency-Key', 'u');
      expect(other.status).toBe(422);
      expect(other.body.code).toBe('IDEMPOTENCY_KEY_REUSED');
      const bob = await work(t, '/work/per-user-too')
        .set('x-user', 'bob')
        .set('Idempotency-Key', 'u');
      expect(bob.status).toBe(201);
      expect(runs).toBe(2);
    });

    it('compares payloads with a custom fingerprint function', async () => {
      await work(t, '/work/custom-fingerprint')
        .set('Idempotency-Key', 'f')
        .send({ value: 'v', extra: 1 })
        .expect(201);
      const same = await work(t, '/work/custom-fingerprint')
        .set('Idempotency-Key', 'f')
        .send({ value: 'v', extra: 2 });
      expect(same.headers['idempotent-replayed']).toBe('true');
      const other = await work(t, '/work/custom-fingerprint')
        .set('Idempotency-Key', 'f')
        .send({ value: 'w' });
      expect(other.status).toBe(422);
      expect(runs).toBe(1);
    });

    it('never protects GET, even with a handler decorator', async () => {
      await request(t.url).get('/work/read').expect(200);
      await request(t.url).get('/work/read').set('Idempotency-Key', 'r').expect(200);
      await request(t.url).get('/work/read').set('Idempotency-Key', 'r').expect(200);
      expect(runs).toBe(3);
    });
  });

  describe('shutdown', () => {
    it('stops renewing leases on application shutdown', async () => {
      store.time = Date.now();
      const realClock = setInterval(() => (store.time = Date.now()), 5);
      try {
        const pending = work(t)
          .set('Idempotency-Key', 'stop')
          .send({ ms: 600 })
          .then((r) => r);
        await delay(250);
        expect(store.renewCalls).toBeGreaterThanOrEqual(1);
        t.app.get(IdempotencyEngine).onApplicationShutdown();
        const renewals = store.renewCalls;
        await delay(300);
        expect(store.renewCalls).toBe(renewals);
        expect((await pending).status).toBe(201);
      } finally {
        clearInterval(realClock);
      }
    });
  });

  describe('key sources', () => {
    it('reads the key from a function (a body field), validating it', async () => {
      await work(t, '/work/body-key').send({ idempotency_key: 'b1' }).expect(201);
      const again = await work(t, '/work/body-key').send({ idempotency_key: 'b1' }).expect(201);
      expect(again.headers['idempotent-replayed']).toBe('true');
      await work(t, '/work/body-key').send({}).expect(400);
      const bad = await work(t, '/work/body-key').send({ idempotency_key: 'x'.repeat(300) });
      expect(bad.status).toBe(400);
      expect(bad.body.code).toBe('IDEMPOTENCY_KEY_INVALID');
      expect(runs).toBe(1);
    });

    it('derives the key from the fingerprint for clients that send none', async () => {
      await work(t, '/work/dedup').send({ value: 'same' }).expect(201);
      const again = await work(t, '/work/dedup').send({ value: 'same' }).expect(201);
      expect(again.headers['idempotent-replayed']).toBe('true');
      await work(t, '/work/dedup').send({ value: 'other' }).expect(201);
      expect(runs).toBe(2);
    });
  });
});

describe.each(PLATFORMS)('IdempotencyModule configuration (%s)', (platform: Platform) => {
  @Controller('cfg')
  @Idempotent({ required: false, ttl: '1h' })
  class ConfigController {
    @Post('class')
    byClass() {
      return { run: ++runs };
    }

    @Post('handler')
    @Idempotent({ headerName: 'X-Request-Key' })
    byHandler() {
      return { run: ++runs };
    }
  }

  @Controller('manual')
  @UseInterceptors(IdempotencyInterceptor)
  class ManualController {
    @Post()
    @Idempotent()
    create() {
      return { run: ++runs };
    }
  }

  beforeEach(() => {
    runs = 0;
  });

  it('merges handler over class over module options, field by field', async () => {
    const t = await createApp(platform, {
      imports: [IdempotencyModule.forRoot({ required: true, headerName: 'X-Module-Key' })],
      controllers: [ConfigController],
    });
    try {
      // class: required false, module header name
      await request(t.url).post('/cfg/class').expect(201);
      await request(t.url).post('/cfg/class').set('X-Module-Key', 'm').expect(201);
      const replay = await request(t.url).post('/cfg/class').set('X-Module-Key', 'm').expect(201);
      expect(replay.headers['idempotent-replayed']).toBe('true');
      // handler: its own header name, the class's required: false
      await request(t.url).post('/cfg/handler').set('X-Request-Key', 'h').expect(201);
      const again = await request(t.url).post('/cfg/handler').set('X-Request-Key', 'h').expect(201);
      expect(again.headers['idempotent-replayed']).toBe('true');
      // The module's header name means nothing on this handler: no key, and not required.
      await request(t.url).post('/cfg/handler').set('X-Module-Key', 'h').expect(201);
      await request(t.url).post('/cfg/handler').set('X-Module-Key', 'h').expect(201);
      expect(runs).toBe(5);
    } finally {
      await t.app.close();
    }
  });

  it('builds options with forRootAsync useFactory and inject, and uses the given store', async () => {
    const store = new MemoryIdempotencyStore();
    @Module({ providers: [{ provide: 'STORE', useValue: store }], exports: ['STORE'] })
    class StoreModule {}
    const t = await createApp(platform, {
      imports: [
        IdempotencyModule.forRootAsync({
          imports: [StoreModule],
          inject: ['STORE'],
          useFactory: (s: IdempotencyStore) => ({ store: s, headerName: 'X-Async-Key' }),
        }),
      ],
      controllers: [ManualController],
    });
    try {
      expect(t.app.get(IdempotencyStore)).toBe(store);
      await request(t.url).post('/manual').set('X-Async-Key', 'a').expect(201);
      expect(store.size).toBe(1);
    } finally {
      await t.app.close();
    }
  });

  it('builds options with forRootAsync useClass', async () => {
    @Injectable()
    class OptionsFactory implements IdempotencyOptionsFactory {
      createIdempotencyOptions(): IdempotencyModuleOptions {
        return { headerName: 'X-Class-Key' };
      }
    }
    const t = await createApp(platform, {
      imports: [IdempotencyModule.forRootAsync({ useClass: OptionsFactory })],
      controllers: [ManualController],
    });
    try {
      await request(t.url).post('/manual').expect(400);
      await request(t.url).post('/manual').set('X-Class-Key', 'c').expect(201);
      const again = await request(t.url).post('/manual').set('X-Class-Key', 'c').expect(201);
      expect(again.headers['idempotent-replayed']).toBe('true');
    } finally {
      await t.app.close();
    }
  });

  it('builds options with forRootAsync useExisting', async () => {
    @Injectable()
    class ExistingFactory implements IdempotencyOptionsFactory {
      createIdempotencyOptions(): IdempotencyModuleOptions {
        return { headerName: 'X-Existing-Key' };
      }
    }
    @Module({ providers: [ExistingFactory], exports: [ExistingFactory] })
    class FactoryModule {}
    const t = await createApp(platform, {
      imports: [
        IdempotencyModule.forRootAsync({ imports: [FactoryModule], useExisting: ExistingFactory }),
      ],
      controllers: [ManualController],
    });
    try {
      await request(t.url).post('/manual').set('X-Existing-Key', 'e').expect(201);
      const again = await request(t.url).post('/manual').set('X-Existing-Key', 'e').expect(201);
      expect(again.headers['idempotent-replayed']).toBe('true');
    } finally {
      await t.app.close();
    }
  });

  it('registers no global interceptor with registerInterceptor: false', async () => {
    @Controller('auto')
    class AutoController {
      @Post()
      @Idempotent()
      create() {
        return { run: ++runs };
      }
    }
    const t = await createApp(platform, {
      imports: [IdempotencyModule.forRoot({ registerInterceptor: false })],
      controllers: [AutoController, ManualController],
    });
    try {
      // Not covered: no key required, every call runs.
      await request(t.url).post('/auto').expect(201);
      await request(t.url).post('/auto').expect(201);
      // Covered through @UseInterceptors(IdempotencyInterceptor).
      await request(t.url).post('/manual').expect(400);
      await request(t.url).post('/manual').set('Idempotency-Key', 'm').expect(201);
      await request(t.url).post('/manual').set('Idempotency-Key', 'm').expect(201);
      expect(runs).toBe(3);
    } finally {
      await t.app.close();
    }
  });

  it('runs the handler unprotected when the store fails and onStoreError is open', async () => {
    const store = new (class extends MemoryIdempotencyStore {
      override async claim(): Promise<ClaimResult> {
        throw new Error('store down');
      }
    })();
    const t = await createApp(platform, {
      imports: [IdempotencyModule.forRoot({ store, onStoreError: 'open' })],
      controllers: [ManualController],
    });
    try {
      await request(t.url).post('/manual').set('Idempotency-Key', 'o').expect(201);
      await request(t.url).post('/manual').set('Idempotency-Key', 'o').expect(201);
      expect(runs).toBe(2);
    } finally {
      await t.app.close();
    }
  });

  it.each([
    ['a handler', 'BadHandlerController.create', 'ttl'],
    ['a class', 'BadClassController', 'lockTtl'],
  ])(
    'fails at bootstrap on an invalid option of @Idempotent() on %s, naming controller, handler and option',
    async (_where, named, option) => {
      @Controller('bad-handler')
      class BadHandlerController {
        @Post()
        @Idempotent({ ttl: 0 })
        create() {
          return { run: ++runs };
        }
      }
      @Controller('bad-class')
      @Idempotent({ lockTtl: 'soon' })
      class BadClassController {
        @Post()
        create() {
          return { run: ++runs };
        }
      }
      const attempt = createApp(platform, {
        imports: [IdempotencyModule.forRoot()],
        controllers: [option === 'ttl' ? BadHandlerController : BadClassController],
      });
      await expect(attempt).rejects.toThrow(named);
      await expect(attempt).rejects.toThrow(`option "${option}"`);
      await expect(attempt).rejects.toThrow(/\.create\b/);
    },
  );

  it.each([
    [{ ttl: 'soon' }, 'ttl'],
    [{ lockTtl: -1 }, 'lockTtl'],
    [{ maxResponseBytes: 1.5 }, 'maxResponseBytes'],
    [{ headerName: 'bad header' }, 'headerName'],
    [{ retryAfter: 0 }, 'retryAfter'],
    [{ maxLockHold: 'forever' }, 'maxLockHold'],
    [{ unreplayable: 'drop' }, 'unreplayable'],
    [{ transaction: { isolationLevel: 'SNAPSHOT' } }, 'transaction.isolationLevel'],
  ])('fails at bootstrap on an invalid option (%o)', async (options, name) => {
    await expect(
      createApp(platform, {
        imports: [IdempotencyModule.forRoot(options as IdempotencyModuleOptions)],
        controllers: [ManualController],
      }),
    ).rejects.toThrow(`"${name}"`);
  });
});
