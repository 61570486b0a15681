import { randomBytes } from 'node:crypto';
import { decodeBody, encodeBody } from './body-codec';
import { IdempotencyDecryptionError, IdempotencyResponseCipher } from './idempotency.encryption';
import type { StoredResponse } from '../stores/idempotency-store';

const KEY_A = randomBytes(32);
const KEY_B = randomBytes(32);
const STORAGE_KEY = 'a'.repeat(64);
const MARKER = 'jane.doe@example.com';

const response = (): StoredResponse => ({
  status: 201,
  headers: { location: `/users/${MARKER}`, 'content-type': 'application/json; charset=utf-8' },
  body: encodeBody({
    email: MARKER,
    at: new Date('2026-01-02T03:04:05.000Z'),
    avatar: Buffer.from(MARKER),
  }),
});

/** Replaces the `index`th `:`-separated part of the envelope (3 iv, 4 tag, 5 ciphertext). */
const alter = (stored: StoredResponse, index: number): StoredResponse => {
  const parts = stored.body.split(':');
  const bytes = Buffer.from(parts[index], 'base64url');
  bytes[0] ^= 1;
  parts[index] = bytes.toString('base64url');
  return { ...stored, body: parts.join(':') };
};

describe('IdempotencyResponseCipher', () => {
  const cipher = new IdempotencyResponseCipher({ keyId: 'a', keys: { a: KEY_A } });

  describe('round trip', () => {
    it('gives back the headers and the body, Date and Buffer values included', () => {
      const original = response();
      const decrypted = cipher.decrypt(cipher.encrypt(original, STORAGE_KEY), STORAGE_KEY);
      expect(decrypted).toEqual(original);
      expect(decodeBody(decrypted.body)).toEqual({
        email: MARKER,
        at: new Date('2026-01-02T03:04:05.000Z'),
        avatar: Buffer.from(MARKER),
      });
    });

    it('keeps the status and the error flag in clear and hides headers and body', () => {
      const stored = cipher.encrypt({ ...response(), status: 404, error: true }, STORAGE_KEY);
      expect(stored.status).toBe(404);
      expect(stored.error).toBe(true);
      expect(stored.headers).toEqual({});
      expect(stored.body).toMatch(/^enc:v1:a:[A-Za-z0-9_-]{16}:[A-Za-z0-9_-]{22}:[A-Za-z0-9_-]+$/);
      const everything = JSON.stringify(stored);
      expect(everything).not.toContain(MARKER);
      expect(everything).not.toContain(Buffer.from(MARKER).toString('base64'));
      expect(() => JSON.parse(stored.body)).toThrow();
      expect(cipher.decrypt(stored, STORAGE_KEY)).toEqual({
        ...response(),
        status: 404,
        error: true,
      });
    });

    it('uses a fresh IV per record: the same response encrypts differently each time', () => {
      const first = cipher.encrypt(response(), STORAGE_KEY).body;
      const second = cipher.encrypt(response(), STORAGE_KEY).body;
      expect(first.split(':')[3]).not.toBe(second.split(':')[3]);
      expect(first).not.toBe(second);
    });

    it('returns a record stored in clear (before encryption was on) as it is', () => {
      const clear = response();
      expect(cipher.decrypt(clear, STORAGE_KEY)).toBe(clear);
      const text = { status: 200, headers: {}, body: encodeBody('enc:v1:looks like it') };
      expect(cipher.decrypt(text, STORAGE_KEY)).toBe(text);
    });
  });

  describe('records that must not decrypt', () => {
    const stored = cipher.encrypt(response(), STORAGE_KEY);
    const fails = (record: StoredResponse, storageKey = STORAGE_KEY, by = cipher) => {
      let thrown: unknown;
      try {
        by.decrypt(record, storageKey);
      } catch (error) {
        thrown = error;
      }
      expect(thrown).toBeInstanceOf(IdempotencyDecryptionError);
      return thrown as IdempotencyDecryptionError;
    };

    it('names an unknown key id', () => {
      const other = new IdempotencyResponseCipher({ keyId: 'b', keys: { b: KEY_B } });
      const error = fails(stored, STORAGE_KEY, other);
      expect(error.keyId).toBe('a');
      expect(error.message).toContain('"a" is not in encryption.keys');
    });

    it('rejects a key id that points at another key', () => {
      const impostor = new IdempotencyResponseCipher({ keyId: 'a', keys: { a: KEY_B } });
      expect(fails(stored, STORAGE_KEY, impostor).message).toContain('authentication failed');
    });

    it.each([
      ['the IV', 3],
      ['the tag', 4],
      ['the ciphertext', 5],
    ])('rejects the record when %s is altered', (_name, index) => {
      expect(fails(alter(stored, index)).message).toContain('authentication failed');
    });

    it('rejects a ciphertext copied onto another record (the storage key is authenticated)', () => {
      fails(stored, 'b'.repeat(64));
    });

    it('rejects a record whose clear status or error flag was changed', () => {
      fails({ ...stored, status: 200 });
      fails({ ...stored, error: true });
    });

    it('rejects a truncated tag, a malformed envelope and an unknown version', () => {
      const parts = stored.body.split(':');
      parts[4] = parts[4].slice(0, 10);
      expect(fails({ ...stored, body: parts.join(':') }).message).toContain('malformed');
      fails({ ...stored, body: `${stored.body}:extra` });
      fails({ ...stored, body: stored.body.replace('enc:v1:', 'enc:v2:') });
      fails({ ...stored, body: stored.body.replace(/:[^:]+$/, ':not*base64') });
    });
  });

  describe('rotation', () => {
    it('decrypts a record written under key A after keyId moves to B, while A stays in keys', () => {
      const before = new IdempotencyResponseCipher({ keyId: 'a', keys: { a: KEY_A } });
      const during = new IdempotencyResponseCipher({ keyId: 'b', keys: { a: KEY_A, b: KEY_B } });
      const after = new IdempotencyResponseCipher({ keyId: 'b', keys: { b: KEY_B } });
      const old = before.encrypt(response(), STORAGE_KEY);
      const fresh = during.encrypt(response(), STORAGE_KEY);
      expect(fresh.body.startsWith('enc:v1:b:')).toBe(true);
      expect(during.decrypt(old, STORAGE_KEY)).toEqual(response());
      expect(during.decrypt(fresh, STORAGE_KEY)).toEqual(response());
      expect(after.decrypt(fresh, STORAGE_KEY)).toEqual(response());
      expect(() => after.decrypt(old, STORAGE_KEY)).toThrow(IdempotencyDecryptionError);
    });
  });

  describe('configuration', () => {
    it.each([
      ['a Buffer', KEY_A],
      ['a Uint8Array', new Uint8Array(KEY_A)],
      ['hex', KEY_A.toString('hex')],
      ['upper-case hex', KEY_A.toString('hex').toUpperCase()],
      ['base64', KEY_A.toString('base64')],
      ['base64 without padding', KEY_A.toString('base64').replace(/=$/, '')],
      ['base64url', KEY_A.toString('base64url')],
      ['base64 with a trailing newline', `${KEY_A.toString('base64')}\n`],
    ])('accepts a key given as %s, equal to the same bytes as a Buffer', (_name, key) => {
      const given = new IdempotencyResponseCipher({ keyId: 'k', keys: { k: key } });
      const buffer = new IdempotencyResponseCipher({ keyId: 'k', keys: { k: KEY_A } });
      expect(buffer.decrypt(given.encrypt(response(), STORAGE_KEY), STORAGE_KEY)).toEqual(
        response(),
      );
    });

    it('does not keep a reference to a Buffer the caller may later change', () => {
      const key = Buffer.from(KEY_A);
      const cipherOfCopy = new IdempotencyResponseCipher({ keyId: 'k', keys: { k: key } });
      const stored = cipherOfCopy.encrypt(response(), STORAGE_KEY);
      key.fill(0);
      expect(cipherOfCopy.decrypt(stored, STORAGE_KEY)).toEqual(response());
    });

    const secret = 'c2VjcmV0LXRoYXQtaXMtbm90LTMyLWJ5dGVz';
    it.each([
      ['no options', null, 'option "encryption" must be an object'],
      ['no keys', { keyId: 'k', keys: {} }, 'option "encryption.keys" must map at least one'],
      [
        'a 16-byte key',
        { keyId: 'k', keys: { k: randomBytes(16) } },
        'option "encryption.keys.k" is a 16-byte buffer; a key is 32 bytes',
      ],
      [
        'a short base64 key',
        { keyId: 'k', keys: { k: secret } },
        `option "encryption.keys.k" is a string of ${secret.length} characters`,
      ],
      [
        'hex of 16 bytes',
        { keyId: 'k', keys: { k: randomBytes(16).toString('hex') } },
        'openssl rand -base64 32',
      ],
      ['a number', { keyId: 'k', keys: { k: 42 } }, 'option "encryption.keys.k" is number'],
      [
        'a key id with a colon',
        { keyId: 'k:1', keys: { 'k:1': KEY_A } },
        'option "encryption.keys" has the key id "k:1"',
      ],
      [
        'keyId not in keys',
        { keyId: 'new', keys: { old: KEY_A } },
        'option "encryption.keyId" is "new", which is not a key id of encryption.keys (old)',
      ],
      [
        'no keyId',
        { keys: { old: KEY_A } },
        'option "encryption.keyId" is undefined, which is not a key id',
      ],
    ])('throws naming the option and the fix for %s', (_name, options, message) => {
      expect(() => new IdempotencyResponseCipher(options as never)).toThrow(message);
    });

    it('never puts a rejected key into its message', () => {
      expect(() => new IdempotencyResponseCipher({ keyId: 'k', keys: { k: secret } })).toThrow(
        expect.objectContaining({ message: expect.not.stringContaining(secret) }),
      );
    });
  });
});
