import {
  InvalidKeyError,
  MAX_KEY_LENGTH,
  parseIdempotencyKey,
  rawHeaderValues,
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

describe('rawHeaderValues', () => {
  it('returns every value of the header, whatever its case', () => {
    const raw = ['Host', 'x', 'Idempotency-Key', 'a', 'idempotency-key', 'b', 'Other', 'c'];
    expect(rawHeaderValues(raw, 'Idempotency-Key')).toEqual(['a', 'b']);
    expect(rawHeaderValues(raw, 'missing')).toEqual([]);
  });
});
