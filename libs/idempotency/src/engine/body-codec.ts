/**
 * The stored body encoding: JSON in which `Date`, `Buffer` / `Uint8Array`, a top-level `undefined`
 * and objects that happen to carry the tag key are wrapped as `{ "$idem": type, "v": value }`. A
 * replay decodes it back to the same JavaScript value, which the platform then serializes exactly as
 * it did the first time, on Express and Fastify alike.
 */
const TAG = '$idem';

type Encoded = null | boolean | number | string | Encoded[] | { [key: string]: Encoded };

/** Encodes a handler's result. Throws on values JSON cannot carry (BigInt, cycles). */
export function encodeBody(value: unknown): string {
  return value === undefined
    ? JSON.stringify({ [TAG]: 'undefined' })
    : JSON.stringify(encode(value, new Set()));
}

/** The tag as it appears in encoded text: a body without it decodes as plain JSON. */
const TAG_TEXT = `"${TAG}"`;

/**
 * Decodes what {@link encodeBody} produced. The parsed JSON is fresh, so tagged values are replaced
 * in place; a body without any tag (most are) is returned as `JSON.parse` gives it, unwalked.
 */
export function decodeBody(text: string): unknown {
  const parsed = JSON.parse(text) as Encoded;
  return text.includes(TAG_TEXT) ? decode(parsed) : parsed;
}

function encode(value: unknown, seen: Set<object>): Encoded {
  if (value instanceof Date) {
    return Number.isNaN(value.getTime()) ? null : { [TAG]: 'Date', v: value.toISOString() };
  }
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) {
    return { [TAG]: 'Buffer', v: Buffer.from(value).toString('base64') };
  }
  if (value === null || typeof value !== 'object') {
    return primitive(value);
  }
  const withJson = value as { toJSON?: () => unknown };
  if (typeof withJson.toJSON === 'function') {
    return encode(withJson.toJSON(), seen);
  }
  if (seen.has(value)) {
    throw new TypeError('Converting circular structure to JSON');
  }
  seen.add(value);
  try {
    if (Array.isArray(value)) {
      return value.map((item) => (isSkipped(item) ? null : encode(item, seen)));
    }
    const out: { [key: string]: Encoded } = {};
    for (const [key, item] of Object.entries(value)) {
      if (!isSkipped(item)) {
        out[key] = encode(item, seen);
      }
    }
    return TAG in out ? { [TAG]: 'Object', v: out } : out;
  } finally {
    seen.delete(value);
  }
}

function primitive(value: unknown): Encoded {
  switch (typeof value) {
    case 'number':
      return Number.isFinite(value) ? value : null;
    case 'string':
    case 'boolean':
      return value;
    case 'bigint':
      throw new TypeError('Do not know how to serialize a BigInt');
    default:
      return null;
  }
}

function isSkipped(value: unknown): boolean {
  return value === undefined || typeof value === 'function' || typeof value === 'symbol';
}

function decode(value: Encoded): unknown {
  if (value === null || typeof value !== 'object') {
    return value;
  }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const item = value[i];
      if (item !== null && typeof item === 'object') {
        value[i] = decode(item) as Encoded;
      }
    }
    return value;
  }
  switch (value[TAG]) {
    case 'Date':
      return new Date(value.v as string);
    case 'Buffer':
      return Buffer.from(value.v as string, 'base64');
    case 'undefined':
      return undefined;
    case 'Object':
      return decodeObject(value.v as { [key: string]: Encoded });
    default:
      return decodeObject(value);
  }
}

/** Decodes the values of a parsed object in place. */
function decodeObject(value: { [key: string]: Encoded }): Record<string, unknown> {
  for (const key in value) {
    const item = value[key];
    if (item !== null && typeof item === 'object') {
      value[key] = decode(item) as Encoded;
    }
  }
  return value;
}
