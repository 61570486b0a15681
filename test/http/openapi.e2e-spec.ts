import {
  Body,
  Controller,
  Delete,
  Get,
  HttpCode,
  Param,
  Patch,
  Post,
  Put,
  type Type,
} from '@nestjs/common';
import { jest } from '@jest/globals';
import { Test } from '@nestjs/testing';
import {
  ApiConflictResponse,
  ApiCreatedResponse,
  ApiProperty,
  DocumentBuilder,
  SwaggerModule,
} from '@nestjs/swagger';
import type { ModulesContainer } from '@nestjs/core';
import {
  Idempotent,
  IdempotencyErrorCode,
  IdempotencyModule,
  type IdempotencyModuleOptions,
} from 'nestjs-idempotency';
import { documentIdempotentRoutes } from '../../libs/idempotency/src/contexts/http/idempotency.swagger';

@Controller('carts')
@Idempotent()
class CartsController {
  @Post()
  create(@Body() body: unknown) {
    return body;
  }

  @Patch(':id')
  update(@Param('id') id: string) {
    return { id };
  }

  @Put(':id')
  replace(@Param('id') id: string) {
    return { id };
  }

  @Get()
  list() {
    return [];
  }
}

@Controller('transfers')
class TransfersController {
  @Put(':id')
  @Idempotent({ headerName: 'X-Request-Key', required: false, mismatchStatus: 409 })
  put(@Param('id') id: string) {
    return { id };
  }

  @Delete(':id')
  @Idempotent({ key: 'fingerprint' })
  remove(@Param('id') id: string) {
    return { id };
  }

  @Post()
  unprotected() {
    return {};
  }
}

type Operation = {
  parameters?: { name: string; in: string; required?: boolean }[];
  responses: Record<string, { description: string; content?: Record<string, unknown> }>;
};

/**
 * The OpenAPI document of `controllers`, with the IdempotencyModule (given these options) or, with
 * `null`, without it: the document @nestjs/swagger makes by itself.
 */
async function documentOf(controllers: Type[], options: IdempotencyModuleOptions | null = {}) {
  const moduleRef = await Test.createTestingModule({
    imports: options ? [IdempotencyModule.forRoot(options)] : [],
    controllers,
  }).compile();
  const app = moduleRef.createNestApplication({ logger: false });
  await app.init();
  const doc = SwaggerModule.createDocument(app, new DocumentBuilder().build());
  await app.close();
  const op = (path: string, verb: string) =>
    (doc.paths[path] as Record<string, Operation>)[verb] as Operation;
  return Object.assign(op, { doc });
}

const document = () => documentOf([CartsController, TransfersController]);

const header = (op: Operation, name: string) =>
  op.parameters?.find((p) => p.in === 'header' && p.name === name);

describe('OpenAPI document of @Idempotent() routes (with @nestjs/swagger installed)', () => {
  it('documents the required header and the 400, 409, 422 and 503 problems on covered routes', async () => {
    const op = await document();
    for (const [path, verb] of [
      ['/carts', 'post'],
      ['/carts/{id}', 'patch'],
    ]) {
      const operation = op(path, verb);
      expect(header(operation, 'Idempotency-Key')).toMatchObject({ required: true });
      expect(Object.keys(operation.responses)).toEqual(
        expect.arrayContaining(['400', '409', '422', '503']),
      );
      expect(Object.keys(operation.responses['409'].content ?? {})).toEqual([
        'application/problem+json',
      ]);
    }
  });

  it('leaves alone the routes it does not cover: GET, a class-level PUT, undecorated handlers', async () => {
    const op = await document();
    for (const [path, verb] of [
      ['/carts', 'get'],
      ['/carts/{id}', 'put'],
      ['/transfers', 'post'],
    ]) {
      expect(header(op(path, verb), 'Idempotency-Key')).toBeUndefined();
      expect(op(path, verb).responses['409']).toBeUndefined();
    }
  });

  it('follows the route options: header name, optional key, mismatch status, keys without a header', async () => {
    const op = await document();
    const put = op('/transfers/{id}', 'put');
    expect(header(put, 'X-Request-Key')).toMatchObject({ required: false });
    expect(put.responses['409'].description).toMatch(/different payload/);
    expect(put.responses['422']).toBeUndefined();
    const remove = op('/transfers/{id}', 'delete');
    expect(remove.parameters?.some((p) => p.in === 'header')).toBeFalsy();
    expect(remove.responses['400']).toBeUndefined();
    expect(remove.responses['409']).toBeDefined();
  });

  it('documents a route once when several applications are created', async () => {
    await document();
    const op = await document();
    const headers = op('/carts', 'post').parameters?.filter((p) => p.name === 'Idempotency-Key');
    expect(headers).toHaveLength(1);
  });
});

class ReceiptDto {
  @ApiProperty()
  id!: string;
}

/** A new controller class each time: documenting a route changes its handler's metadata. */
const receipts = () => {
  @Controller('receipts')
  @Idempotent()
  class ReceiptsController {
    @Post()
    create() {
      return { id: 'r-1' };
    }

    @Post('confirmations')
    @HttpCode(200)
    confirm() {
      return { id: 'r-1' };
    }

    @Post('issued')
    @ApiCreatedResponse({ type: ReceiptDto, description: 'Issued; `Location` names it.' })
    issue(): ReceiptDto {
      return { id: 'r-1' };
    }

    @Post('disputes')
    @ApiConflictResponse({ description: 'The receipt is disputed already.' })
    dispute() {
      return {};
    }

    @Patch(':id')
    update(@Param('id') id: string) {
      return { id };
    }

    @Delete(':id')
    @Idempotent({ key: 'fingerprint' })
    remove(@Param('id') id: string) {
      return { id };
    }
  }
  return ReceiptsController;
};

/** As `SwaggerModule.loadPluginMetadata()` leaves a controller the CLI plugin (`readonly`) read. */
const withPluginMetadata = () => {
  @Controller('invoices')
  @Idempotent()
  class InvoicesController {
    static _OPENAPI_METADATA_FACTORY() {
      return {
        create: { summary: 'Issues an invoice.', type: ReceiptDto },
        approve: { type: ReceiptDto, status: 200 },
      };
    }

    @Post()
    create(): ReceiptDto {
      return { id: 'i-1' };
    }

    @Post('approvals')
    @HttpCode(200)
    approve(): ReceiptDto {
      return { id: 'i-1' };
    }
  }
  return InvoicesController;
};

const PROBLEM_STATUSES = ['400', '409', '422', '503'];
const successes = (op: Operation) =>
  Object.fromEntries(
    Object.entries(op.responses).filter(([status]) => !PROBLEM_STATUSES.includes(status)),
  );
type Problem = { description: string; content: Record<string, { schema: ProblemSchema }> };
type ProblemSchema = { properties: { code: { enum: string[] } } };
const codes = (response: unknown) =>
  (response as Problem).content['application/problem+json'].schema.properties.code.enum;

describe('the success responses of @Idempotent() routes', () => {
  const ROUTES = [
    ['/receipts', 'post'],
    ['/receipts/confirmations', 'post'],
    ['/receipts/issued', 'post'],
    ['/receipts/disputes', 'post'],
    ['/receipts/{id}', 'patch'],
    ['/receipts/{id}', 'delete'],
  ] as const;

  it('keeps the default 201 of a POST, and the 200 of a POST with @HttpCode(200)', async () => {
    const op = await documentOf([receipts()]);
    expect(Object.keys(op('/receipts', 'post').responses)).toEqual([
      '201',
      '400',
      '409',
      '422',
      '503',
    ]);
    expect(op('/receipts', 'post').responses['201']).toEqual({ description: '' });
    expect(successes(op('/receipts/confirmations', 'post'))).toEqual({
      '200': { description: '' },
    });
    expect(successes(op('/receipts/{id}', 'patch'))).toEqual({ '200': { description: '' } });
    expect(successes(op('/receipts/{id}', 'delete'))).toEqual({ '200': { description: '' } });
  });

  it('keeps a declared @ApiCreatedResponse as declared, and adds none beside declared responses', async () => {
    const op = await documentOf([receipts()]);
    expect(successes(op('/receipts/issued', 'post'))).toEqual({
      '201': {
        description: 'Issued; `Location` names it.',
        content: { 'application/json': { schema: { $ref: '#/components/schemas/ReceiptDto' } } },
      },
    });
    expect(op.doc.components?.schemas?.ReceiptDto).toBeDefined();
    // Swagger itself documents no default success beside a declared (error) response.
    expect(successes(op('/receipts/disputes', 'post'))).toEqual({});
  });

  it('documents the same success responses as @nestjs/swagger does without the module', async () => {
    const [ours, reference] = await Promise.all([
      documentOf([receipts(), withPluginMetadata()]),
      documentOf([receipts(), withPluginMetadata()], null),
    ]);
    for (const [path, verb] of [
      ...ROUTES,
      ['/invoices', 'post'],
      ['/invoices/approvals', 'post'],
    ]) {
      expect(successes(ours(path, verb))).toEqual(successes(reference(path, verb)));
    }
    expect(successes(reference('/receipts', 'post'))).toEqual({ '201': { description: '' } });
  });

  it("keeps the CLI plugin's response, with the schema of the return type", async () => {
    const op = await documentOf([withPluginMetadata()]);
    const ref = { 'application/json': { schema: { $ref: '#/components/schemas/ReceiptDto' } } };
    expect(successes(op('/invoices', 'post'))).toEqual({
      '201': { description: '', content: ref },
    });
    expect(successes(op('/invoices/approvals', 'post'))).toEqual({
      '200': { description: '', content: ref },
    });
  });
});

describe('the 409 response of a route answering a key reuse with 409 (mismatchStatus: 409)', () => {
  const CONFLICTS = [
    IdempotencyErrorCode.RequestInProgress,
    IdempotencyErrorCode.ResponseNotReplayable,
    IdempotencyErrorCode.KeyReused,
  ];

  it('lists the in-progress, not-replayable and key-reused codes in one 409 (route option)', async () => {
    const op = await document();
    const conflict = op('/transfers/{id}', 'put').responses['409'];
    expect(codes(conflict)).toEqual(CONFLICTS);
    expect(conflict.description).toMatch(/still being processed/);
    expect(conflict.description).toMatch(/different payload/);
  });

  it("lists them all with the module option too, beside the route's own 409 description", async () => {
    const op = await documentOf([receipts()], { mismatchStatus: 409 });
    for (const [path, verb] of [
      ['/receipts', 'post'],
      ['/receipts/disputes', 'post'],
      ['/receipts/{id}', 'delete'],
    ]) {
      const response = op(path, verb).responses;
      expect(codes(response['409'])).toEqual(CONFLICTS);
      expect(response['409'].description).toMatch(/still being processed[^]*different payload/);
      expect(response['422']).toBeUndefined();
    }
    expect(op('/receipts/disputes', 'post').responses['409'].description).toMatch(
      /^The receipt is disputed already\./,
    );
    // Without the option, the 409 and the 422 keep their own codes.
    const defaults = await documentOf([receipts()]);
    expect(codes(defaults('/receipts', 'post').responses['409'])).toEqual(CONFLICTS.slice(0, 2));
    expect(codes(defaults('/receipts', 'post').responses['422'])).toEqual([
      IdempotencyErrorCode.KeyReused,
    ]);
  });
});

const fresh = () => {
  @Controller('fresh')
  @Idempotent()
  class FreshController {
    @Post()
    create() {
      return {};
    }
  }
  return new Map([
    ['module', { controllers: new Map([['controller', { metatype: FreshController }]]) }],
  ]) as unknown as ModulesContainer;
};

describe('the OpenAPI hook', () => {
  it('counts the operations it documented', async () => {
    await expect(documentIdempotentRoutes(fresh(), {})).resolves.toBe(1);
  });

  it('documents nothing and does not fail without a usable @nestjs/swagger', async () => {
    jest.resetModules();
    jest.unstable_mockModule('@nestjs/swagger', () => ({}));
    const isolated = await import('../../libs/idempotency/src/contexts/http/idempotency.swagger');
    await expect(isolated.documentIdempotentRoutes(fresh(), {})).resolves.toBe(0);
  });
});
