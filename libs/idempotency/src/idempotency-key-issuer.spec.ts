import { randomBytes, randomUUID } from 'node:crypto';
import { parseIdempotencyKey, validateIdempotencyKey } from './engine/idempotency-key';
import { IdempotencyErrorCode } from './engine/idempotency-rejection';
import { IdempotencyKeyIssuer, type IssuedKeyVerification } from './idempotency-key-issuer';
import type { IdempotencyIssuedKeysOptions } from './idempotency.options';

const OLD = { id: '2026-01', secret: randomBytes(32) };
const NEW = { id: '2026-02', secret: randomBytes(32).toString('base64') };
const T0 = Date.parse('2026-03-01T12:00:00.000Z');

let clock = T0;
const issuerOf = (options: Partial<IdempotencyIssuedKeysOptions> = {}) =>
  new IdempotencyKeyIssuer({ issuedKeys: { secrets: [OLD], now: () => clock, ...options } });

/** The key with its `index`th `.`-separated part (2 payload, 3 mac) changed in its first byte. */
const alter = (key: string, index: number): string => {
  const parts = key.split('.');
  const bytes = Buffer.from(parts[index], 'base64url');
  bytes[0] ^= 1;
  parts[index] = bytes.toString('base64url');
  return parts.join('.');
};

const rejection = (verification: IssuedKeyVerification) => {
  expect(verification.valid).toBe(false);
  return verification.valid ? undefined : verification.rejection;
};

beforeEach(() => {
  clock = T0;
});

describe('IdempotencyKeyIssuer', () => {
  describe('issue()', () => {
    it('issues a key that verifies, fits the key rules and needs no quoting', () => {
      const issuer = issuerOf();
      const { key, expiresAt } = issuer.issue();
      expect(key).toMatch(/^ik1\.2026-01\.[A-Za-z0-9_-]{51}\.[A-Za-z0-9_-]{43}$/);
      expect(key.length).toBeLessThanOrEqual(132);
      expect(() => validateIdempotencyKey(key)).not.toThrow();
      expect(parseIdempotencyKey(key)).toBe(key);
      expect(parseIdempotencyKey(`"${key}"`)).toBe(key);
      expect(expiresAt).toEqual(new Date(T0 + 60 * 60 * 1000));
      expect(issuer.verify(key)).toEqual({ valid: true, keyId: '2026-01', expiresAt });
    });

    it('issues a different key every time, for the same scope and instant', () => {
      const issuer = issuerOf();
      const keys = new Set(Array.from({ length: 100 }, () => issuer.issue().key));
      expect(keys.size).toBe(100);
    });

    it('takes the ttl from issuedKeys.ttl (ms or a duration string), or from issue({ ttl })', () => {
      expect(issuerOf({ ttl: '15m' }).issue().expiresAt).toEqual(new Date(T0 + 15 * 60_000));
      expect(issuerOf({ ttl: 5_000 }).issue().expiresAt).toEqual(new Date(T0 + 5_000));
      expect(issuerOf({ ttl: '15m' }).issue({ ttl: '2h' }).expiresAt).toEqual(
        new Date(T0 + 2 * 3_600_000),
      );
    });

    it('refuses an invalid scope or ttl, naming it', () => {
      const issuer = issuerOf();
      expect(() => issuer.issue({ scope: '' })).toThrow(
        'option "scope of IdempotencyKeyIssuer.issue()" must be a scope name of 1 to 100 printable ASCII characters',
      );
      expect(() => issuer.issue({ scope: 'caf\u00e9' })).toThrow('printable ASCII');
      expect(() => issuer.issue({ ttl: 0 })).toThrow(
        'option "ttl of IdempotencyKeyIssuer.issue()" must be a positive number of milliseconds',
      );
    });
  });

  describe('verify()', () => {
    it('refuses a key it did not issue (a client UUID)', () => {
      expect(rejection(issuerOf().verify(randomUUID()))).toEqual({
        code: IdempotencyErrorCode.KeyNotIssued,
        detail: 'This idempotency key was not issued by this server; request one.',
      });
    });

    it('refuses a forged signature and a tampered payload', () => {
      const issuer = issuerOf();
      const { key } = issuer.issue();
      for (const altered of [alter(key, 3), alter(key, 2)]) {
        expect(altered).not.toBe(key);
        expect(rejection(issuer.verify(altered))).toEqual({
          code: IdempotencyErrorCode.KeyNotIssued,
          detail: expect.stringContaining('signature of this idempotency key does not match'),
        });
      }
    });

    it('refuses a key signed by another secret under the same key id', () => {
      const key = new IdempotencyKeyIssuer({
        issuedKeys: { secrets: [{ id: OLD.id, secret: randomBytes(32) }] },
      }).issue().key;
      expect(rejection(issuerOf().verify(key))?.code).toBe(IdempotencyErrorCode.KeyNotIssued);
    });

    it('refuses a truncated or malformed key', () => {
      const issuer = issuerOf();
      const { key } = issuer.issue();
      const parts = key.split('.');
      for (const bad of [
        key.slice(0, -1),
        key.slice(0, -4),
        parts.slice(0, 3).join('.'),
        `${key}.`,
        `${parts[0]}.${parts[1]}.${parts[2].slice(0, -2)}.${parts[3]}`,
        `${parts[0]}.${parts[1]}.${parts[2]}=.${parts[3]}`,
        `ik2.${parts.slice(1).join('.')}`,
        '...',
      ]) {
        expect(rejection(issuer.verify(bad))?.code).toBe(IdempotencyErrorCode.KeyNotIssued);
      }
      expect(issuer.verify(key).valid).toBe(true);
    });

    it('accepts one spelling of a key: a non-canonical base64url variant is refused', () => {
      const issuer = issuerOf();
      const { key } = issuer.issue();
      const parts = key.split('.');
      // 43 characters carry 32 bytes and 2 unused bits; setting them decodes to the same bytes.
      const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
      const last = alphabet.indexOf(parts[3].at(-1)!);
      const variant = `${parts.slice(0, 3).join('.')}.${parts[3].slice(0, -1)}${alphabet[last ^ 1]}`;
      expect(Buffer.from(variant.split('.')[3], 'base64url')).toEqual(
        Buffer.from(parts[3], 'base64url'),
      );
      expect(rejection(issuer.verify(variant))).toEqual({
        code: IdempotencyErrorCode.KeyNotIssued,
        detail: 'This idempotency key is malformed or truncated; request a new one.',
      });
    });

    it('refuses a key issued for another scope, both ways', () => {
      const issuer = issuerOf();
      const checkout = issuer.issue({ scope: 'checkout' }).key;
      const plain = issuer.issue().key;
      expect(issuer.verify(checkout, 'checkout').valid).toBe(true);
      for (const verification of [
        issuer.verify(checkout, 'refunds'),
        issuer.verify(checkout),
        issuer.verify(plain, 'checkout'),
      ]) {
        expect(rejection(verification)).toEqual({
          code: IdempotencyErrorCode.KeyNotIssued,
          detail: expect.stringContaining('issued for another operation'),
        });
      }
    });

    it('answers expired from the expiry on, never before, and only for a genuine key', () => {
      const issuer = issuerOf({ ttl: '10m' });
      const { key, expiresAt } = issuer.issue();
      clock = expiresAt.getTime() - 1;
      expect(issuer.verify(key).valid).toBe(true);
      clock = expiresAt.getTime();
      expect(rejection(issuer.verify(key))).toEqual({
        code: IdempotencyErrorCode.KeyExpired,
        expiredAt: expiresAt,
      });
      // A forged key that says it expired is still "not issued".
      expect(rejection(issuer.verify(alter(key, 3)))?.code).toBe(IdempotencyErrorCode.KeyNotIssued);
    });

    it('rotates: the first secret signs, every listed one verifies, a removed one does not', () => {
      const old = issuerOf().issue().key;
      const rotated = issuerOf({ secrets: [NEW, OLD] });
      expect(rotated.verify(old)).toMatchObject({ valid: true, keyId: '2026-01' });
      const fresh = rotated.issue().key;
      expect(fresh.startsWith('ik1.2026-02.')).toBe(true);
      expect(rotated.verify(fresh)).toMatchObject({ valid: true, keyId: '2026-02' });

      const retired = issuerOf({ secrets: [NEW] });
      expect(retired.verify(fresh).valid).toBe(true);
      expect(rejection(retired.verify(old))).toEqual({
        code: IdempotencyErrorCode.KeyNotIssued,
        detail: expect.stringContaining('key id this server does not accept'),
      });
    });
  });

  describe('configuration', () => {
    it.each([
      ['no secrets', { secrets: [] }, 'option "issuedKeys.secrets" must list at least one'],
      [
        'a short secret',
        { secrets: [{ id: 'k1', secret: randomBytes(16) }] },
        'option "issuedKeys.secrets[0].secret" is 16 bytes; a secret is at least 32 bytes',
      ],
      [
        'a short string secret',
        { secrets: [{ id: 'k1', secret: 'hunter2-hunter2' }] },
        'option "issuedKeys.secrets[0].secret" is 15 bytes',
      ],
      [
        'a secret of the wrong type',
        { secrets: [{ id: 'k1', secret: 42 }] },
        'option "issuedKeys.secrets[0].secret" is number',
      ],
      [
        'a key id with a dot',
        { secrets: [{ id: 'k.1', secret: randomBytes(32) }] },
        'option "issuedKeys.secrets[0].id" is "k.1"; key ids are 1 to 32 letters, digits, "_" or "-"',
      ],
      [
        'a repeated key id',
        { secrets: [OLD, { id: OLD.id, secret: randomBytes(32) }] },
        'option "issuedKeys.secrets[1].id" repeats "2026-01"',
      ],
      [
        'a bad ttl',
        { secrets: [OLD], ttl: 'soon' },
        'option "issuedKeys.ttl" must be a positive number of milliseconds',
      ],
      ['a bad clock', { secrets: [OLD], now: 5 }, 'option "issuedKeys.now" must be a function'],
    ])('throws on %s, naming the option', (_name, issuedKeys, message) => {
      expect(
        () =>
          new IdempotencyKeyIssuer({
            issuedKeys: issuedKeys as unknown as IdempotencyIssuedKeysOptions,
          }),
      ).toThrow(message);
    });

    it('never echoes a secret in its error', () => {
      const secret = 'not-long-enough-secret';
      expect(
        () => new IdempotencyKeyIssuer({ issuedKeys: { secrets: [{ id: 'k1', secret }] } }),
      ).toThrow(expect.objectContaining({ message: expect.not.stringContaining(secret) }));
    });

    it('without issuedKeys, is disabled and says how to configure it when used', () => {
      const issuer = new IdempotencyKeyIssuer({});
      expect(issuer.enabled).toBe(false);
      expect(() => issuer.issue()).toThrow(
        'IdempotencyKeyIssuer.issue() needs the module option "issuedKeys"',
      );
      expect(() => issuer.verify('abc')).toThrow(
        'IdempotencyKeyIssuer.verify() needs the module option "issuedKeys"',
      );
    });
  });
});
