import { fieldFingerprint, requestFingerprint, storageKey } from './idempotency.hashing';

describe('storageKey', () => {
  it('is a hex SHA-256', () => {
    expect(storageKey(['a'])).toMatch(/^[0-9a-f]{64}$/);
  });

  it('length-prefixes parts so different splits never collide', () => {
    expect(storageKey(['ab', 'c'])).not.toBe(storageKey(['a', 'bc']));
    expect(storageKey(['a:b'])).not.toBe(storageKey(['a', 'b']));
    expect(storageKey(['x', ''])).not.toBe(storageKey(['x']));
  });

  it('is stable', () => {
    expect(storageKey(['p', 'k'])).toBe(storageKey(['p', 'k']));
  });

  it('keeps the digest of earlier versions, so records stored before an upgrade still match', () => {
    expect(
      storageKey(['nestjs-idempotency:v1', 'endpoint', 'POST', '/orders', 'anonymous', 'clé-42']),
    ).toBe('179aeaa66d553b39c02fc3a633c2cb5d7d1e39b6c907e57b24eecab228f4af26');
  });
});

describe('requestFingerprint', () => {
  const base = { method: 'POST', route: '/orders', body: { a: 1, b: [1, 2] }, query: {} };

  it('keeps the digest of earlier versions for an empty query, plain or without a prototype', () => {
    const digest = 'd273923067959e468a8bbeae967bf7212e4d1350ce3ed3ffa71d4acc337f60d5';
    expect(requestFingerprint(base)).toBe(digest);
    expect(requestFingerprint({ ...base, query: Object.create(null) as object })).toBe(digest);
  });

  it('ignores the order of object keys', () => {
    expect(requestFingerprint(base)).toBe(
      requestFingerprint({ ...base, body: { b: [1, 2], a: 1 } }),
    );
  });

  it.each([
    ['the body', { body: { a: 2, b: [1, 2] } }],
    ['array order', { body: { a: 1, b: [2, 1] } }],
    ['the query', { query: { page: '2' } }],
    ['the verb', { method: 'PATCH' }],
    ['the route', { route: '/payments' }],
    ['a string body of the same JSON', { body: '{"a":1,"b":[1,2]}' }],
    ['the path parameters', { params: { id: 'pay_2' } }],
  ])('changes with %s', (_name, change) => {
    expect(requestFingerprint({ ...base, ...change })).not.toBe(requestFingerprint(base));
  });

  it('tells two resources of one route template apart by their parameters', () => {
    const capture = { ...base, route: '/payments/:id/capture' };
    expect(requestFingerprint({ ...capture, params: { id: 'pay_1' } })).not.toBe(
      requestFingerprint({ ...capture, params: { id: 'pay_2' } }),
    );
    expect(requestFingerprint({ ...capture, params: { id: 'pay_1' } })).toBe(
      requestFingerprint({ ...capture, params: { id: 'pay_1' } }),
    );
  });

  it('keeps the fingerprint of earlier versions for a route without parameters', () => {
    expect(requestFingerprint({ ...base, params: {} })).toBe(requestFingerprint(base));
    expect(requestFingerprint(base)).toBe(
      'd273923067959e468a8bbeae967bf7212e4d1350ce3ed3ffa71d4acc337f60d5',
    );
  });

  it('treats the verb case-insensitively', () => {
    expect(requestFingerprint({ ...base, method: 'post' })).toBe(requestFingerprint(base));
  });

  it('hashes raw bodies by their bytes', () => {
    const raw = { ...base, body: Buffer.from('abc') };
    expect(requestFingerprint(raw)).toBe(requestFingerprint({ ...raw, body: Buffer.from('abc') }));
    expect(requestFingerprint(raw)).not.toBe(
      requestFingerprint({ ...raw, body: Buffer.from('abd') }),
    );
  });
});

describe('fieldFingerprint', () => {
  const args = { sku: 'a', input: { quantity: 1, notes: ['x', 'y'] } };

  it('ignores the order of object keys, and takes null-prototype objects (graphql-js arguments)', () => {
    const bare = Object.assign(Object.create(null) as object, {
      input: { notes: ['x', 'y'], quantity: 1 },
      sku: 'a',
    });
    expect(fieldFingerprint('Mutation.placeOrder', bare)).toBe(
      fieldFingerprint('Mutation.placeOrder', args),
    );
  });

  it.each([
    ['an argument', 'Mutation.placeOrder', { ...args, sku: 'b' }],
    [
      'a nested value',
      'Mutation.placeOrder',
      { ...args, input: { quantity: 2, notes: ['x', 'y'] } },
    ],
    ['the field', 'Mutation.cancelOrder', args],
  ])('changes with %s', (_what, field, other) => {
    expect(fieldFingerprint(field, other)).not.toBe(fieldFingerprint('Mutation.placeOrder', args));
  });

  it('never equals the fingerprint of an HTTP request with the same body', () => {
    expect(fieldFingerprint('Mutation.placeOrder', args)).not.toBe(
      requestFingerprint({
        method: 'POST',
        route: 'Mutation.placeOrder',
        body: args,
        query: undefined,
      }),
    );
  });
});
