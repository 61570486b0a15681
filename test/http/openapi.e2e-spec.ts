import { Body, Controller, Delete, Get, Param, Patch, Post, Put } from '@nestjs/common';
import { jest } from '@jest/globals';
import { Test } from '@nestjs/testing';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import type { ModulesContainer } from '@nestjs/core';
import { Idempotent, IdempotencyModule } from 'nestjs-idempotency';
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

async function document() {
  const moduleRef = await Test.createTestingModule({
    imports: [IdempotencyModule.forRoot()],
    controllers: [CartsController, TransfersController],
  }).compile();
  const app = moduleRef.createNestApplication({ logger: false });
  await app.init();
  const doc = SwaggerModule.createDocument(app, new DocumentBuilder().build());
  await app.close();
  return (path: string, verb: string) =>
    (doc.paths[path] as Record<string, Operation>)[verb] as Operation;
}

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
