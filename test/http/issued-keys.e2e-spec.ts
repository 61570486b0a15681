import {
  Body,
  Controller,
  type ExecutionContext,
  type INestApplication,
  Post,
} from '@nestjs/common';
import { jest } from '@jest/globals';
import { randomBytes, randomUUID } from 'node:crypto';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import { Test } from '@nestjs/testing';
import {
  IdempotencyErrorCode,
  IdempotencyKeyExpiredException,
  IdempotencyKeyIssuer,
  IdempotencyKeyNotIssuedException,
  type IdempotencyIssuedKeySecret,
  IdempotencyModule,
  type IdempotencyModuleOptions,
  IdempotencyService,
  Idempotent,
  MemoryIdempotencyStore,
} from 'nestjs-idempotency';
import request from 'supertest';
import { createApp, PLATFORMS, type Platform } from './platforms';

const OLD: IdempotencyIssuedKeySecret = { id: 'k2026-01', secret: randomBytes(32) };
const NEW: IdempotencyIssuedKeySecret = { id: 'k2026-02', secret: randomBytes(32).toString('hex') };
const T0 = Date.parse('2026-03-01T12:00:00.000Z');
const TTL_MS = 10 * 60_000;

let clock = T0;
let runs = 0;

/** What the sample's `POST /idempotency-keys` does. */
@Controller('idempotency-keys')
class IdempotencyKeysController {
  constructor(private readonly issuer: IdempotencyKeyIssuer) {}

  @Post()
  issue() {
    return this.issuer.issue();
  }
}

const formKey = (context: ExecutionContext) =>
  context.switchToHttp().getRequest<{ body?: { idempotencyKey?: string } }>().body?.idempotencyKey;

@Controller()
class OrdersController {
  @Post('orders')
  @Idempotent({ key: 'issued' })
  create(@Body() body: unknown) {
    return { run: ++runs, body };
  }

  @Post('checkout')
  @Idempotent({ key: { issued: 'checkout' } })
  checkout() {
    return { run: ++runs };
  }

  @Post('forms')
  @Idempotent({ key: { issued: 'forms', from: formKey } })
  form(@Body() body: { item?: string }) {
    return { run: ++runs, item: body.item };
  }

  @Post('optional')
  @Idempotent({ key: 'issued', required: false })
  optional() {
    return { run: ++runs };
  }
}

const expectProblem = (res: request.Response, code: string) => {
  expect(res.status).toBe(400);
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(res.body).toMatchObject({ status: 400, code });
  expect(res.headers['idempotent-replayed']).toBeUndefined();
};

/** The key with its `index`th `.`-separated part (2 payload, 3 signature) changed in a byte. */
const alter = (key: string, index: number): string => {
  const parts = key.split('.');
  const bytes = Buffer.from(parts[index], 'base64url');
  bytes[0] ^= 1;
  parts[index] = bytes.toString('base64url');
  return parts.join('.');
};

describe.each(PLATFORMS)('Server-issued idempotency keys (%s)', (platform) => {
  const apps: INestApplication[] = [];
  let store: MemoryIdempotencyStore;
  let claims: ReturnType<typeof jest.spyOn>;

  /** Starts an app with these issued-key secrets (first signs) on the shared store. */
  const start = async (
    secrets: readonly IdempotencyIssuedKeySecret[] = [OLD],
    options: Omit<IdempotencyModuleOptions, 'store' | 'issuedKeys'> = {},
  ) => {
    const t = await createApp(platform as Platform, {
      imports: [
        IdempotencyModule.forRoot({
          ...options,
          store,
          issuedKeys: { secrets, ttl: TTL_MS, now: () => clock },
        }),
      ],
      controllers: [IdempotencyKeysController, OrdersController],
    });
    apps.push(t.app);
    return { ...t, issuer: t.app.get(IdempotencyKeyIssuer) };
  };

  beforeEach(() => {
    clock = T0;
    runs = 0;
    store = new MemoryIdempotencyStore({ sweepIntervalMs: 0 });
    claims = jest.spyOn(store, 'claim');
  });
  afterEach(async () => {
    await Promise.all(apps.splice(0).map((app) => app.close()));
  });

  const order = (url: string, key: string) =>
    request(url).post('/orders').set('Idempotency-Key', key).send({ item: 'book' });

  it('issues a key that runs the handler once and replays it after', async () => {
    const { url } = await start();
    const issued = await request(url).post('/idempotency-keys').expect(201);
    expect(issued.body).toEqual({
      key: expect.stringMatching(/^ik1\.k2026-01\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/),
      expiresAt: new Date(T0 + TTL_MS).toISOString(),
    });
    const { key } = issued.body as { key: string };

    const first = await order(url, key).expect(201);
    expect(first.body).toEqual({ run: 1, body: { item: 'book' } });
    expect(first.headers['idempotent-replayed']).toBeUndefined();

    // The Structured Field string form is the same key.
    const again = await order(url, `"${key}"`).expect(201);
    expect(again.body).toEqual(first.body);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(runs).toBe(1);

    const other = (await request(url).post('/idempotency-keys').expect(201)).body.key as string;
    expect(other).not.toBe(key);
    expect((await order(url, other).expect(201)).body.run).toBe(2);
  });

  it.each([
    ['a client UUID', () => randomUUID(), 'not issued by this server'],
    ['a forged signature', (key: string) => alter(key, 3), 'signature'],
    ['a tampered payload', (key: string) => alter(key, 2), 'signature'],
    ['a truncated key', (key: string) => key.slice(0, -3), 'malformed or truncated'],
    ['a key cut at a dot', (key: string) => key.slice(0, key.lastIndexOf('.')), 'not issued'],
    ['an unknown key id', (key: string) => key.replace('.k2026-01.', '.k1999-01.'), 'key id'],
  ])(
    'refuses %s with 400 IDEMPOTENCY_KEY_NOT_ISSUED, before the store',
    async (_name, make, detail) => {
      const { url, issuer } = await start();
      const res = await order(url, make(issuer.issue().key));
      expectProblem(res, IdempotencyErrorCode.KeyNotIssued);
      expect(res.body.detail).toContain(detail);
      expect(runs).toBe(0);
      expect(claims).not.toHaveBeenCalled();
    },
  );

  it('refuses an expired key with 400 IDEMPOTENCY_KEY_EXPIRED, a retry of a used one too', async () => {
    const { url, issuer } = await start();
    const unused = issuer.issue();
    const used = issuer.issue().key;
    await order(url, used).expect(201);
    clock = unused.expiresAt.getTime() - 1;
    await order(url, used).expect(201);
    expect(runs).toBe(1);
    claims.mockClear();

    clock = unused.expiresAt.getTime();
    for (const key of [unused.key, used]) {
      const res = await order(url, key);
      expectProblem(res, IdempotencyErrorCode.KeyExpired);
      expect(res.body.detail).toContain(unused.expiresAt.toISOString());
    }
    expect(runs).toBe(1);
    expect(claims).not.toHaveBeenCalled();
  });

  it('refuses a key issued for another scope, and accepts it on its own', async () => {
    const { url, issuer } = await start();
    const checkout = issuer.issue({ scope: 'checkout' }).key;
    const plain = issuer.issue().key;
    for (const res of [
      await order(url, checkout),
      await request(url).post('/checkout').set('Idempotency-Key', plain),
    ]) {
      expectProblem(res, IdempotencyErrorCode.KeyNotIssued);
      expect(res.body.detail).toContain('issued for another operation');
    }
    expect(runs).toBe(0);
    await request(url).post('/checkout').set('Idempotency-Key', checkout).expect(201);
    expect(runs).toBe(1);
  });

  it('rotates: a key of the old secret verifies while listed, and is refused once removed', async () => {
    const before = await start([OLD]);
    const old = before.issuer.issue().key;

    const during = await start([NEW, OLD]);
    expect((await order(during.url, old).expect(201)).body.run).toBe(1);
    const fresh = (await request(during.url).post('/idempotency-keys').expect(201)).body
      .key as string;
    expect(fresh.startsWith('ik1.k2026-02.')).toBe(true);
    await order(during.url, fresh).expect(201);

    const after = await start([NEW]);
    // On the shared store the new secret's key still replays...
    const replay = await order(after.url, fresh).expect(201);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    // ...and the retired secret's key is refused, even though its record exists.
    const refused = await order(after.url, old);
    expectProblem(refused, IdempotencyErrorCode.KeyNotIssued);
    expect(runs).toBe(2);
  });

  it('keeps the rules of a missing key: 400 when required, unprotected when not', async () => {
    const { url, issuer } = await start();
    expectProblem(await request(url).post('/orders').send({}), IdempotencyErrorCode.KeyMissing);
    expect(runs).toBe(0);
    await request(url).post('/optional').expect(201);
    await request(url).post('/optional').expect(201);
    expect(runs).toBe(2);
    // Given, the key must still be an issued one.
    expectProblem(
      await request(url).post('/optional').set('Idempotency-Key', randomUUID()),
      IdempotencyErrorCode.KeyNotIssued,
    );
    const key = issuer.issue().key;
    await request(url).post('/optional').set('Idempotency-Key', key).expect(201);
    const again = await request(url).post('/optional').set('Idempotency-Key', key).expect(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(runs).toBe(3);
  });

  it('reads an issued key from a form field with key: { issued, from }', async () => {
    const { url, issuer } = await start();
    const key = issuer.issue({ scope: 'forms' }).key;
    const submit = (idempotencyKey: string) =>
      request(url).post('/forms').type('form').send({ item: 'book', idempotencyKey });
    expect((await submit(key).expect(201)).body).toEqual({ run: 1, item: 'book' });
    expect((await submit(key).expect(201)).headers['idempotent-replayed']).toBe('true');
    expectProblem(await submit(randomUUID()), IdempotencyErrorCode.KeyNotIssued);
    expectProblem(
      await submit(issuer.issue({ scope: 'checkout' }).key),
      IdempotencyErrorCode.KeyNotIssued,
    );
    expect(runs).toBe(1);
  });

  it('refuses a form field that is not a string with 400 IDEMPOTENCY_KEY_INVALID, never a 500', async () => {
    const { url, issuer } = await start();
    const key = issuer.issue({ scope: 'forms' }).key;
    // What a key function reads from a parsed body is the client's: JSON gives any type, and a
    // form field sent twice is parsed as an array.
    for (const idempotencyKey of [42, [key], { length: 1 }, true]) {
      expectProblem(
        await request(url).post('/forms').send({ item: 'book', idempotencyKey }),
        IdempotencyErrorCode.KeyInvalid,
      );
    }
    expectProblem(
      await request(url)
        .post('/forms')
        .type('form')
        .send(`item=book&idempotencyKey=${key}&idempotencyKey=${key}`),
      IdempotencyErrorCode.KeyInvalid,
    );
    expect(runs).toBe(0);
    expect(claims).not.toHaveBeenCalled();
  });
});

describe.each(PLATFORMS)('Issued keys configuration (%s)', (platform) => {
  @Controller('payments')
  class PaymentsController {
    @Post()
    @Idempotent({ key: 'issued' })
    pay() {
      return {};
    }
  }

  @Controller('refunds')
  @Idempotent({ key: { issued: 'refunds' } })
  class RefundsController {
    @Post()
    refund() {
      return {};
    }
  }

  it.each([
    [
      "key: 'issued' on a handler without issuedKeys",
      {},
      PaymentsController,
      '@Idempotent() on PaymentsController.pay: option "key" accepts only issued keys, which needs the module option "issuedKeys"',
    ],
    [
      'key: { issued } on a class without issuedKeys',
      {},
      RefundsController,
      '@Idempotent() on the class RefundsController, which covers RefundsController.refund: option "key" accepts only issued keys',
    ],
    [
      "key: 'issued' as a module default without issuedKeys",
      { key: 'issued' },
      PaymentsController,
      'the module option "key" of IdempotencyModule.forRoot(): option "key" accepts only issued keys',
    ],
    [
      'a secret shorter than 32 bytes',
      { issuedKeys: { secrets: [{ id: 'k1', secret: 'too-short' }] } },
      PaymentsController,
      'option "issuedKeys.secrets[0].secret" is 9 bytes; a secret is at least 32 bytes',
    ],
    [
      'no secrets',
      { issuedKeys: { secrets: [] } },
      PaymentsController,
      'option "issuedKeys.secrets" must list at least one { id, secret }',
    ],
    [
      'a bad ttl',
      { issuedKeys: { secrets: [OLD], ttl: '-1m' } },
      PaymentsController,
      'option "issuedKeys.ttl" must be a positive number of milliseconds',
    ],
  ])('fails at bootstrap on %s, naming the fix', async (_name, options, controller, message) => {
    await expect(
      createApp(platform, {
        imports: [IdempotencyModule.forRoot(options as IdempotencyModuleOptions)],
        controllers: [controller],
      }),
    ).rejects.toThrow(message);
  });
});

describe('IdempotencyService.run() with issued keys', () => {
  const moduleWith = async (options: IdempotencyModuleOptions) => {
    const moduleRef = await Test.createTestingModule({
      imports: [IdempotencyModule.forRoot(options)],
    }).compile();
    await moduleRef.init();
    return moduleRef;
  };

  it('runs for an issued key and refuses others before the store', async () => {
    const store = new MemoryIdempotencyStore({ sweepIntervalMs: 0 });
    const claims = jest.spyOn(store, 'claim');
    const moduleRef = await moduleWith({
      store,
      issuedKeys: { secrets: [OLD], ttl: TTL_MS, now: () => clock },
    });
    try {
      clock = T0;
      const service = moduleRef.get(IdempotencyService);
      const issuer = moduleRef.get(IdempotencyKeyIssuer);
      const key = issuer.issue({ scope: 'imports' }).key;
      let work = 0;
      const job = () => ++work;
      expect(await service.run(key, job, { issued: 'imports' })).toEqual({
        value: 1,
        replayed: false,
      });
      expect(await service.run(key, job, { issued: 'imports' })).toEqual({
        value: 1,
        replayed: true,
      });
      claims.mockClear();
      await expect(service.run(randomUUID(), job, { issued: 'imports' })).rejects.toBeInstanceOf(
        IdempotencyKeyNotIssuedException,
      );
      await expect(service.run(key, job, { issued: 'exports' })).rejects.toMatchObject({
        code: IdempotencyErrorCode.KeyNotIssued,
      });
      clock = T0 + TTL_MS;
      await expect(service.run(key, job, { issued: 'imports' })).rejects.toBeInstanceOf(
        IdempotencyKeyExpiredException,
      );
      expect(claims).not.toHaveBeenCalled();
      expect(work).toBe(1);
    } finally {
      clock = T0;
      await moduleRef.close();
    }
  });

  it('says how to configure issuedKeys when run() asks for issued keys without it', async () => {
    const moduleRef = await moduleWith({});
    try {
      await expect(
        moduleRef.get(IdempotencyService).run('k', () => 1, { issued: 'imports' }),
      ).rejects.toThrow('IdempotencyKeyIssuer.verify() needs the module option "issuedKeys"');
    } finally {
      await moduleRef.close();
    }
  });
});

describe('OpenAPI document of routes with issued keys', () => {
  it('documents the header as an issued key and the NOT_ISSUED and EXPIRED problems', async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [IdempotencyModule.forRoot({ issuedKeys: { secrets: [OLD] } })],
      controllers: [OrdersController],
    }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    await app.init();
    const doc = SwaggerModule.createDocument(app, new DocumentBuilder().build());
    await app.close();
    type Operation = {
      parameters?: { name: string; in: string; description?: string }[];
      responses: Record<string, { content?: Record<string, { schema: unknown }> }>;
    };
    const op = (path: string) => (doc.paths[path] as Record<string, Operation>).post;
    const codes = (operation: Operation) =>
      (
        operation.responses['400'].content?.['application/problem+json'].schema as {
          properties: { code: { enum: string[] } };
        }
      ).properties.code.enum;

    const orders = op('/orders');
    expect(orders.parameters?.find((p) => p.name === 'Idempotency-Key')?.description).toMatch(
      /issued/,
    );
    expect(codes(orders)).toEqual(
      expect.arrayContaining([
        IdempotencyErrorCode.KeyMissing,
        IdempotencyErrorCode.KeyInvalid,
        IdempotencyErrorCode.KeyNotIssued,
        IdempotencyErrorCode.KeyExpired,
      ]),
    );
    // Read from a form field: no header, the issued-key problems still.
    const forms = op('/forms');
    expect(forms.parameters?.some((p) => p.in === 'header')).toBeFalsy();
    expect(codes(forms)).toEqual([
      IdempotencyErrorCode.KeyNotIssued,
      IdempotencyErrorCode.KeyExpired,
    ]);
  });
});
