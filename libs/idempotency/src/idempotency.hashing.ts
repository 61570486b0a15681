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

/**
 * The default fingerprint: SHA-256 over the verb, the route template, the canonical JSON of the
 * body (object keys sorted, so `{a,b}` and `{b,a}` agree) and of the query.
 */
export function requestFingerprint(input: {
  method: string;
  route: string;
  body: unknown;
  query: unknown;
}): string {
  return storageKey([
    input.method.toUpperCase(),
    input.route,
    canonical(input.body),
    canonical(input.query),
  ]);
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
  return `j:${stringify(value) ?? ''}`;
}
