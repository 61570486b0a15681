import type { ExecutionContext } from '@nestjs/common';
import { resolveOptions } from './resolved-options';
import type { IdempotentOptions } from '../idempotency.options';

describe('resolveOptions(): key', () => {
  const fromBody = (context: ExecutionContext) =>
    context.switchToHttp().getRequest<{ body: { key?: string } }>().body.key;

  it.each<[string, IdempotentOptions['key'], { key: unknown; issued: string | undefined }]>([
    ['nothing', undefined, { key: 'header', issued: undefined }],
    ['header', 'header', { key: 'header', issued: undefined }],
    ['fingerprint', 'fingerprint', { key: 'fingerprint', issued: undefined }],
    ['a function', fromBody, { key: fromBody, issued: undefined }],
    ["'issued'", 'issued', { key: 'header', issued: 'default' }],
    [
      '{ path }',
      { path: 'meta.eventId' },
      { key: { path: ['meta', 'eventId'] }, issued: undefined },
    ],
    ['{ issued }', { issued: 'checkout' }, { key: 'header', issued: 'checkout' }],
    [
      "{ issued, from: 'header' }",
      { issued: 'checkout', from: 'header' },
      { key: 'header', issued: 'checkout' },
    ],
    [
      '{ issued, from: fn }',
      { issued: 'forms', from: fromBody },
      { key: fromBody, issued: 'forms' },
    ],
  ])('resolves %s', (_name, key, expected) => {
    const resolved = resolveOptions({ key });
    expect({ key: resolved.key, issued: resolved.issued }).toEqual(expected);
  });

  it.each([
    ['an unknown string', 'cookie', "option \"key\" must be 'header', 'fingerprint', 'issued'"],
    ['null', null, 'option "key" must be'],
    ['an empty path', { path: '' }, 'option "key.path" must be a dot-separated field path'],
    ['a path with an empty part', { path: 'meta..id' }, 'option "key.path" must be'],
    ['a path of another type', { path: 7 }, 'option "key.path" must be'],
    ['an empty scope name', { issued: '' }, 'option "key.issued" must be a scope name'],
    ['a scope name of another type', { issued: 42 }, 'option "key.issued" must be a scope name'],
    [
      'a bad from',
      { issued: 'a', from: 'body' },
      'option "key.from" must be \'header\' or a function',
    ],
  ])('refuses %s, naming the option', (_name, key, message) => {
    expect(() => resolveOptions({ key: key as IdempotentOptions['key'] })).toThrow(message);
  });
});
