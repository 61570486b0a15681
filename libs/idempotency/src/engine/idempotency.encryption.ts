import {
  createCipheriv,
  createDecipheriv,
  createSecretKey,
  type KeyObject,
  randomBytes,
} from 'node:crypto';
import type { IdempotencyEncryptionOptions } from '../idempotency.options';
import type { StoredResponse } from '../stores/idempotency-store';

/**
 * The stored body of an encrypted record starts with this. The library's tagged JSON body never
 * starts with `e`, so a body without the prefix is a record stored in clear (before encryption was
 * turned on) and replays as it is.
 */
export const ENCRYPTED_BODY_PREFIX = 'enc:';
const V1 = 'enc:v1:';
const ALGORITHM = 'aes-256-gcm';
const IV_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const KEY_ID = /^[A-Za-z0-9._-]{1,64}$/;
const HEX_KEY = /^[0-9a-fA-F]{64}$/;
const BASE64_KEY = /^(?:[A-Za-z0-9+/]{43}|[A-Za-z0-9_-]{43})=?$/;
const BASE64URL = /^[A-Za-z0-9_-]*$/;

/** A stored record that cannot be decrypted: unknown key id, altered, or another key. */
export class IdempotencyDecryptionError extends Error {
  constructor(
    message: string,
    /** Key id named by the record, when it could be read. */
    readonly keyId?: string,
  ) {
    super(message);
    this.name = 'IdempotencyDecryptionError';
  }
}

/**
 * Encrypts and decrypts stored responses with AES-256-GCM: a fresh random 12-byte IV per record,
 * a 16-byte tag, and as additional authenticated data the storage key, the key id, the status and
 * the error flag, so a ciphertext copied onto another record, or a record whose clear status was
 * changed, does not decrypt.
 *
 * The encrypted form keeps `status` (and `error`) in clear, sets `headers` to `{}` and `body` to
 * `enc:v1:<keyId>:<iv>:<tag>:<ciphertext>` (base64url) of the JSON `{ headers, body }`.
 *
 * The constructor validates the options and throws, naming the option and the fix, when they are
 * wrong; the interceptor builds it at bootstrap.
 */
export class IdempotencyResponseCipher {
  private readonly keyId: string;
  private readonly keys = new Map<string, KeyObject>();

  constructor(options: IdempotencyEncryptionOptions) {
    if (typeof options !== 'object' || options === null) {
      throw configError('encryption', 'must be an object { keyId, keys }');
    }
    const { keyId, keys } = options;
    if (typeof keys !== 'object' || keys === null || Object.keys(keys).length === 0) {
      throw configError(
        'encryption.keys',
        'must map at least one key id to a 32-byte key, e.g. { k1: randomBytes(32) }',
      );
    }
    for (const [id, key] of Object.entries(keys)) {
      if (!KEY_ID.test(id)) {
        throw configError(
          'encryption.keys',
          `has the key id ${JSON.stringify(id)}; key ids are 1 to 64 letters, digits, ".", "_" or "-" (they are written in clear into every record)`,
        );
      }
      this.keys.set(id, createSecretKey(parseKey(id, key)));
    }
    if (typeof keyId !== 'string' || !this.keys.has(keyId)) {
      throw configError(
        'encryption.keyId',
        `is ${JSON.stringify(keyId)}, which is not a key id of encryption.keys (${[...this.keys.keys()].join(', ')}); set it to the id of the key that encrypts new records, or add that key`,
      );
    }
    this.keyId = keyId;
  }

  /** The encrypted form of `response`, bound to the record's storage key. */
  encrypt(response: StoredResponse, storageKey: string): StoredResponse {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv(ALGORITHM, this.keys.get(this.keyId)!, iv, {
      authTagLength: TAG_BYTES,
    });
    cipher.setAAD(aad(this.keyId, storageKey, response));
    const plaintext = JSON.stringify({ headers: response.headers, body: response.body });
    const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    const body = [
      `${V1}${this.keyId}`,
      iv.toString('base64url'),
      cipher.getAuthTag().toString('base64url'),
      ciphertext.toString('base64url'),
    ].join(':');
    return {
      status: response.status,
      headers: {},
      body,
      ...(response.error ? { error: true } : {}),
    };
  }

  /**
   * The clear form of a stored response. A response stored in clear (its body does not start with
   * {@link ENCRYPTED_BODY_PREFIX}) is returned as it is.
   * @throws IdempotencyDecryptionError when it cannot be decrypted.
   */
  decrypt(response: StoredResponse, storageKey: string): StoredResponse {
    if (!response.body.startsWith(ENCRYPTED_BODY_PREFIX)) {
      return response;
    }
    const parts = response.body.split(':');
    const keyId = parts[2];
    if (!response.body.startsWith(V1) || parts.length !== 6) {
      throw new IdempotencyDecryptionError(
        `Cannot decrypt a stored idempotency record: its envelope is not "enc:v1:<keyId>:<iv>:<tag>:<ciphertext>" (a newer library version, or an altered record).`,
        keyId,
      );
    }
    const key = this.keys.get(keyId);
    if (!key) {
      throw new IdempotencyDecryptionError(
        `Cannot decrypt a stored idempotency record: its key id ${JSON.stringify(keyId)} is not in encryption.keys. Keep a retired key in encryption.keys for the longest ttl after rotating.`,
        keyId,
      );
    }
    const [iv, tag, ciphertext] = parts.slice(3).map(fromBase64url);
    if (!iv || !tag || !ciphertext || iv.length !== IV_BYTES || tag.length !== TAG_BYTES) {
      throw new IdempotencyDecryptionError(
        `Cannot decrypt a stored idempotency record encrypted with key id ${JSON.stringify(keyId)}: its IV or tag is malformed (an altered record).`,
        keyId,
      );
    }
    let clear: { headers?: unknown; body?: unknown };
    try {
      const decipher = createDecipheriv(ALGORITHM, key, iv, { authTagLength: TAG_BYTES });
      decipher.setAuthTag(tag);
      decipher.setAAD(aad(keyId, storageKey, response));
      const plaintext = Buffer.concat([decipher.update(ciphertext), decipher.final()]);
      clear = JSON.parse(plaintext.toString('utf8')) as typeof clear;
    } catch {
      throw new IdempotencyDecryptionError(
        `Cannot decrypt a stored idempotency record with key id ${JSON.stringify(keyId)}: authentication failed (the record was altered or moved to another key, or encryption.keys.${keyId} is not the key it was encrypted with).`,
        keyId,
      );
    }
    if (
      typeof clear !== 'object' ||
      clear === null ||
      typeof clear.body !== 'string' ||
      typeof clear.headers !== 'object' ||
      clear.headers === null
    ) {
      throw new IdempotencyDecryptionError(
        `Cannot decrypt a stored idempotency record with key id ${JSON.stringify(keyId)}: its content is not { headers, body }.`,
        keyId,
      );
    }
    return {
      status: response.status,
      headers: clear.headers as StoredResponse['headers'],
      body: clear.body,
      ...(response.error ? { error: true } : {}),
    };
  }
}

/** What the tag authenticates besides the ciphertext: NUL-separated, none of the parts holds NUL. */
function aad(keyId: string, storageKey: string, response: StoredResponse): Buffer {
  return Buffer.from(
    [
      'nestjs-idempotency',
      'v1',
      keyId,
      storageKey,
      String(response.status),
      response.error ? '1' : '0',
    ].join('\0'),
  );
}

function fromBase64url(text: string): Buffer | undefined {
  return BASE64URL.test(text) ? Buffer.from(text, 'base64url') : undefined;
}

function parseKey(id: string, key: unknown): Buffer {
  const option = `encryption.keys.${id}`;
  const fix =
    'a key is 32 bytes: a Buffer (randomBytes(32)), 64 hex characters, or base64 of 32 bytes (`openssl rand -base64 32`)';
  if (key instanceof Uint8Array) {
    if (key.length !== KEY_BYTES) {
      throw configError(option, `is a ${key.length}-byte buffer; ${fix}`);
    }
    return Buffer.from(key);
  }
  if (typeof key === 'string') {
    const text = key.trim();
    if (HEX_KEY.test(text)) {
      return Buffer.from(text, 'hex');
    }
    if (BASE64_KEY.test(text)) {
      return Buffer.from(text, text.includes('-') || text.includes('_') ? 'base64url' : 'base64');
    }
    // Never echo the value: it is meant to be a secret.
    throw configError(
      option,
      `is a string of ${text.length} characters that is not hex or base64 of 32 bytes; ${fix}`,
    );
  }
  throw configError(option, `is ${key === null ? 'null' : typeof key}; ${fix}`);
}

function configError(option: string, problem: string): Error {
  return new Error(`nestjs-idempotency: option "${option}" ${problem}.`);
}
