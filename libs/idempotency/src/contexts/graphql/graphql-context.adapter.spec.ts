import { BadRequestException, type ExecutionContext, HttpException } from '@nestjs/common';
import { ExecutionContextHost } from '@nestjs/core/helpers/execution-context-host.js';
import { lastValueFrom } from 'rxjs';
import { resolveOptions } from '../../engine/resolved-options';
import { IdempotencyKeyIssuer } from '../../idempotency-key-issuer';
import type { IdempotentOptions } from '../../idempotency.options';
import type { IdempotentHandler } from '../idempotent-handlers';
import { GraphqlContextAdapter } from './graphql-context.adapter';
import { IdempotencyGraphQLError } from './idempotency-graphql.error';

class OrdersResolver {
  placeOrder() {
    return undefined;
  }
}

const adapter = new GraphqlContextAdapter(new IdempotencyKeyIssuer({}));

const handler = (options: IdempotentOptions = {}): IdempotentHandler => ({
  options: resolveOptions(options),
  controller: OrdersResolver,
  handler: OrdersResolver.prototype.placeOrder as IdempotentHandler['handler'],
  name: 'OrdersResolver.placeOrder',
});

/** A resolver call as @nestjs/graphql makes it: root, arguments, context, info. */
function call(
  args: Record<string, unknown>,
  {
    headers = {},
    operation = 'mutation',
    alias = 'placeOrder',
    nested = false,
    res,
  }: {
    headers?: Record<string, string>;
    operation?: string;
    alias?: string;
    nested?: boolean;
    res?: { setHeader(name: string, value: string): void; headersSent: boolean };
  } = {},
): ExecutionContext {
  const info = {
    fieldName: 'placeOrder',
    parentType: { name: 'Mutation' },
    path: { key: alias, prev: nested ? { key: 'order', prev: undefined } : undefined },
    operation: { operation },
  };
  const context = new ExecutionContextHost([undefined, args, { req: { headers, res } }, info]);
  context.setType('graphql');
  return context;
}

const storageKey = (context: ExecutionContext, options?: IdempotentOptions) => {
  const described = adapter.describe(context, handler(options));
  if (!described || !('key' in described)) {
    throw new Error(`not described with a key: ${JSON.stringify(described)}`);
  }
  return described;
};

describe('GraphqlContextAdapter', () => {
  describe('describe', () => {
    it('covers root mutation fields only', () => {
      expect(adapter.describe(call({}, { operation: 'query' }), handler())).toBeUndefined();
      expect(adapter.describe(call({}, { operation: 'subscription' }), handler())).toBeUndefined();
      expect(adapter.describe(call({}, { nested: true }), handler())).toBeUndefined();
      expect(adapter.describe(call({}), handler())).toEqual({
        target: 'Mutation.placeOrder',
        rejection: { code: 'IDEMPOTENCY_KEY_MISSING' },
      });
    });

    it('describes one resolver call once, however many times the interceptor runs on it', () => {
      const context = call({ idempotencyKey: 'k' });
      expect(adapter.describe(context, handler())).toMatchObject({ key: expect.any(String) });
      expect(adapter.describe(context, handler())).toBeUndefined();
    });

    it('scopes a header key by the response key (alias), an argument key by the field alone', () => {
      const fromArgument = storageKey(call({ sku: 'a', idempotencyKey: 'k' }));
      const fromHeader = storageKey(call({ sku: 'a' }, { headers: { 'idempotency-key': 'k' } }));
      expect(fromHeader.fingerprint).toBe(fromArgument.fingerprint);
      expect(fromHeader.key).not.toBe(fromArgument.key);
      const aliased = storageKey(
        call({ sku: 'a' }, { headers: { 'idempotency-key': 'k' }, alias: 'second' }),
      );
      expect(aliased.key).not.toBe(fromHeader.key);
      const aliasedArgument = storageKey(call({ sku: 'a', idempotencyKey: 'k' }, { alias: 'x' }));
      expect(aliasedArgument.key).toBe(fromArgument.key);
    });

    it("finds the request on Mercurius's reply when the context has no req", () => {
      const context = call({ sku: 'a' });
      const gql = context.getArgByIndex(2) as Record<string, unknown>;
      delete gql.req;
      gql.reply = { request: { headers: { 'idempotency-key': 'k' } }, header: () => undefined };
      const fromReply = storageKey(context);
      expect(fromReply.key).toBe(
        storageKey(call({ sku: 'a' }, { headers: { 'idempotency-key': 'k' } })).key,
      );
    });

    it('leaves key.path out of the fingerprint, and keeps the other arguments in', () => {
      const options: IdempotentOptions = { key: { path: 'input.requestId' } };
      const a = storageKey(call({ input: { requestId: 'r1', amount: 5 } }), options);
      const b = storageKey(call({ input: { requestId: 'r2', amount: 5 } }), options);
      const c = storageKey(call({ input: { requestId: 'r1', amount: 6 } }), options);
      expect(a.fingerprint).toBe(b.fingerprint);
      expect(c.fingerprint).not.toBe(a.fingerprint);
    });

    it('puts the principal of req.user in the scope', () => {
      const as = (user?: { id: string }) => {
        const context = call({ idempotencyKey: 'k' });
        (context.getArgByIndex(2) as { req: { user?: unknown } }).req.user = user;
        return storageKey(context).key;
      };
      expect(as({ id: 'alice' })).not.toBe(as({ id: 'bob' }));
      expect(as({ id: 'alice' })).toBe(as({ id: 'alice' }));
      expect(as(undefined)).not.toBe(as({ id: 'alice' }));
    });

    it('runs unprotected without a key when the key is not required', () => {
      expect(adapter.describe(call({}), handler({ required: false }))).toBeUndefined();
    });

    it('derives the key from the arguments with key: fingerprint', () => {
      const a = storageKey(call({ sku: 'a' }), { key: 'fingerprint' });
      const b = storageKey(call({ sku: 'a' }), { key: 'fingerprint' });
      const c = storageKey(call({ sku: 'b' }), { key: 'fingerprint' });
      expect(a.key).toBe(b.key);
      expect(c.key).not.toBe(a.key);
    });
  });

  describe('captureError', () => {
    it('takes an HttpException for its status', () => {
      expect(adapter.captureError(new BadRequestException('no')).status).toBe(400);
    });

    it('takes an error with extensions.code for a deliberate answer: 400, its http.status, or 500 for INTERNAL_SERVER_ERROR', () => {
      const withExtensions = (extensions: Record<string, unknown>) =>
        Object.assign(new Error('declined'), { extensions });
      expect(adapter.captureError(withExtensions({ code: 'CARD_DECLINED' })).status).toBe(400);
      expect(
        adapter.captureError(withExtensions({ code: 'FORBIDDEN', http: { status: 403 } })).status,
      ).toBe(403);
      expect(adapter.captureError(withExtensions({ code: 'INTERNAL_SERVER_ERROR' })).status).toBe(
        500,
      );
    });

    it('takes any other error for a 500', () => {
      expect(adapter.captureError(new Error('boom')).status).toBe(500);
      expect(adapter.captureError(Object.assign(new Error('x'), { extensions: {} })).status).toBe(
        500,
      );
    });
  });

  describe('replay', () => {
    it('gives the stored value and sets Idempotent-Replayed on the response', async () => {
      const headers: Record<string, string> = {};
      const res = { setHeader: (n: string, v: string) => (headers[n] = v), headersSent: false };
      const value = await lastValueFrom(
        adapter.replay(call({}, { res }), {
          status: 200,
          headers: {},
          body: { id: 1 },
          error: false,
        }),
      );
      expect(value).toEqual({ id: 1 });
      expect(headers).toEqual({ 'Idempotent-Replayed': 'true' });
    });

    it('throws a stored error again as what it was', async () => {
      const { body, status } = adapter.captureError(new BadRequestException('out of stock'));
      const replayed = lastValueFrom(
        adapter.replay(call({}), { status, headers: {}, body, error: true }),
      );
      await expect(replayed).rejects.toBeInstanceOf(HttpException);
      await expect(replayed).rejects.toMatchObject({ message: 'out of stock', status: 400 });
      const graphql = adapter.captureError(
        Object.assign(new Error('declined'), { extensions: { code: 'CARD_DECLINED' } }),
      );
      await expect(
        lastValueFrom(adapter.replay(call({}), { ...graphql, headers: {}, error: true })),
      ).rejects.toMatchObject({ message: 'declined', extensions: { code: 'CARD_DECLINED' } });
      const apollo = adapter.captureError(
        Object.assign(new Error('forbidden'), {
          extensions: { code: 'FORBIDDEN', http: { status: 403, headers: new Map([['a', 'b']]) } },
        }),
      );
      await expect(
        lastValueFrom(adapter.replay(call({}), { ...apollo, headers: {}, error: true })),
      ).rejects.toMatchObject({ extensions: { code: 'FORBIDDEN', http: { status: 403 } } });
    });
  });

  describe('reject', () => {
    it('renders a refusal as an IdempotencyGraphQLError with the code, the status and retryAfterMs', () => {
      const error = adapter.reject(call({}), handler(), {
        code: 'IDEMPOTENCY_REQUEST_IN_PROGRESS',
        retryAfterMs: 250,
      });
      expect(error).toBeInstanceOf(IdempotencyGraphQLError);
      expect(error).not.toBeInstanceOf(HttpException);
      expect((error as IdempotencyGraphQLError).extensions).toEqual({
        code: 'IDEMPOTENCY_REQUEST_IN_PROGRESS',
        status: 409,
        retryAfterMs: 250,
      });
    });

    it('answers the mismatch status for a reused key', () => {
      const error = adapter.reject(call({}), handler({ mismatchStatus: 409 }), {
        code: 'IDEMPOTENCY_KEY_REUSED',
      }) as IdempotencyGraphQLError;
      expect(error.extensions).toEqual({ code: 'IDEMPOTENCY_KEY_REUSED', status: 409 });
    });
  });
});
