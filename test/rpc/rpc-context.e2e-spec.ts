import { randomUUID } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { BadRequestException, Controller, Get, type INestApplication, Post } from '@nestjs/common';
import {
  type ClientProxy,
  ClientProxyFactory,
  Ctx,
  EventPattern,
  MessagePattern,
  Payload,
  type TcpContext,
  Transport,
} from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import { firstValueFrom } from 'rxjs';
import request from 'supertest';
import {
  IdempotencyChannel,
  type IdempotencyExecutedEvent,
  Idempotent,
  IdempotencyModule,
} from 'nestjs-idempotency';
import { eventually, freePort } from '../utils/processes';

/**
 * The RPC context's rules on Nest's TCP transport (no broker needed): class-level `@Idempotent()`
 * on a hybrid controller, object patterns, the key from packet metadata, a function or the
 * fingerprint, scopes, HTTP errors of a handler, `required: false`, and bootstrap validation.
 */

const calls = new Map<string, number>();
const count = (key: string) => calls.get(key) ?? 0;
const effect = (key: string) => calls.set(key, count(key) + 1);

type Keyed = { key: string; tenant?: string; amount?: number };

@Controller('hybrid')
@Idempotent({ ttl: '1h' })
class HybridController {
  @Post()
  create() {
    effect('http-post');
    return { id: randomUUID() };
  }

  @Get()
  list() {
    effect('http-get');
    return [];
  }

  @MessagePattern('hybrid.charge')
  charge(@Payload() data: Keyed) {
    effect(data.key);
    return { id: randomUUID() };
  }

  @EventPattern('hybrid.shipped')
  shipped(@Payload() data: Keyed) {
    effect(data.key);
  }

  @MessagePattern({ cmd: 'sum', version: 1 })
  sum(@Payload() data: Keyed) {
    effect(data.key);
    return { id: randomUUID() };
  }

  @MessagePattern('hybrid.declined')
  declined(@Payload() data: Keyed) {
    effect(data.key);
    throw new BadRequestException('declined');
  }
}

@Controller()
class OptionsController {
  @MessagePattern('by-function')
  @Idempotent({ key: (context) => context.switchToRpc().getData<{ id?: string }>().id })
  byFunction(@Payload() data: { id: string }) {
    effect(data.id);
    return { id: randomUUID() };
  }

  @MessagePattern('by-fingerprint')
  @Idempotent({ key: 'fingerprint' })
  byFingerprint(@Payload() data: Keyed) {
    effect(data.key);
    return { id: randomUUID() };
  }

  @MessagePattern('tenant-scoped')
  @Idempotent({
    scope: (context) => [context.switchToRpc().getData<Keyed>().tenant ?? 'none'],
    fingerprint: false,
  })
  tenantScoped(@Payload() data: Keyed) {
    effect(`${data.key}:${data.tenant}`);
    return { tenant: data.tenant, id: randomUUID() };
  }

  @MessagePattern('optional')
  @Idempotent({ required: false })
  optional(@Payload() data: Keyed) {
    effect(data.key);
    return { id: randomUUID() };
  }

  @MessagePattern('by-principal')
  @Idempotent({
    scope: 'user',
    principal: (context) =>
      context.switchToRpc().getContext<TcpContext>().getMetadata()?.['x-user'],
  })
  byPrincipal(@Payload() data: Keyed, @Ctx() ctx: TcpContext) {
    effect(`${data.key}:${ctx.getMetadata()?.['x-user']}`);
    return { id: randomUUID() };
  }
}

describe('RPC context (TCP transport)', () => {
  let app: INestApplication;
  let url: string;
  let client: ClientProxy;
  /** Packet metadata for the next sends, by data object. */
  const metadata = new WeakMap<object, Record<string, string>>();

  const send = <T>(pattern: unknown, data: object, meta?: Record<string, string>) => {
    if (meta) {
      metadata.set(data, meta);
    }
    return firstValueFrom(client.send<T>(pattern, data));
  };
  const failure = async (promise: Promise<unknown>): Promise<unknown> => {
    try {
      await promise;
    } catch (error) {
      return error;
    }
    throw new Error('expected the call to fail');
  };

  beforeAll(async () => {
    const port = await freePort();
    const moduleRef = await Test.createTestingModule({
      imports: [IdempotencyModule.forRoot()],
      controllers: [HybridController, OptionsController],
    }).compile();
    app = moduleRef.createNestApplication({ logger: false });
    app.connectMicroservice(
      { transport: Transport.TCP, options: { host: '127.0.0.1', port } },
      { inheritAppConfig: true },
    );
    await app.listen(0, '127.0.0.1');
    await app.startAllMicroservices();
    url = `http://127.0.0.1:${(app.getHttpServer().address() as { port: number }).port}`;
    client = ClientProxyFactory.create({
      transport: Transport.TCP,
      options: { host: '127.0.0.1', port },
    });
    client.setOnDispatchHook((packet) => {
      const meta = metadata.get(packet.data as object);
      if (meta) {
        packet.metadata = meta;
      }
    });
    await client.connect();
  });

  afterAll(async () => {
    client?.close();
    await app?.close();
  });

  describe('a class-level @Idempotent() on a hybrid controller', () => {
    it('keeps the HTTP rules for its routes: POST needs a key, GET is never covered', async () => {
      const res = await request(url).post('/hybrid').send({});
      expect(res.status).toBe(400);
      expect(res.body.code).toBe('IDEMPOTENCY_KEY_MISSING');
      await request(url).get('/hybrid').expect(200);
      expect(count('http-get')).toBe(1);
      expect(count('http-post')).toBe(0);
    });

    it('covers its message handlers, keyed by the packet metadata (any case)', async () => {
      const key = `charge-${randomUUID()}`;
      const data = { key };
      const first = await send('hybrid.charge', data, { 'idempotency-key': key });
      expect(await send('hybrid.charge', data, { 'IDEMPOTENCY-KEY': key })).toEqual(first);
      expect(count(key)).toBe(1);
      expect(await failure(send('hybrid.charge', { key: 'none' }))).toMatchObject({
        code: 'IDEMPOTENCY_KEY_MISSING',
      });
    });

    it('covers its event handlers; events name the context rpc and the pattern', async () => {
      const events: IdempotencyExecutedEvent[] = [];
      const listener = (event: unknown) => events.push(event as IdempotencyExecutedEvent);
      subscribe(IdempotencyChannel.Executed, listener);
      try {
        const key = `shipped-${randomUUID()}`;
        const data = { key };
        metadata.set(data, { 'Idempotency-Key': key });
        await firstValueFrom(client.emit('hybrid.shipped', data), { defaultValue: undefined });
        await firstValueFrom(client.emit('hybrid.shipped', data), { defaultValue: undefined });
        await eventually('the event to run', async () => events.length === 1);
        expect(events[0]).toMatchObject({
          context: 'rpc',
          target: 'hybrid.shipped',
          record: 'stored',
        });
        expect(count(key)).toBe(1);
      } finally {
        unsubscribe(IdempotencyChannel.Executed, listener);
      }
    });

    it('scopes an object pattern by its canonical JSON, whatever the order of its keys', async () => {
      const events: IdempotencyExecutedEvent[] = [];
      const listener = (event: unknown) => events.push(event as IdempotencyExecutedEvent);
      subscribe(IdempotencyChannel.Executed, listener);
      try {
        const key = `sum-${randomUUID()}`;
        const meta = { 'Idempotency-Key': key };
        const first = await send({ cmd: 'sum', version: 1 }, { key }, meta);
        expect(await send({ version: 1, cmd: 'sum' }, { key }, meta)).toEqual(first);
        expect(count(key)).toBe(1);
        expect(events[0].target).toBe('{"cmd":"sum","version":1}');
      } finally {
        unsubscribe(IdempotencyChannel.Executed, listener);
      }
    });

    it('stores an HttpException below 500 and throws it again (Nest answers it as an internal error)', async () => {
      const key = `declined-${randomUUID()}`;
      const meta = { 'Idempotency-Key': key };
      const first = await failure(send('hybrid.declined', { key }, meta));
      expect(first).toMatchObject({ status: 'error' });
      expect(await failure(send('hybrid.declined', { key }, meta))).toEqual(first);
      expect(count(key)).toBe(1);
    });
  });

  describe('options', () => {
    it('key: a function of the context', async () => {
      const id = `fn-${randomUUID()}`;
      const first = await send('by-function', { id });
      expect(await send('by-function', { id })).toEqual(first);
      expect(count(id)).toBe(1);
    });

    it("key: 'fingerprint' makes one run per pattern and data", async () => {
      const key = `fp-${randomUUID()}`;
      const first = await send('by-fingerprint', { key });
      expect(await send('by-fingerprint', { key })).toEqual(first);
      expect(await send('by-fingerprint', { key, amount: 1 })).not.toEqual(first);
      expect(count(key)).toBe(2);
    });

    it('a scope function keeps one key apart per tenant', async () => {
      const key = `tenant-${randomUUID()}`;
      const meta = { 'Idempotency-Key': key };
      const a = await send<{ tenant: string }>('tenant-scoped', { key, tenant: 'a' }, meta);
      const b = await send<{ tenant: string }>('tenant-scoped', { key, tenant: 'b' }, meta);
      expect([a.tenant, b.tenant]).toEqual(['a', 'b']);
      expect(await send('tenant-scoped', { key, tenant: 'a' }, meta)).toEqual(a);
      expect([count(`${key}:a`), count(`${key}:b`)]).toEqual([1, 1]);
    });

    it("scope: 'user' with a principal keeps one key apart per principal", async () => {
      const key = `user-${randomUUID()}`;
      const ann = await send('by-principal', { key }, { 'Idempotency-Key': key, 'x-user': 'ann' });
      const bob = await send('by-principal', { key }, { 'Idempotency-Key': key, 'x-user': 'bob' });
      expect(bob).not.toEqual(ann);
      expect(
        await send('by-principal', { key }, { 'Idempotency-Key': key, 'x-user': 'ann' }),
      ).toEqual(ann);
      expect([count(`${key}:ann`), count(`${key}:bob`)]).toEqual([1, 1]);
    });

    it('required: false runs a message without a key unprotected', async () => {
      const key = `optional-${randomUUID()}`;
      await send('optional', { key });
      await send('optional', { key });
      expect(count(key)).toBe(2);
    });
  });

  it('fails the start naming the controller, the message handler and the option', async () => {
    @Controller()
    @Idempotent({ ttl: 'forever' })
    class BrokenConsumer {
      @EventPattern('broken.event')
      handle(@Payload() _data: unknown) {}
    }
    const moduleRef = await Test.createTestingModule({
      imports: [IdempotencyModule.forRoot()],
      controllers: [BrokenConsumer],
    }).compile();
    const broken = moduleRef.createNestApplication({ logger: false });
    await expect(broken.init()).rejects.toThrow(
      '@Idempotent() on the class BrokenConsumer, which covers BrokenConsumer.handle: option "ttl"',
    );
    await broken.close();
  });
});
