import {
  headerKey,
  InvalidKeyError,
  keyAtPath,
  MAX_KEY_LENGTH,
  parseIdempotencyKey,
  rawHeaderValues,
  validateIdempotencyKey,
} from './idempotency-key';

describe('parseIdempotencyKey', () => {
  it.each([
    ['abc', 'abc'],
    ['"abc"', 'abc'],
    ['  abc  ', 'abc'],
    ['\t abc \t', 'abc'],
    ['"a\\"b"', 'a"b'],
    ['"a\\\\b"', 'a\\b'],
    ['8e03978e-40d5-43e8-bc93-6894a57f9324', '8e03978e-40d5-43e8-bc93-6894a57f9324'],
    ['a b', 'a b'],
    ['a"b', 'a"b'],
  ])('reads %j as %j', (raw, key) => {
    expect(parseIdempotencyKey(raw)).toBe(key);
  });

  it.each([
    ['empty', ''],
    ['blank', '   '],
    ['an empty quoted string', '""'],
    ['a bad escape', '"a\\nb"'],
    ['a trailing backslash', '"ab\\'],
    ['an unterminated string', '"abc'],
    ['text after the closing quote', '"abc"def'],
    ['a control character', 'a\u0001b'],
    ['a non-breaking space (byte 0xA0) before it', '\u00a0abc'],
    ['a non-breaking space after it', 'abc\u00a0'],
    ['a vertical tab after it', 'abc\u000b'],
    ['a form feed before it', '\u000cabc'],
    ['a tab', 'a\tb'],
    ['DEL', 'a\u007fb'],
    ['non-ASCII', 'caf\u00e9'],
    ['non-ASCII inside quotes', '"caf\u00e9"'],
    ['too long', 'k'.repeat(MAX_KEY_LENGTH + 1)],
    ['too long once unquoted', `"${'k'.repeat(MAX_KEY_LENGTH + 1)}"`],
  ])('refuses %s', (_name, raw) => {
    expect(() => parseIdempotencyKey(raw)).toThrow(InvalidKeyError);
  });

  it('accepts exactly 255 characters, quoted or not', () => {
    const key = 'k'.repeat(MAX_KEY_LENGTH);
    expect(parseIdempotencyKey(key)).toBe(key);
    expect(parseIdempotencyKey(`"${key}"`)).toBe(key);
  });
});

describe('validateIdempotencyKey', () => {
  it.each([
    ['a number', 42],
    ['an array', ['abc']],
    ['an object with a length', { length: 3 }],
    ['a boolean', true],
  ])('refuses %s, as a key function may read one from a parsed body', (_name, value) => {
    expect(() => validateIdempotencyKey(value)).toThrow(InvalidKeyError);
  });
});

describe('rawHeaderValues', () => {
  it('returns every value of the header, whatever its case', () => {
    const raw = ['Host', 'x', 'Idempotency-Key', 'a', 'idempotency-key', 'b', 'Other', 'c'];
    expect(rawHeaderValues(raw, 'Idempotency-Key')).toEqual(['a', 'b']);
    expect(rawHeaderValues(raw, 'missing')).toEqual([]);
  });
});

describe('headerKey', () => {
  it('reads the header from the raw list (Node), from raw.rawHeaders (Fastify) or from headers', () => {
    expect(
      headerKey({ headers: {}, rawHeaders: ['idempotency-KEY', '"a"'] }, 'Idempotency-Key'),
    ).toBe('a');
    expect(
      headerKey({ headers: {}, raw: { rawHeaders: ['Idempotency-Key', 'b'] } }, 'Idempotency-Key'),
    ).toBe('b');
    expect(headerKey({ headers: { 'x-key': 'c' } }, 'X-Key')).toBe('c');
  });

  it('answers undefined when the header is absent', () => {
    expect(
      headerKey({ headers: {}, rawHeaders: ['Other', 'x'] }, 'Idempotency-Key'),
    ).toBeUndefined();
    expect(headerKey({ headers: {} }, 'Idempotency-Key')).toBeUndefined();
  });

  it('accepts a header repeated with the same key, and refuses one repeated with another', () => {
    const twice = (a: string, b: string) => ({
      headers: {},
      rawHeaders: ['Idempotency-Key', a, 'Idempotency-Key', b],
    });
    expect(headerKey(twice('k', '"k"'), 'Idempotency-Key')).toBe('k');
    expect(() => headerKey(twice('k', 'j'), 'Idempotency-Key')).toThrow(InvalidKeyError);
    expect(() =>
      headerKey({ headers: { 'idempotency-key': ['k', 'j'] } }, 'Idempotency-Key'),
    ).toThrow('sent more than once with different values');
  });
});

describe('keyAtPath', () => {
  it('reads a string, and a finite number as its decimal form', () => {
    expect(keyAtPath({ meta: { eventId: 'evt_1' } }, ['meta', 'eventId'])).toBe('evt_1');
    expect(keyAtPath({ id: 42 }, ['id'])).toBe('42');
  });

  it('answers undefined for a missing field or null on the way', () => {
    expect(keyAtPath({}, ['meta', 'eventId'])).toBeUndefined();
    expect(keyAtPath({ meta: null }, ['meta', 'eventId'])).toBeUndefined();
    expect(keyAtPath({ meta: { eventId: null } }, ['meta', 'eventId'])).toBeUndefined();
    expect(keyAtPath('text', ['meta'])).toBeUndefined();
    expect(keyAtPath(undefined, ['id'])).toBeUndefined();
  });

  it('never follows inherited properties', () => {
    expect(keyAtPath({}, ['constructor', 'name'])).toBeUndefined();
    expect(keyAtPath({}, ['__proto__'])).toBeUndefined();
  });

  it.each([
    ['an object', { id: { a: 1 } }, 'must be a string or a number; got object'],
    ['an array', { id: ['a'] }, 'got an array'],
    ['a boolean', { id: true }, 'got boolean'],
    ['NaN', { id: Number.NaN }, 'got number'],
    ['an empty string', { id: '' }, 'empty'],
    ['a non-ASCII string', { id: 'clé' }, 'printable ASCII'],
  ])('refuses %s', (_name, payload, message) => {
    expect(() => keyAtPath(payload, ['id'])).toThrow(InvalidKeyError);
    expect(() => keyAtPath(payload, ['id'])).toThrow(message);
  });
});
