import { hash } from 'node:crypto';
import stringify from 'safe-stable-stringify';

/**
 * The storage key: SHA-256 over length-prefixed parts (prefix, scope parts, client key), so no
 * client input reaches a Redis key or SQL text, and no two part lists collide.
 */
export function storageKey(parts: readonly string[]): string {
  let input = '';
  for (const part of parts) {
    input += `${Buffer.byteLength(part)}:${part}`;
  }
  // One-shot hash of the joined parts: the same digest as updating a Hash part by part, without
  // allocating a Hash object twice per request (this runs for the key and the fingerprint).
  return hash('sha256', input, 'hex');
}

/** Prefix of every storage key; a new version would start a new key space. */
const KEY_PREFIX = 'nestjs-idempotency:v1';

/** The storage key of a client key within its scope parts. */
export function storageKeyOf(scope: readonly string[], key: string): string {
  return storageKey([KEY_PREFIX, ...scope, key]);
}

/**
 * The default fingerprint: SHA-256 over the verb, the route template, the path parameters, and
 * the canonical JSON of the body (object keys sorted, so `{a,b}` and `{b,a}` agree) and of the
 * query. Parameters are hashed only when the route has some, so a route without any keeps the
 * fingerprint of earlier versions.
 */
export function requestFingerprint(input: {
  method: string;
  route: string;
  params?: unknown;
  body: unknown;
  query: unknown;
}): string {
  const parts = [
    input.method.toUpperCase(),
    input.route,
    canonical(input.body),
    canonical(input.query),
  ];
  if (hasEntries(input.params)) {
    parts.push(canonical(input.params));
  }
  return storageKey(parts);
}

/** The fingerprint of an explicit payload (`IdempotencyService.run()`). */
export function payloadFingerprint(payload: unknown): string {
  return storageKey(['payload', canonical(payload)]);
}

/**
 * The default fingerprint of a GraphQL mutation: the field (`Mutation.placeOrder`) and the
 * canonical JSON of its arguments (object keys sorted).
 */
export function fieldFingerprint(field: string, args: unknown): string {
  return storageKey(['graphql', field, canonical(args)]);
}

/**
 * The default fingerprint of a microservice message: SHA-256 over its pattern (as the handler
 * declares it, an object pattern as canonical JSON) and the canonical JSON of its data.
 */
export function messageFingerprint(pattern: string, data: unknown): string {
  return storageKey(['rpc', pattern, canonical(data)]);
}

/** Canonical JSON (object keys sorted) of a pattern that is not a string. */
export function canonicalPattern(pattern: unknown): string {
  return typeof pattern === 'string' ? pattern : (stringify(pattern) ?? String(pattern));
}

function hasEntries(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) {
    return false;
  }
  for (const _key in value) {
    return true;
  }
  return false;
}

function isEmptyPlainObject(value: unknown): boolean {
  if (typeof value !== 'object' || value === null || hasEntries(value)) {
    return false;
  }
  const prototype = Object.getPrototypeOf(value) as unknown;
  return prototype === Object.prototype || prototype === null;
}

function canonical(value: unknown): string {
  if (value === undefined || value === null) {
    return '';
  }
  if (Buffer.isBuffer(value)) {
    return `b:${value.toString('base64')}`;
  }
  if (typeof value === 'string') {
    return `s:${value}`;
  }
  // An empty plain object (the query of most POSTs) serializes as `{}` whatever the serializer.
  if (isEmptyPlainObject(value)) {
    return 'j:{}';
  }
  return `j:${stringify(value) ?? ''}`;
}
