import { decodeBody, encodeBody } from './body-codec';

const roundTrip = (value: unknown) => decodeBody(encodeBody(value));

describe('body codec', () => {
  it.each([
    ['an object', { a: 1, b: 'two', c: [true, null, { d: 1.5 }] }],
    ['an array', [1, 'a', { b: [] }]],
    ['a string', 'text'],
    ['a number', 42],
    ['null', null],
    ['an empty object', {}],
  ])('round-trips %s unchanged', (_name, value) => {
    expect(roundTrip(value)).toEqual(value);
  });

  it('brings Date and Buffer values back as Date and Buffer', () => {
    const value = {
      at: new Date('2026-01-02T03:04:05.678Z'),
      data: Buffer.from([0, 1, 254, 255]),
      list: [new Date(0)],
    };
    const back = roundTrip(value) as typeof value;
    expect(back.at).toBeInstanceOf(Date);
    expect(back.at.toISOString()).toBe('2026-01-02T03:04:05.678Z');
    expect(Buffer.isBuffer(back.data)).toBe(true);
    expect([...back.data]).toEqual([0, 1, 254, 255]);
    expect(back.list[0]).toEqual(new Date(0));
  });

  it('brings a Uint8Array back as bytes', () => {
    const back = roundTrip({ bytes: new Uint8Array([7, 8]) }) as { bytes: Buffer };
    expect([...back.bytes]).toEqual([7, 8]);
  });

  it('keeps a top-level undefined as undefined', () => {
    expect(roundTrip(undefined)).toBeUndefined();
  });

  it('serializes like JSON.stringify for plain values', () => {
    const value = {
      keep: 1,
      dropped: undefined,
      fn: () => 1,
      list: [undefined, () => 1, NaN, Infinity],
      nested: { toJSON: () => ({ replaced: true }) },
    };
    expect(JSON.stringify(roundTrip(value))).toBe(JSON.stringify(value));
  });

  it('does not mistake an object that carries the tag key for a tagged value', () => {
    const value = { $idem: 'Date', v: 'not a date', other: 1 };
    expect(roundTrip(value)).toEqual(value);
    expect(roundTrip({ inner: { $idem: 'Buffer', v: 'AAAA' } })).toEqual({
      inner: { $idem: 'Buffer', v: 'AAAA' },
    });
  });

  it('maps an invalid Date to null, as JSON does', () => {
    expect(roundTrip({ at: new Date(NaN) })).toEqual({ at: null });
  });

  it('throws on values JSON cannot carry', () => {
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    expect(() => encodeBody(cycle)).toThrow(TypeError);
    expect(() => encodeBody({ big: BigInt(1) })).toThrow(TypeError);
  });

  it('allows the same object twice when it is not a cycle', () => {
    const shared = { a: 1 };
    expect(roundTrip({ x: shared, y: shared })).toEqual({ x: { a: 1 }, y: { a: 1 } });
  });

  it('decodes tagged values nested anywhere, and leaves the text "$idem" in strings alone', () => {
    const value = {
      text: 'a "$idem" inside a string',
      deep: [{ at: new Date(5) }, [Buffer.from('x')], { $idem: 'kept' }],
    };
    expect(roundTrip(value)).toEqual(value);
    expect(roundTrip({ text: '"$idem"' })).toEqual({ text: '"$idem"' });
  });

  it('keeps a "__proto__" key of the body as a field, not as the prototype', () => {
    const back = decodeBody(
      '{"__proto__":{"polluted":true},"at":{"$idem":"Date","v":"1970-01-01T00:00:00.000Z"}}',
    ) as Record<string, unknown>;
    expect(Object.getPrototypeOf(back)).toBe(Object.prototype);
    expect(Object.hasOwn(back, '__proto__')).toBe(true);
    expect((back as { polluted?: unknown }).polluted).toBeUndefined();
  });
});
