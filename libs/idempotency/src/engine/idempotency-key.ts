/** Longest key accepted, in characters (after unquoting). */
export const MAX_KEY_LENGTH = 255;

const PRINTABLE_ASCII = /^[\x20-\x7e]+$/;

/** Why a key was refused; the text goes into the 400's `detail`. */
export class InvalidKeyError extends Error {}

/**
 * Parses one header value: a Structured Field string (`"abc"`, with `\"` and `\\` escapes, as the
 * IETF draft specifies) or a bare token (`abc`, as Stripe clients send). Throws
 * {@link InvalidKeyError} unless the result is 1 to 255 characters of printable ASCII.
 */
export function parseIdempotencyKey(raw: string): string {
  // Only spaces and tabs surround a field value (RFC 9110 OWS); String.prototype.trim() would also
  // drop a non-breaking space (byte 0xA0, as Node decodes it) and accept a key the client never sent.
  const value = raw.replace(/^[ \t]+|[ \t]+$/g, '');
  const key = value.startsWith('"') ? unquote(value) : value;
  validateIdempotencyKey(key);
  return key;
}

/**
 * Throws {@link InvalidKeyError} unless `key` is a string of 1 to 255 characters of printable
 * ASCII. A key function's value is checked too: read from a parsed body, it may be any type.
 */
export function validateIdempotencyKey(key: unknown): asserts key is string {
  if (typeof key !== 'string') {
    throw new InvalidKeyError(
      `The idempotency key must be a string; got ${Array.isArray(key) ? 'an array' : typeof key}.`,
    );
  }
  if (key.length === 0) {
    throw new InvalidKeyError('The idempotency key is empty.');
  }
  if (key.length > MAX_KEY_LENGTH) {
    throw new InvalidKeyError(`The idempotency key is longer than ${MAX_KEY_LENGTH} characters.`);
  }
  if (!PRINTABLE_ASCII.test(key)) {
    throw new InvalidKeyError('The idempotency key must be printable ASCII (0x20-0x7E).');
  }
}

function unquote(value: string): string {
  let out = '';
  for (let i = 1; i < value.length; i++) {
    const ch = value[i];
    if (ch === '\\') {
      const next = value[++i];
      if (next !== '"' && next !== '\\') {
        throw new InvalidKeyError('The quoted idempotency key has an invalid escape.');
      }
      out += next;
    } else if (ch === '"') {
      if (i !== value.length - 1) {
        throw new InvalidKeyError('The quoted idempotency key has characters after its end.');
      }
      return out;
    } else {
      out += ch;
    }
  }
  throw new InvalidKeyError('The quoted idempotency key is not terminated.');
}

/**
 * Every value of header `name` in a raw header list (`IncomingMessage.rawHeaders`), so that a
 * header sent twice is seen twice rather than joined with a comma.
 */
export function rawHeaderValues(rawHeaders: readonly string[], name: string): string[] {
  const lower = name.toLowerCase();
  const values: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (rawHeaders[i].toLowerCase() === lower) {
      values.push(rawHeaders[i + 1]);
    }
  }
  return values;
}

/** The request headers as Node (Express) and Fastify expose them. */
export interface RequestHeaders {
  headers: Record<string, string | string[] | undefined>;
  rawHeaders?: string[];
  raw?: { rawHeaders?: string[] };
}

/**
 * The key of header `headerName`, parsed as a Structured Field string or a bare token;
 * `undefined` when absent. Throws {@link InvalidKeyError} when invalid, or sent more than once
 * with different values (read from the raw header list, where a repeated header is not joined).
 */
export function headerKey(request: RequestHeaders, headerName: string): string | undefined {
  const raw = request.raw?.rawHeaders ?? request.rawHeaders;
  const header = request.headers[headerName.toLowerCase()];
  const values = raw
    ? rawHeaderValues(raw, headerName)
    : header === undefined
      ? []
      : ([] as string[]).concat(header);
  if (values.length === 0) {
    return undefined;
  }
  const first = parseIdempotencyKey(values[0]);
  for (let i = 1; i < values.length; i++) {
    if (parseIdempotencyKey(values[i]) !== first) {
      throw new InvalidKeyError(
        `The ${headerName} header was sent more than once with different values.`,
      );
    }
  }
  return first;
}

/**
 * The key a handler's `key` function gives for a call, checked like any other key: `undefined`
 * (or `null`) is no key; anything else must be a valid key, or {@link InvalidKeyError} is thrown.
 */
export function keyFromFunction<Context>(
  keyOf: (context: Context) => unknown,
  context: Context,
): string | undefined {
  const key = keyOf(context) ?? undefined;
  if (key !== undefined) {
    validateIdempotencyKey(key);
  }
  return key;
}

/**
 * The key at `path` in a payload (`key: { path }`): a string as it is, a finite number as its
 * decimal form, `undefined` when a field on the way is missing or `null`. Throws
 * {@link InvalidKeyError} for any other value, and for a string that is not a valid key.
 */
export function keyAtPath(payload: unknown, path: readonly string[]): string | undefined {
  let value = payload;
  for (const part of path) {
    if (value === null || typeof value !== 'object' || !Object.hasOwn(value, part)) {
      return undefined;
    }
    value = (value as Record<string, unknown>)[part];
  }
  if (value === undefined || value === null) {
    return undefined;
  }
  const key =
    typeof value === 'string'
      ? value
      : typeof value === 'number' && Number.isFinite(value)
        ? String(value)
        : undefined;
  if (key === undefined) {
    throw new InvalidKeyError(
      `The idempotency key at ${path.join('.')} must be a string or a number; got ${Array.isArray(value) ? 'an array' : typeof value}.`,
    );
  }
  validateIdempotencyKey(key);
  return key;
}
