/** Injection token of the module options (`IdempotencyModuleOptions`). */
export const IDEMPOTENCY_MODULE_OPTIONS = Symbol('IDEMPOTENCY_MODULE_OPTIONS');

/** Default request header carrying the client's key (draft-ietf-httpapi-idempotency-key-header). */
export const DEFAULT_IDEMPOTENCY_HEADER = 'Idempotency-Key';

/** Header set to `true` on every replayed response (and absent on the first one). */
export const IDEMPOTENT_REPLAYED_HEADER = 'Idempotent-Replayed';

/** Response headers replayed by default, in lower case. */
export const DEFAULT_REPLAY_HEADERS: readonly string[] = [
  'location',
  'content-type',
  'content-location',
  'content-language',
  'etag',
  'last-modified',
];

/** Headers never stored or replayed, whatever `replayHeaders` says: credentials and hop-by-hop. */
export const NEVER_STORED_HEADERS: ReadonlySet<string> = new Set([
  'set-cookie',
  'authorization',
  'proxy-authorization',
  'cookie',
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'content-length',
  'date',
]);

/** Media type of every error answer of the library (RFC 9457). */
export const PROBLEM_CONTENT_TYPE = 'application/problem+json';
