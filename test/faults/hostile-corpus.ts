import { gzipSync } from 'node:zlib';
import { encodeRequest, type RawRequest } from './raw-http';

/**
 * A generated corpus of hostile requests to `POST /orders` of the sample app, each with the
 * answers it may get. Deterministic: the same seed gives the same requests, except for `runId`,
 * which goes into every key and customer so that no record of an earlier run (in a shared Redis)
 * can answer a request of this one.
 */

/** What one answer was, as the suite classifies it. */
export type Outcome =
  /** 201, first execution. */
  | 'created'
  /** 201 with `Idempotent-Replayed: true`. */
  | 'replayed'
  /** A 4xx written by Node's HTTP parser itself (no problem body), for bytes it refuses. */
  | 'node-4xx'
  /** The connection closed with no answer. */
  | 'closed'
  /** Any answer of status 500 or more: never allowed. */
  | '5xx'
  /** A problem+json answer: its `code`. */
  | 'IDEMPOTENCY_KEY_INVALID'
  | 'IDEMPOTENCY_KEY_MISSING'
  | 'IDEMPOTENCY_KEY_REUSED'
  | 'IDEMPOTENCY_REQUEST_IN_PROGRESS'
  | 'IDEMPOTENCY_FINGERPRINT_FAILED'
  | 'MALFORMED_BODY'
  | 'BODY_TOO_LARGE'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'VALIDATION_FAILED'
  /** Anything else, as `other <status>`. */
  | `other ${number}`;

/** Answers that show the key was refused before anything ran. */
const KEY_REFUSED: Outcome[] = ['IDEMPOTENCY_KEY_INVALID'];
/** Bytes Node's parser may refuse itself (400 or close) before the app sees the request. */
const KEY_REFUSED_OR_NODE: Outcome[] = ['IDEMPOTENCY_KEY_INVALID', 'node-4xx'];
const NODE: Outcome[] = ['node-4xx'];
const NODE_OR_CLOSED: Outcome[] = ['node-4xx', 'closed'];

export const CATEGORIES = [
  'over-long key',
  'empty or missing key',
  'whitespace key',
  'non-ASCII key',
  'control characters',
  'duplicated headers',
  'malformed structured field',
  'quotes and backslashes',
  'invalid JSON',
  'truncated JSON',
  'wrong shape',
  'deep nesting',
  'huge bodies',
  'content types',
  'charsets',
  'chunked bodies',
  'content-length mismatch',
  'HTTP versions',
  'pipelined',
  'valid',
  'replays',
] as const;
export type Category = (typeof CATEGORIES)[number];

/** One request of a case and the answers it may get. */
export interface CorpusRequest {
  bytes: Buffer;
  allowed: Outcome[];
  /** The key as the library parses it, when it is valid: only these may ever answer 201. */
  key?: string;
  /** The exact `Idempotency-Key` header value, to send the key again in the replay phase. */
  keyHeader?: string;
  /** The JSON body of a plain request (JSON content type, Content-Length), to send it again. */
  body?: string;
}

/** One connection: requests written back to back (pipelined when more than one). */
export interface CorpusCase {
  category: Category;
  label: string;
  requests: CorpusRequest[];
  /** Half-close after writing (a body shorter than its Content-Length, then nothing more). */
  halfClose?: boolean;
  /** The server may close before answering every request (after refusing bytes). */
  mayCloseEarly?: boolean;
}

/** The body limit the corpus assumes (`BODY_LIMIT` of the app under test). */
export const CORPUS_BODY_LIMIT = '512kb';
const LIMIT_BYTES = 512 * 1024;
/** The app's nesting limit (MAX_BODY_DEPTH). */
const MAX_DEPTH = 32;

type Header = [string, string];
const HOST: Header = ['Host', '127.0.0.1'];
const JSON_TYPE: Header = ['Content-Type', 'application/json'];
const CLOSE: Header = ['Connection', 'close'];
const KEEP_ALIVE: Header = ['Connection', 'keep-alive'];

/** Bytes of `text` in UTF-8, as a latin1 string (one char per byte) for a raw header value. */
const utf8 = (text: string): string => Buffer.from(text, 'utf8').toString('latin1');
/** The Structured Field string for `key`: quoted, `"` and `\` escaped. */
const quote = (key: string): string => `"${key.replace(/[\\"]/g, (c) => `\\${c}`)}"`;

/** mulberry32: a small seeded generator, so the corpus is the same every run. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Printable ASCII without space, `"` and `\`: safe anywhere in a bare or quoted key. */
const PLAIN = Array.from({ length: 0x7f - 0x21 }, (_, i) => String.fromCharCode(0x21 + i))
  .filter((c) => c !== '"' && c !== '\\')
  .join('');

class CorpusBuilder {
  readonly cases: CorpusCase[] = [];
  private seq = 0;
  private readonly random: () => number;

  constructor(
    private readonly runId: string,
    seed: number,
  ) {
    this.random = seeded(seed);
  }

  int(max: number): number {
    return Math.floor(this.random() * max);
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /** A key no other request of any run uses: the run id and a sequence number. */
  nonce(): string {
    return `hx${this.runId}${(this.seq++).toString(36)}`;
  }

  /** `nonce()` padded with random safe characters to exactly `length` characters. */
  keyOfLength(length: number): string {
    let key = this.nonce();
    while (key.length < length) {
      key += PLAIN[this.int(PLAIN.length)];
    }
    return key.slice(0, length);
  }

  /** A valid order of a customer of its own. */
  order(): string {
    const n = this.seq++;
    return JSON.stringify({
      customerId: `hx-${this.runId}-${n}`,
      items: [{ sku: `SKU-${n % 97}`, quantity: 1 + (n % 5), unitPrice: 9.99 }],
    });
  }

  /** `POST /orders` with the given key header values (none: no header), JSON unless overridden. */
  post(
    keyValues: readonly string[],
    body: Buffer | string,
    options: Partial<RawRequest> & { extra?: Header[]; last?: boolean; type?: Header | null } = {},
  ): Buffer {
    const { extra = [], last = true, type = JSON_TYPE, ...rest } = options;
    return encodeRequest({
      path: '/orders',
      body,
      ...rest,
      headers: [
        ...(rest.headers ?? [HOST]),
        ...(type ? [type] : []),
        ...keyValues.map((value): Header => ['Idempotency-Key', value]),
        ...extra,
        last ? CLOSE : KEEP_ALIVE,
      ],
    });
  }

  add(
    category: Category,
    label: string,
    request: CorpusRequest,
    options: Partial<CorpusCase> = {},
  ) {
    this.cases.push({ category, label, requests: [request], ...options });
  }

  /** A request with a valid key that must create an order. */
  creates(category: Category, label: string, keyHeader: string, key: string) {
    const body = this.order();
    this.add(category, label, {
      bytes: this.post([keyHeader], body),
      allowed: ['created'],
      key,
      keyHeader,
      body,
    });
  }

  /** A request whose key header values must be refused with 400 (or by Node for raw bytes). */
  refuses(
    category: Category,
    label: string,
    keyValues: readonly string[],
    allowed: Outcome[] = KEY_REFUSED,
  ) {
    this.add(category, label, { bytes: this.post(keyValues, this.order()), allowed });
  }
}

/** Builds the corpus of the first phase; {@link replayCorpus} builds the second from it. */
export function hostileCorpus(runId: string, seed = 0x5eed): CorpusCase[] {
  const c = new CorpusBuilder(runId, seed);
  overLongKeys(c);
  emptyKeys(c);
  whitespaceKeys(c);
  nonAsciiKeys(c);
  controlCharacters(c);
  duplicatedHeaders(c);
  malformedStructuredFields(c);
  quotesAndBackslashes(c);
  invalidJson(c);
  truncatedJson(c);
  wrongShapes(c);
  deepNesting(c);
  hugeBodies(c);
  contentTypes(c);
  charsets(c);
  chunkedBodies(c);
  contentLengthMismatch(c);
  httpVersions(c);
  pipelined(c);
  valid(c);
  return c.cases;
}

function overLongKeys(c: CorpusBuilder) {
  for (const length of [256, 257, 300, 512, 1000, 2048, 4096, 8000, 8192, 10_000, 12_000]) {
    for (let variant = 0; variant < 3; variant++) {
      c.refuses('over-long key', `${length} chars, bare`, [c.keyOfLength(length)]);
      c.refuses('over-long key', `${length} chars, quoted`, [quote(c.keyOfLength(length))]);
    }
  }
  for (let variant = 0; variant < 3; variant++) {
    const bare = c.keyOfLength(255);
    c.creates('over-long key', '255 chars (the longest valid), bare', bare, bare);
    const quoted = c.keyOfLength(255);
    c.creates('over-long key', '255 chars, quoted', quote(quoted), quoted);
    // 255 after unquoting, 300 on the wire: the limit is on the key, not the header.
    const escaped = c.keyOfLength(210) + '"\\'.repeat(22) + 'z';
    c.creates('over-long key', '255 chars with 44 escapes', quote(escaped), escaped);
    c.refuses('over-long key', '256 chars with escapes, quoted', [
      quote(c.keyOfLength(211) + '"\\'.repeat(22) + 'z'),
    ]);
  }
  // Beyond Node's 16 KiB header limit: Node answers 431 before the app sees the request.
  for (const length of [17_000, 40_000, 70_000]) {
    for (let variant = 0; variant < 2; variant++) {
      c.refuses(
        'over-long key',
        `${length} chars (over the header limit)`,
        [c.keyOfLength(length)],
        NODE,
      );
    }
  }
}

function emptyKeys(c: CorpusBuilder) {
  for (const name of ['Idempotency-Key', 'idempotency-key', 'IDEMPOTENCY-KEY']) {
    for (const value of ['', ' ', '   ']) {
      const header = (body: string) =>
        encodeRequest({
          path: '/orders',
          body,
          headers: [HOST, JSON_TYPE, [name, value], CLOSE],
        });
      c.add('empty or missing key', `${name}: ${JSON.stringify(value)}`, {
        bytes: header(c.order()),
        allowed: KEY_REFUSED,
      });
      // An empty body parses as {}: the key is refused before validation.
      c.add('empty or missing key', `${name}: ${JSON.stringify(value)}, empty body`, {
        bytes: header(''),
        allowed: KEY_REFUSED,
      });
      // The body parser runs before the interceptor: malformed JSON is refused first.
      c.add('empty or missing key', `${name}: ${JSON.stringify(value)}, malformed JSON`, {
        bytes: header('{"customerId":'),
        allowed: ['MALFORMED_BODY'],
      });
    }
  }
  for (const name of ['Idempotency_Key', 'Idempotency-Keys', 'X-Idempotency-Key', 'Idempotency']) {
    c.add('empty or missing key', `only a look-alike header ${name}`, {
      bytes: encodeRequest({
        path: '/orders',
        body: c.order(),
        headers: [HOST, JSON_TYPE, [name, c.nonce()], CLOSE],
      }),
      allowed: ['IDEMPOTENCY_KEY_MISSING'],
    });
  }
  for (let variant = 0; variant < 4; variant++) {
    c.add('empty or missing key', 'no key header', {
      bytes: c.post([], c.order()),
      allowed: ['IDEMPOTENCY_KEY_MISSING'],
    });
  }
}

function whitespaceKeys(c: CorpusBuilder) {
  const blanks = [' ', '  ', '\t', ' \t ', '\t\t\t', ' '.repeat(50), ' '.repeat(300), '\t \t \t'];
  for (const blank of blanks) {
    c.refuses('whitespace key', `only ${JSON.stringify(blank.slice(0, 8))}`, [blank]);
    c.add('whitespace key', `only ${JSON.stringify(blank.slice(0, 8))}, empty body`, {
      bytes: c.post([blank], ''),
      allowed: KEY_REFUSED,
    });
  }
  // Spaces and tabs around a value are not part of it (RFC 9110 OWS); inside they are.
  for (const [before, after] of [
    [' ', ''],
    ['', '\t'],
    ['\t ', ' \t'],
    ['   ', '   '],
  ]) {
    const key = c.nonce();
    c.creates('whitespace key', 'OWS around a bare key', `${before}${key}${after}`, key);
    const quoted = c.nonce();
    c.creates(
      'whitespace key',
      'OWS around a quoted key',
      `${before}${quote(quoted)}${after}`,
      quoted,
    );
  }
  for (const inner of [' ', '  ', ' x ']) {
    const key = `${c.nonce()}${inner}${c.nonce()}`;
    c.creates('whitespace key', 'spaces inside a bare key', key, key);
    const quoted = `  ${c.nonce()}${inner}`;
    c.creates('whitespace key', 'spaces at the ends of a quoted key', quote(quoted), quoted);
  }
}

function nonAsciiKeys(c: CorpusBuilder) {
  const texts = ['é', 'ü', '日本', '😀', '\u200b', '\ufeff', '\u202e', 'Ω', '\u00a0'];
  const latin1 = ['\x80', '\xa0', '\xe9', '\xff', '\x85'];
  const values: [string, string][] = [
    ...texts.map((text): [string, string] => [`UTF-8 ${JSON.stringify(text)}`, utf8(text)]),
    ...latin1.map((byte): [string, string] => [
      `latin1 byte 0x${byte.charCodeAt(0).toString(16)}`,
      byte,
    ]),
  ];
  for (const [label, bytes] of values) {
    for (const where of ['start', 'middle', 'end'] as const) {
      const n = c.nonce();
      const key = where === 'start' ? bytes + n : where === 'end' ? n + bytes : n + bytes + n;
      c.refuses('non-ASCII key', `${label} at the ${where}, bare`, [key], KEY_REFUSED_OR_NODE);
      c.refuses(
        'non-ASCII key',
        `${label} at the ${where}, quoted`,
        [`"${key}"`],
        KEY_REFUSED_OR_NODE,
      );
    }
  }
  for (let variant = 0; variant < 30; variant++) {
    let key = c.nonce();
    const length = 1 + c.int(40);
    for (let i = 0; i < length; i++) {
      key += String.fromCharCode(0x80 + c.int(0x80));
    }
    c.refuses('non-ASCII key', 'random high bytes', [key + c.nonce()], KEY_REFUSED_OR_NODE);
  }
}

function controlCharacters(c: CorpusBuilder) {
  const controls = [...Array.from({ length: 0x20 }, (_, i) => i), 0x7f];
  for (const code of controls) {
    const ch = String.fromCharCode(code);
    const name = `0x${code.toString(16).padStart(2, '0')}`;
    for (const where of ['start', 'middle', 'end'] as const) {
      // A tab at either end is whitespace around the value (see "whitespace key").
      if (code === 0x09 && where !== 'middle') {
        continue;
      }
      const n = c.nonce();
      const key = where === 'start' ? ch + n : where === 'end' ? n + ch : n + ch + n;
      c.add(
        'control characters',
        `${name} at the ${where}, bare`,
        { bytes: c.post([key], c.order()), allowed: KEY_REFUSED_OR_NODE },
        // A bare CR or LF ends the header line early: Node may refuse what follows.
        { mayCloseEarly: true },
      );
      c.add(
        'control characters',
        `${name} at the ${where}, quoted`,
        { bytes: c.post([`"${key}"`], c.order()), allowed: KEY_REFUSED_OR_NODE },
        { mayCloseEarly: true },
      );
    }
  }
  // In the header name, and in other headers of a request with a valid key.
  for (const code of [0x00, 0x01, 0x0b, 0x1b, 0x7f]) {
    const ch = String.fromCharCode(code);
    c.add('control characters', `0x${code.toString(16)} in the header name`, {
      bytes: encodeRequest({
        path: '/orders',
        body: c.order(),
        headers: [HOST, JSON_TYPE, [`Idempotency${ch}Key`, c.nonce()], CLOSE],
      }),
      allowed: NODE,
    });
    c.add('control characters', `0x${code.toString(16)} in the Content-Type`, {
      bytes: c.post([c.nonce()], c.order(), { type: ['Content-Type', `application/json${ch}`] }),
      allowed: NODE,
    });
  }
}

function duplicatedHeaders(c: CorpusBuilder) {
  for (let variant = 0; variant < 4; variant++) {
    const key = c.nonce();
    c.add('duplicated headers', 'key twice, equal values', {
      bytes: c.post([key, key], c.order()),
      allowed: ['created'],
      key,
      keyHeader: key,
    });
    const mixed = c.nonce();
    c.add('duplicated headers', 'key twice, bare and quoted (one key)', {
      bytes: c.post([mixed, quote(mixed)], c.order()),
      allowed: ['created'],
      key: mixed,
      keyHeader: mixed,
    });
    const spaced = c.nonce();
    c.add('duplicated headers', 'key twice, equal after trimming', {
      bytes: c.post([spaced, `  ${spaced}\t`], c.order()),
      allowed: ['created'],
      key: spaced,
      keyHeader: spaced,
    });
    const cased = c.nonce();
    c.add('duplicated headers', 'key twice under two spellings of the name, equal', {
      bytes: encodeRequest({
        path: '/orders',
        body: c.order(),
        headers: [HOST, JSON_TYPE, ['idempotency-key', cased], ['IDEMPOTENCY-KEY', cased], CLOSE],
      }),
      allowed: ['created'],
      key: cased,
      keyHeader: cased,
    });
    c.refuses('duplicated headers', 'key twice, different values', [c.nonce(), c.nonce()]);
    const same = c.nonce();
    c.refuses('duplicated headers', 'key three times, one different', [same, same, c.nonce()]);
    c.refuses('duplicated headers', 'a valid key and an empty one', [c.nonce(), '']);
    c.refuses('duplicated headers', 'a valid key and an over-long one', [
      c.nonce(),
      c.keyOfLength(300),
    ]);
    c.refuses(
      'duplicated headers',
      'a valid key and a non-ASCII one',
      [c.nonce(), utf8('é')],
      KEY_REFUSED_OR_NODE,
    );
    c.add('duplicated headers', 'key twice under two spellings of the name, different', {
      bytes: encodeRequest({
        path: '/orders',
        body: c.order(),
        headers: [
          HOST,
          JSON_TYPE,
          ['idempotency-key', c.nonce()],
          ['Idempotency-Key', c.nonce()],
          CLOSE,
        ],
      }),
      allowed: KEY_REFUSED,
    });
    // Node keeps the first Content-Type.
    const typed = c.nonce();
    c.add('duplicated headers', 'Content-Type twice, JSON first', {
      bytes: c.post([typed], c.order(), { extra: [['Content-Type', 'text/plain']] }),
      allowed: ['created'],
      key: typed,
      keyHeader: typed,
    });
    c.add('duplicated headers', 'Content-Type twice, text first', {
      bytes: c.post([c.nonce()], c.order(), {
        type: ['Content-Type', 'text/plain'],
        extra: [JSON_TYPE],
      }),
      allowed: ['UNSUPPORTED_MEDIA_TYPE'],
    });
    const body = c.order();
    c.add('duplicated headers', 'Content-Length twice, different', {
      bytes: c.post([c.nonce()], body, { extra: [['Content-Length', String(body.length + 1)]] }),
      allowed: NODE,
    });
    c.add('duplicated headers', 'Transfer-Encoding twice', {
      bytes: c.post([c.nonce()], `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`, {
        contentLength: 'none',
        extra: [
          ['Transfer-Encoding', 'chunked'],
          ['Transfer-Encoding', 'chunked'],
        ],
      }),
      allowed: NODE,
    });
  }
}

function malformedStructuredFields(c: CorpusBuilder) {
  const invalid: [string, (n: string) => string][] = [
    ['unterminated', (n) => `"${n}`],
    ['invalid escape \\x', (n) => `"${n}\\x"`],
    ['invalid escape \\n', (n) => `"${n}\\n"`],
    ['invalid escape \\u0041', (n) => `"${n}\\u0041"`],
    ['a quote inside', (n) => `"${n}"b"`],
    ['characters after the end', (n) => `"${n}"x`],
    ['a parameter', (n) => `"${n}";p=1`],
    ['a list of two strings', (n) => `"${n}", "${n}"`],
    ['ends in an escaped quote', (n) => `"${n}\\"`],
    ['ends in a backslash', (n) => `"${n}\\`],
    ['doubled quotes', (n) => `""${n}""`],
  ];
  for (const [label, make] of invalid) {
    for (let variant = 0; variant < 5; variant++) {
      c.refuses('malformed structured field', label, [make(c.nonce())]);
    }
  }
  for (const constant of ['""', '"\\"', '"', '"\\\\\\"', '" "x']) {
    c.refuses('malformed structured field', `constant ${constant}`, [constant]);
  }
  // Not a Structured Field string, but a bare key: accepted as it is (a Stripe-style key).
  for (const [label, make] of [
    ['bare, trailing quote', (n: string) => `${n}"`],
    ['bare, SF byte sequence', (n: string) => `:${n}:`],
    ['bare, SF token with a parameter', (n: string) => `${n};p=1`],
    ['bare, single quotes', (n: string) => `'${n}'`],
  ] as const) {
    for (let variant = 0; variant < 3; variant++) {
      const key = make(c.nonce());
      c.creates('malformed structured field', label, key, key);
    }
  }
  for (let variant = 0; variant < 3; variant++) {
    const key = c.nonce();
    c.creates('malformed structured field', 'quoted, then OWS', `${quote(key)}  `, key);
  }
}

function quotesAndBackslashes(c: CorpusBuilder) {
  const valid: [string, (n: string) => [header: string, key: string]][] = [
    ['escaped quote', (n) => [`"${n}\\"b"`, `${n}"b`]],
    ['escaped backslash', (n) => [`"${n}\\\\b"`, `${n}\\b`]],
    ['only escapes', (n) => [`"${n}\\"\\\\\\"\\\\"`, `${n}"\\"\\`]],
    ['bare with a quote inside', (n) => [`${n}"b`, `${n}"b`]],
    ['bare with a backslash', (n) => [`${n}\\b`, `${n}\\b`]],
    ['bare starting with a backslash', (n) => [`\\"${n}\\"`, `\\"${n}\\"`]],
    ['bare with quotes inside', (n) => [`${n}""`, `${n}""`]],
  ];
  for (const [label, make] of valid) {
    for (let variant = 0; variant < 4; variant++) {
      const [header, key] = make(c.nonce());
      c.creates('quotes and backslashes', label, header, key);
    }
  }
  // Random keys over the whole printable range, quoted the way the draft says.
  for (let variant = 0; variant < 20; variant++) {
    let key = c.nonce();
    const length = 1 + c.int(60);
    for (let i = 0; i < length; i++) {
      key += String.fromCharCode(0x20 + c.int(0x5f));
    }
    c.creates('quotes and backslashes', 'random printable key, quoted', quote(key), key);
  }
}

/** A valid key header for a request whose body is refused before anything runs. */
function bodyCase(
  c: CorpusBuilder,
  category: Category,
  label: string,
  body: Buffer | string,
  allowed: Outcome[],
  options: Parameters<CorpusBuilder['post']>[2] = {},
) {
  const key = c.nonce();
  c.add(category, label, { bytes: c.post([key], body, options), allowed, key });
}

function invalidJson(c: CorpusBuilder) {
  const bodies = [
    '{',
    '}',
    '{"customerId":}',
    "{'customerId':'c'}",
    '{"customerId":"c",}',
    '[1,2,]',
    'NaN',
    'undefined',
    '{"a":1}x',
    '{"a":1}{"b":2}',
    '{"a":"\x01"}',
    '{"a":"\\x41"}',
    '{"a":"\\u12"}',
    '{"a":01}',
    '{"a":.5}',
    '{"a":+1}',
    '{"a":Infinity}',
    '/* comment */ {}',
    '{"a":1 // comment\n}',
    '{a:1}',
    '{"a" 1}',
    '{"a":[1 2]}',
    '\u00ff{}',
    '{"a":"unterminated}',
    'tru',
  ];
  for (const body of bodies) {
    bodyCase(c, 'invalid JSON', JSON.stringify(body.slice(0, 20)), body, ['MALFORMED_BODY']);
    c.add('invalid JSON', `${JSON.stringify(body.slice(0, 20))}, invalid key`, {
      bytes: c.post([`"${c.nonce()}`], body),
      allowed: ['MALFORMED_BODY'],
    });
  }
  for (let variant = 0; variant < 30; variant++) {
    const length = 1 + c.int(200);
    const bytes = Buffer.alloc(length);
    for (let i = 0; i < length; i++) {
      bytes[i] = c.int(256);
    }
    bodyCase(
      c,
      'invalid JSON',
      'random bytes after "{"',
      Buffer.concat([Buffer.from('{'), bytes]),
      ['MALFORMED_BODY'],
    );
  }
}

function truncatedJson(c: CorpusBuilder) {
  for (let variant = 0; variant < 60; variant++) {
    const body = c.order();
    const cut = 1 + ((variant * 7 + c.int(5)) % (body.length - 1));
    bodyCase(c, 'truncated JSON', `cut at ${cut} of ${body.length}`, body.slice(0, cut), [
      'MALFORMED_BODY',
    ]);
  }
}

function wrongShapes(c: CorpusBuilder) {
  const item = { sku: 'S', quantity: 1, unitPrice: 1 };
  const orderWith = (patch: Record<string, unknown>) =>
    JSON.stringify({ customerId: `hx-shape-${c.nonce()}`, items: [item], ...patch });
  // Top-level values other than objects and arrays are refused by the JSON parser (strict).
  for (const body of ['"text"', '123', 'true', 'null', '-0', '1e999']) {
    bodyCase(c, 'wrong shape', `top-level ${body}`, body, ['MALFORMED_BODY']);
  }
  const invalid: [string, string][] = [
    ['[]', '[]'],
    ['[{}]', '[{}]'],
    ['{}', '{}'],
    ['customerId a number', orderWith({ customerId: 5 })],
    ['customerId an array', orderWith({ customerId: ['a'] })],
    ['customerId an object', orderWith({ customerId: { a: 1 } })],
    ['customerId empty', orderWith({ customerId: '' })],
    ['customerId 101 chars', orderWith({ customerId: 'c'.repeat(101) })],
    ['customerId null', orderWith({ customerId: null })],
    ['items missing', JSON.stringify({ customerId: 'c' })],
    ['items empty', orderWith({ items: [] })],
    ['items 101', orderWith({ items: Array.from({ length: 101 }, () => item) })],
    ['items an object', orderWith({ items: item })],
    ['items a string', orderWith({ items: 'S' })],
    ['item null', orderWith({ items: [null] })],
    ['item a number', orderWith({ items: [1] })],
    ['quantity 0', orderWith({ items: [{ ...item, quantity: 0 }] })],
    ['quantity -1', orderWith({ items: [{ ...item, quantity: -1 }] })],
    ['quantity 1.5', orderWith({ items: [{ ...item, quantity: 1.5 }] })],
    ['quantity "2"', orderWith({ items: [{ ...item, quantity: '2' }] })],
    ['quantity 1e10', orderWith({ items: [{ ...item, quantity: 1e10 }] })],
    ['unitPrice "1"', orderWith({ items: [{ ...item, unitPrice: '1' }] })],
    ['unitPrice 1.234', orderWith({ items: [{ ...item, unitPrice: 1.234 }] })],
    ['unitPrice -1', orderWith({ items: [{ ...item, unitPrice: -1 }] })],
    [
      'unitPrice 1e400',
      orderWith({ items: [{ ...item, unitPrice: 0.5 }] }).replace('0.5', '1e400'),
    ],
    ['sku 65 chars', orderWith({ items: [{ ...item, sku: 's'.repeat(65) }] })],
    ['sku empty', orderWith({ items: [{ ...item, sku: '' }] })],
    ['an unknown property', orderWith({ admin: true })],
    ['an unknown item property', orderWith({ items: [{ ...item, discount: 100 }] })],
    ['status set by the client', orderWith({ status: 'paid' })],
    ['id set by the client', orderWith({ id: '00000000-0000-0000-0000-000000000000' })],
  ];
  for (const [label, body] of invalid) {
    bodyCase(c, 'wrong shape', label, body, ['VALIDATION_FAILED']);
    // The interceptor runs before validation: an invalid key is refused first.
    c.add('wrong shape', `${label}, invalid key`, {
      bytes: c.post([`${c.nonce()}\xe9`], body),
      allowed: KEY_REFUSED,
    });
  }
  // Valid orders with odd content: stored, or refused with 400 where the database cannot hold
  // the value (PostgreSQL refuses U+0000; it counts U+FE0F as a character where the validator
  // does not). Never a 500.
  const odd: [string, string][] = [
    ['__proto__ property', orderWith({}).replace('{', '{"__proto__":{"polluted":true},')],
    [
      'constructor.prototype property',
      orderWith({}).replace('{', '{"constructor":{"prototype":{"polluted":true}},'),
    ],
    ['U+0000 in customerId', orderWith({ customerId: `hx-nul-${c.nonce()}\u0000` })],
    ['U+0000 in a sku', orderWith({ items: [{ ...item, sku: 'S\u0000' }] })],
    ['a lone surrogate in customerId', orderWith({ customerId: `hx-${c.nonce()}\ud800` })],
    ['100 characters with variation selectors', orderWith({ customerId: 'a\ufe0f'.repeat(100) })],
    ['100 emoji', orderWith({ customerId: '😀'.repeat(100) })],
    ['right-to-left override', orderWith({ customerId: `\u202e${c.nonce()}` })],
    [
      '100 items of the largest values',
      orderWith({
        items: Array.from({ length: 100 }, () => ({
          sku: 's'.repeat(64),
          quantity: 10_000,
          unitPrice: 1_000_000,
        })),
      }),
    ],
  ];
  for (const [label, body] of odd) {
    const key = c.nonce();
    c.add('wrong shape', label, {
      bytes: c.post([key], body),
      allowed: ['created', 'VALIDATION_FAILED'],
      key,
      keyHeader: key,
    });
  }
}

function nested(kind: 'array' | 'object', depth: number): string {
  return kind === 'array'
    ? '['.repeat(depth) + ']'.repeat(depth)
    : '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
}

function deepNesting(c: CorpusBuilder) {
  for (const kind of ['array', 'object'] as const) {
    for (const depth of [31, 32, 33, 100, 1_000, 10_000, 100_000, 1_000_000]) {
      const body = nested(kind, depth);
      const allowed: Outcome[] =
        body.length > LIMIT_BYTES
          ? ['BODY_TOO_LARGE']
          : depth > MAX_DEPTH
            ? ['MALFORMED_BODY']
            : ['VALIDATION_FAILED'];
      const label = `${depth} levels of ${kind}s (${body.length} bytes)`;
      bodyCase(c, 'deep nesting', label, body, allowed);
      c.add('deep nesting', `${label}, invalid key`, {
        bytes: c.post(['""'], body),
        allowed: depth > MAX_DEPTH || body.length > LIMIT_BYTES ? allowed : KEY_REFUSED,
      });
      if (depth < 100_000) {
        // Inside an otherwise valid order: one more level.
        const inner = c.order().replace('{', `{"extra":${body},`);
        bodyCase(
          c,
          'deep nesting',
          `${label} inside an order`,
          inner,
          inner.length > LIMIT_BYTES
            ? ['BODY_TOO_LARGE']
            : depth + 1 > MAX_DEPTH
              ? ['MALFORMED_BODY']
              : ['VALIDATION_FAILED'],
        );
      }
    }
  }
}

function hugeBodies(c: CorpusBuilder) {
  const padded = (size: number) => {
    const head = c.order().replace('{', '{"pad":"');
    const filler = size - head.length - 2;
    return head.replace('"pad":"', `"pad":"${'x'.repeat(filler)}",`);
  };
  for (const size of [LIMIT_BYTES + 1, 600_000, 1024 * 1024, 2 * 1024 * 1024, 8 * 1024 * 1024]) {
    bodyCase(c, 'huge bodies', `${size} bytes`, padded(size), ['BODY_TOO_LARGE']);
    c.add('huge bodies', `${size} bytes, invalid key`, {
      bytes: c.post([c.keyOfLength(400)], padded(size)),
      allowed: ['BODY_TOO_LARGE'],
    });
    const chunked = padded(size);
    bodyCase(
      c,
      'huge bodies',
      `${size} bytes, chunked`,
      chunkedBody(chunked, 64 * 1024),
      ['BODY_TOO_LARGE'],
      {
        contentLength: 'none',
        extra: [['Transfer-Encoding', 'chunked']],
      },
    );
  }
  // At the limit exactly: read, then refused by validation for its extra property.
  bodyCase(c, 'huge bodies', `${LIMIT_BYTES} bytes (the limit)`, padded(LIMIT_BYTES), [
    'VALIDATION_FAILED',
  ]);
  // 50 MiB of spaces compressed to about 50 KiB: inflated only up to the limit.
  const bomb = gzipSync(Buffer.alloc(50 * 1024 * 1024, ' '));
  for (let variant = 0; variant < 2; variant++) {
    bodyCase(c, 'huge bodies', 'gzip bomb (50 MiB inflated)', bomb, ['BODY_TOO_LARGE'], {
      extra: [['Content-Encoding', 'gzip']],
    });
  }
  const key = c.nonce();
  c.add('huge bodies', 'gzip-compressed valid order', {
    bytes: c.post([key], gzipSync(c.order()), { extra: [['Content-Encoding', 'gzip']] }),
    allowed: ['created'],
    key,
    keyHeader: key,
  });
}

function chunkedBody(body: string | Buffer, size: number, extension = ''): Buffer {
  const bytes = Buffer.isBuffer(body) ? body : Buffer.from(body);
  const parts: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) {
    const chunk = bytes.subarray(i, i + size);
    parts.push(
      Buffer.from(`${chunk.length.toString(16)}${extension}\r\n`),
      chunk,
      Buffer.from('\r\n'),
    );
  }
  parts.push(Buffer.from('0\r\n\r\n'));
  return Buffer.concat(parts);
}

function contentTypes(c: CorpusBuilder) {
  const refused = [
    null,
    'text/plain',
    'text/json',
    'application/xml',
    'application/x-www-form-urlencoded',
    'multipart/form-data; boundary=x',
    'application/octet-stream',
    'application/jsonx',
    '',
    'json',
    '*/*',
    'application/*',
    'application/json-seq',
  ];
  for (const type of refused) {
    for (const body of [c.order(), c.order(), '{"customerId":']) {
      bodyCase(
        c,
        'content types',
        `Content-Type ${JSON.stringify(type)}`,
        body,
        ['UNSUPPORTED_MEDIA_TYPE'],
        {
          type: type === null ? null : ['Content-Type', type],
        },
      );
    }
  }
  const accepted = [
    'application/json',
    'APPLICATION/JSON',
    'Application/Json; Charset=UTF-8',
    'application/merge-patch+json',
    'application/vnd.api+json',
    'application/json;;;=',
    'application/json; foo=bar',
  ];
  for (const type of accepted) {
    for (let variant = 0; variant < 2; variant++) {
      const key = c.nonce();
      c.add('content types', `Content-Type ${type}`, {
        bytes: c.post([key], c.order(), { type: ['Content-Type', type] }),
        allowed: ['created'],
        key,
        keyHeader: key,
      });
    }
    bodyCase(
      c,
      'content types',
      `Content-Type ${type}, malformed JSON`,
      '{"a"',
      ['MALFORMED_BODY'],
      {
        type: ['Content-Type', type],
      },
    );
  }
  // No body at all: nothing to refuse; the empty object fails validation.
  for (const type of [null, 'text/plain']) {
    bodyCase(
      c,
      'content types',
      `Content-Type ${JSON.stringify(type)}, no body`,
      '',
      ['VALIDATION_FAILED'],
      {
        type: type === null ? null : ['Content-Type', type],
      },
    );
  }
}

function charsets(c: CorpusBuilder) {
  // An empty charset parameter counts as none (UTF-8).
  const accepted = ['utf-8', 'UTF-8', '"utf-8"', ''];
  const refused = ['latin1', 'iso-8859-1', 'us-ascii', 'ebcdic', 'koi8-r', 'x-unknown', 'utf8'];
  // Other UTF encodings are decoded as such: the UTF-8 bytes make no JSON in them.
  const misread = ['utf-16', 'utf-16le', 'utf-16be', 'utf-32'];
  for (const charset of accepted) {
    for (let variant = 0; variant < 2; variant++) {
      const key = c.nonce();
      c.add('charsets', `charset=${charset}`, {
        bytes: c.post([key], c.order(), {
          type: ['Content-Type', `application/json; charset=${charset}`],
        }),
        allowed: ['created'],
        key,
        keyHeader: key,
      });
    }
  }
  for (const charset of refused) {
    for (let variant = 0; variant < 2; variant++) {
      bodyCase(c, 'charsets', `charset=${charset}`, c.order(), ['UNSUPPORTED_MEDIA_TYPE'], {
        type: ['Content-Type', `application/json; charset=${charset}`],
      });
    }
  }
  for (const charset of misread) {
    for (let variant = 0; variant < 2; variant++) {
      bodyCase(c, 'charsets', `charset=${charset}`, c.order(), ['MALFORMED_BODY'], {
        type: ['Content-Type', `application/json; charset=${charset}`],
      });
    }
  }
}

function chunkedBodies(c: CorpusBuilder) {
  const TE: Header = ['Transfer-Encoding', 'chunked'];
  const creates = (label: string, body: (order: string) => Buffer | string, te: Header = TE) => {
    const key = c.nonce();
    c.add('chunked bodies', label, {
      bytes: c.post([key], body(c.order()), { contentLength: 'none', extra: [te] }),
      allowed: ['created'],
      key,
      keyHeader: key,
    });
  };
  for (let variant = 0; variant < 20; variant++) {
    const size = 1 + c.int(40);
    creates(`chunks of ${size} bytes`, (order) => chunkedBody(order, size));
  }
  for (const extension of [';a=1', ';name="quoted"', ';x', ';y=2;z']) {
    creates(`chunk extension ${extension}`, (order) => chunkedBody(order, 16, extension));
  }
  for (let variant = 0; variant < 3; variant++) {
    creates('trailer fields', (order) =>
      chunkedBody(order, 32)
        .toString('latin1')
        .replace(/0\r\n\r\n$/, '0\r\nX-Trailer: 1\r\n\r\n'),
    );
    creates('Transfer-Encoding: Chunked', (order) => chunkedBody(order, 32), [
      'Transfer-Encoding',
      'Chunked',
    ]);
  }
  const refused: [string, (order: string) => string, Header[]][] = [
    ['chunk size not hex', (order) => `zz\r\n${order}\r\n0\r\n\r\n`, [TE]],
    [
      'chunk size 0x-prefixed',
      (order) => `0x${order.length.toString(16)}\r\n${order}\r\n0\r\n\r\n`,
      [TE],
    ],
    ['chunk size negative', (order) => `-1\r\n${order}\r\n0\r\n\r\n`, [TE]],
    [
      'whitespace before a chunk extension',
      (order) => `${order.length.toString(16)} ;x=1\r\n${order}\r\n0\r\n\r\n`,
      [TE],
    ],
    [
      'chunk size overflowing 64 bits',
      (order) => `ffffffffffffffffff\r\n${order}\r\n0\r\n\r\n`,
      [TE],
    ],
    [
      'chunk data without CRLF',
      (order) => `${order.length.toString(16)}\r\n${order}0\r\n\r\n`,
      [TE],
    ],
    [
      'chunked and Content-Length',
      (order) => `${order.length.toString(16)}\r\n${order}\r\n0\r\n\r\n`,
      [TE, ['Content-Length', '5']],
    ],
    [
      'Transfer-Encoding chunked, gzip',
      (order) => `${order.length.toString(16)}\r\n${order}\r\n0\r\n\r\n`,
      [['Transfer-Encoding', 'chunked, gzip']],
    ],
    ['Transfer-Encoding identity', (order) => order, [['Transfer-Encoding', 'identity']]],
    [
      'a 20 KiB chunk extension',
      (order) => `${order.length.toString(16)};${'e'.repeat(20_000)}\r\n${order}\r\n0\r\n\r\n`,
      [TE],
    ],
  ];
  for (const [label, body, headers] of refused) {
    for (let variant = 0; variant < 2; variant++) {
      bodyCase(c, 'chunked bodies', label, body(c.order()), NODE, {
        contentLength: 'none',
        extra: headers,
      });
    }
  }
  // A chunk size covering the CRLF after it: framed fine, the body is no JSON.
  for (let variant = 0; variant < 2; variant++) {
    const order = c.order();
    bodyCase(
      c,
      'chunked bodies',
      'chunk size covering its CRLF',
      `${(order.length + 5).toString(16)}\r\n${order}\r\nabc\r\n0\r\n\r\n`,
      ['MALFORMED_BODY'],
      { contentLength: 'none', extra: [TE] },
    );
  }
  // Node frames by the final "chunked" and ignores the unknown coding before it; the body is
  // read as it is, so a plain JSON body creates its order.
  for (let variant = 0; variant < 2; variant++) {
    creates('Transfer-Encoding gzip, chunked (gzip ignored)', (order) => chunkedBody(order, 32), [
      'Transfer-Encoding',
      'gzip, chunked',
    ]);
  }
  // The last chunk never comes: the client stops sending (half-close).
  for (let variant = 0; variant < 3; variant++) {
    const order = c.order();
    const key = c.nonce();
    c.add(
      'chunked bodies',
      'no last chunk, then the client stops',
      {
        bytes: c.post([key], `${order.length.toString(16)}\r\n${order}\r\n`, {
          contentLength: 'none',
          extra: [TE],
        }),
        allowed: NODE_OR_CLOSED,
      },
      { halfClose: true },
    );
  }
  for (let variant = 0; variant < 3; variant++) {
    bodyCase(
      c,
      'chunked bodies',
      'malformed JSON, chunked',
      chunkedBody('{"customerId":"c",', 5),
      ['MALFORMED_BODY'],
      {
        contentLength: 'none',
        extra: [TE],
      },
    );
  }
}

function contentLengthMismatch(c: CorpusBuilder) {
  const withLength = (body: string, length: string, last = true) =>
    c.post([c.nonce()], body, { contentLength: 'none', extra: [['Content-Length', length]], last });
  // Longer than the body, and the client sends no more: the body never completes.
  for (const extra of [1, 10, 1000, 100_000]) {
    for (let variant = 0; variant < 3; variant++) {
      const body = c.order();
      c.add(
        'content-length mismatch',
        `Content-Length ${extra} bytes too long`,
        { bytes: withLength(body, String(body.length + extra)), allowed: NODE_OR_CLOSED },
        { halfClose: true },
      );
    }
  }
  // Shorter than the body: the rest is read as a next request, which Node refuses.
  for (const missing of [1, 10, 50]) {
    for (let variant = 0; variant < 3; variant++) {
      const body = c.order();
      c.add(
        'content-length mismatch',
        `Content-Length ${missing} bytes short`,
        {
          bytes: withLength(body, String(body.length - missing), false),
          allowed: ['MALFORMED_BODY', 'node-4xx', 'closed'],
        },
        { mayCloseEarly: true },
      );
    }
  }
  for (let variant = 0; variant < 3; variant++) {
    c.add(
      'content-length mismatch',
      'Content-Length 0 with a body',
      {
        bytes: withLength(c.order(), '0', false),
        allowed: ['VALIDATION_FAILED', 'node-4xx', 'closed'],
      },
      { mayCloseEarly: true },
    );
  }
  for (const length of [
    'abc',
    '-1',
    '1.5',
    '+12',
    '0x10',
    '1e3',
    '99999999999999999999',
    '',
    '12 34',
  ]) {
    for (let variant = 0; variant < 2; variant++) {
      c.add('content-length mismatch', `Content-Length ${JSON.stringify(length)}`, {
        bytes: withLength(c.order(), length),
        allowed: NODE,
      });
    }
  }
}

function httpVersions(c: CorpusBuilder) {
  const creates = (label: string, version: string, headers: Header[]) => {
    for (let variant = 0; variant < 3; variant++) {
      const key = c.nonce();
      c.add('HTTP versions', label, {
        bytes: c.post([key], c.order(), { version, headers }),
        allowed: ['created'],
        key,
        keyHeader: key,
      });
    }
  };
  creates('HTTP/1.0', 'HTTP/1.0', [HOST]);
  creates('HTTP/1.0 without Host', 'HTTP/1.0', []);
  // Node's parser reads any single-digit version; the server answers as HTTP/1.1.
  creates('HTTP/0.9 request line', 'HTTP/0.9', [HOST]);
  creates('HTTP/2.0 request line', 'HTTP/2.0', [HOST]);
  const refused: [string, (body: string) => Buffer][] = [
    ['HTTP/1.1 without Host', (body) => c.post([c.nonce()], body, { headers: [] })],
    ['HTTP/3.0', (body) => c.post([c.nonce()], body, { version: 'HTTP/3.0' })],
    ['HTTP/1.2', (body) => c.post([c.nonce()], body, { version: 'HTTP/1.2' })],
    ['HTTP/11', (body) => c.post([c.nonce()], body, { version: 'HTTP/11' })],
    ['lower-case http/1.1', (body) => c.post([c.nonce()], body, { version: 'http/1.1' })],
    ['no version', (body) => c.post([c.nonce()], body, { version: '' })],
    ['lower-case method', (body) => c.post([c.nonce()], body, { method: 'post' })],
    ['unknown method', (body) => c.post([c.nonce()], body, { method: 'ORDER' })],
    ['tab in the request line', (body) => c.post([c.nonce()], body, { path: '/orders\tx' })],
    ['space in the path', (body) => c.post([c.nonce()], body, { path: '/or ders' })],
  ];
  for (const [label, make] of refused) {
    for (let variant = 0; variant < 2; variant++) {
      c.add('HTTP versions', label, { bytes: make(c.order()), allowed: NODE_OR_CLOSED });
    }
  }
  for (let variant = 0; variant < 3; variant++) {
    const first = c.nonce();
    const second = c.nonce();
    c.cases.push({
      category: 'HTTP versions',
      label: 'HTTP/1.0 keep-alive, two requests',
      requests: [
        {
          bytes: c.post([first], c.order(), { version: 'HTTP/1.0', last: false }),
          allowed: ['created'],
          key: first,
          keyHeader: first,
        },
        {
          bytes: c.post([second], c.order(), { version: 'HTTP/1.0' }),
          allowed: ['created'],
          key: second,
          keyHeader: second,
        },
      ],
    });
  }
}

function pipelined(c: CorpusBuilder) {
  for (let connection = 0; connection < 40; connection++) {
    const count = 3 + c.int(6);
    // A third of the connections end in bytes that are no request: Node answers 400 and destroys
    // the connection, dropping the answers still pending before it (their handlers may have run:
    // the replay phase sends those keys again).
    const garbage = c.int(3) === 0;
    const requests: CorpusRequest[] = [];
    const bodies = new Map<string, string>();
    for (let i = 0; i < count; i++) {
      const last = i === count - 1 && !garbage;
      const kind = c.pick([
        'new',
        'new',
        'duplicate',
        'invalid key',
        'missing key',
        'malformed JSON',
        'wrong shape',
      ] as const);
      if (kind === 'new' || (kind === 'duplicate' && bodies.size === 0)) {
        const key = c.nonce();
        const body = c.order();
        bodies.set(key, body);
        requests.push({
          bytes: c.post([key], body, { last }),
          allowed: ['created'],
          key,
          keyHeader: key,
          body,
        });
      } else if (kind === 'duplicate') {
        // Node runs pipelined requests concurrently: the first may still be in flight.
        const key = c.pick([...bodies.keys()]);
        requests.push({
          bytes: c.post([key], bodies.get(key)!, { last }),
          allowed: ['replayed', 'IDEMPOTENCY_REQUEST_IN_PROGRESS'],
          key,
          keyHeader: key,
          body: bodies.get(key),
        });
      } else if (kind === 'invalid key') {
        requests.push({
          bytes: c.post([`"${c.nonce()}\\x"`], c.order(), { last }),
          allowed: KEY_REFUSED,
        });
      } else if (kind === 'missing key') {
        requests.push({
          bytes: c.post([], c.order(), { last }),
          allowed: ['IDEMPOTENCY_KEY_MISSING'],
        });
      } else if (kind === 'malformed JSON') {
        requests.push({
          bytes: c.post([c.nonce()], '{"customerId"', { last }),
          allowed: ['MALFORMED_BODY'],
        });
      } else {
        requests.push({
          bytes: c.post([c.nonce()], '{"customerId":7,"items":[]}', { last }),
          allowed: ['VALIDATION_FAILED'],
        });
      }
    }
    if (garbage) {
      for (const request of requests) {
        request.allowed = [...request.allowed, 'node-4xx'];
      }
      requests.push({
        bytes: Buffer.from(`GARBAGE ${c.nonce()}\r\n\r\n`),
        allowed: NODE_OR_CLOSED,
      });
    }
    c.cases.push({
      category: 'pipelined',
      label: `${requests.length} requests on one connection${garbage ? ', then garbage' : ''}`,
      requests,
      mayCloseEarly: garbage,
    });
  }
}

function valid(c: CorpusBuilder) {
  for (let variant = 0; variant < 40; variant++) {
    const key = `${c.nonce()}-${'0123456789abcdef'.slice(c.int(8))}`;
    c.creates('valid', 'bare key', key, key);
    const quoted = c.nonce();
    c.creates('valid', 'quoted key', quote(quoted), quoted);
  }
  for (let variant = 0; variant < 20; variant++) {
    let key = c.nonce();
    const length = c.int(200);
    for (let i = 0; i < length; i++) {
      key += PLAIN[c.int(PLAIN.length)];
    }
    c.creates('valid', 'random printable key', key, key);
  }
  const punctuation = `${c.nonce()}!#$%&'()*+,-./:;<=>?@[]^_\`{|}~`;
  c.creates('valid', 'every punctuation character', punctuation, punctuation);
}

/**
 * The second phase: every fourth key that created an order is sent again with the same body
 * (a replay naming the same order, also with the key in the other form: bare and quoted), and
 * every seventh with another body (422, the key reused).
 */
export function replayCorpus(
  firstPhase: readonly CorpusCase[],
  runId: string,
  lostAnswers: readonly CorpusRequest[],
): CorpusCase[] {
  const c = new CorpusBuilder(`${runId}r`, 0xbeef);
  // A valid request whose answer was lost (its connection destroyed): sent again, it replays the
  // order its handler created, or creates it if the handler never ran. Never a second order.
  for (const request of lostAnswers) {
    c.cases.push({
      category: 'replays',
      label: 'again, after its answer was lost',
      requests: [
        {
          bytes: c.post([request.keyHeader!], request.body!),
          allowed: ['created', 'replayed'],
          key: request.key,
        },
      ],
    });
  }
  const created = firstPhase.flatMap((testCase) =>
    testCase.requests.length === 1 &&
    testCase.requests[0].keyHeader !== undefined &&
    testCase.requests[0].allowed.join() === 'created'
      ? [testCase.requests[0]]
      : [],
  );
  created.forEach((request, index) => {
    if (index % 4 === 0) {
      c.cases.push({
        category: 'replays',
        label: 'the same request again',
        requests: [{ bytes: request.bytes, allowed: ['replayed'], key: request.key }],
      });
    }
    const key = request.key!;
    if (index % 4 === 1 && request.body !== undefined && key.trim() === key) {
      // The same key in the other form: quoted if it was sent bare, bare if it was quoted.
      const other = request.keyHeader!.trimStart().startsWith('"') ? key : quote(key);
      if (!key.startsWith('"') || other !== key) {
        c.cases.push({
          category: 'replays',
          label: 'the same key in the other form (bare / quoted)',
          requests: [{ bytes: c.post([other], request.body), allowed: ['replayed'], key }],
        });
      }
    }
    if (index % 7 === 3) {
      c.cases.push({
        category: 'replays',
        label: 'the same key, another body',
        requests: [
          {
            bytes: c.post([request.keyHeader!], c.order()),
            allowed: ['IDEMPOTENCY_KEY_REUSED'],
            key,
          },
        ],
      });
    }
  });
  return c.cases;
}
