import { Inject, Injectable } from '@nestjs/common';
import {
  createHash,
  createHmac,
  createSecretKey,
  type KeyObject,
  randomBytes,
  timingSafeEqual,
} from 'node:crypto';
import { IdempotencyOptionError, toMs } from './engine/duration';
import { IdempotencyErrorCode, type IdempotencyRejection } from './engine/idempotency-rejection';
import { IDEMPOTENCY_MODULE_OPTIONS } from './idempotency.constants';
import type {
  Duration,
  IdempotencyIssuedKeysOptions,
  IdempotencyModuleOptions,
} from './idempotency.options';

/** Scope name of `issue()` without one, and the one `key: 'issued'` accepts. */
export const DEFAULT_ISSUED_KEY_SCOPE = 'default';

/** A key issued by {@link IdempotencyKeyIssuer.issue}. */
export interface IssuedIdempotencyKey {
  /**
   * The key, to send as the `Idempotency-Key` header (or wherever the route's `from` reads it):
   * at most 132 characters of `A-Z a-z 0-9 - _ .`, so it needs no quoting.
   */
  key: string;
  /** When the key stops being accepted (`issuedKeys.ttl` after issue). */
  expiresAt: Date;
}

/** Options of {@link IdempotencyKeyIssuer.issue}. */
export interface IssueIdempotencyKeyOptions {
  /**
   * Scope name the key is issued for: only routes with `key: { issued: scope }` (or `run()` calls
   * with `issued: scope`) accept it. 1 to 100 printable ASCII characters.
   * @default 'default' (the scope `key: 'issued'` accepts)
   */
  scope?: string;
  /**
   * How long this key is accepted, from now.
   * @default issuedKeys.ttl
   */
  ttl?: Duration;
}

/** The rejections a key check gives: not issued (with why), or expired. */
export type IssuedKeyRejection = Extract<
  IdempotencyRejection,
  { code: typeof IdempotencyErrorCode.KeyNotIssued | typeof IdempotencyErrorCode.KeyExpired }
>;

/** What {@link IdempotencyKeyIssuer.verify} found. */
export type IssuedKeyVerification =
  | {
      valid: true;
      /** Id of the secret that signed the key. */
      keyId: string;
      expiresAt: Date;
    }
  | { valid: false; rejection: IssuedKeyRejection };

/** First part of every issued key; a new format would get a new version. */
const VERSION = 'ik1';
const KEY_ID = /^[A-Za-z0-9_-]{1,32}$/;
const SCOPE = /^[\x20-\x7e]{1,100}$/;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
const MIN_SECRET_BYTES = 32;
const EXPIRY_BYTES = 6;
const NONCE_BYTES = 16;
const SCOPE_TAG_BYTES = 16;
const PAYLOAD_BYTES = EXPIRY_BYTES + NONCE_BYTES + SCOPE_TAG_BYTES;
const MAC_BYTES = 32;
/** Largest expiry the payload holds: 2^48 - 1 ms, in the year 10889. */
const MAX_EXPIRY = 2 ** (8 * EXPIRY_BYTES) - 1;

/**
 * Issues idempotency keys and checks them, for clients that should not pick their own (browsers,
 * HTML forms, untrusted clients). A key is
 * `ik1.<keyId>.<payload>.<mac>`: `payload` is base64url of the expiry (6 bytes, epoch ms), a
 * random 16-byte nonce (so no two keys are equal) and the first 16 bytes of a SHA-256 of the scope
 * name; `mac` is base64url of an HMAC-SHA256, under the secret `keyId` names, of everything before
 * it. A key is checked by its signature alone, without a store round trip, and only one spelling
 * of it verifies (base64url is checked to be canonical), so a key cannot be altered into a second
 * valid one that would run the handler again.
 *
 * The constructor validates `issuedKeys` and throws at bootstrap, naming the option and the fix.
 *
 * @example
 * @Post('idempotency-keys')
 * issueKey() {
 *   return this.issuer.issue({ scope: 'checkout' }); // { key, expiresAt }
 * }
 */
@Injectable()
export class IdempotencyKeyIssuer {
  private readonly secrets = new Map<string, KeyObject>();
  private readonly signingKeyId: string | undefined;
  private readonly ttlMs: number;
  private readonly now: () => number;

  constructor(@Inject(IDEMPOTENCY_MODULE_OPTIONS) options: IdempotencyModuleOptions) {
    const issued = options.issuedKeys;
    if (issued === undefined) {
      this.ttlMs = 0;
      this.now = Date.now;
      return;
    }
    if (typeof issued !== 'object' || issued === null) {
      throw new IdempotencyOptionError(
        'issuedKeys',
        'must be an object { secrets: [{ id, secret }], ttl? }.',
      );
    }
    const { secrets } = issued as IdempotencyIssuedKeysOptions;
    if (!Array.isArray(secrets) || secrets.length === 0) {
      throw new IdempotencyOptionError(
        'issuedKeys.secrets',
        "must list at least one { id, secret }, e.g. [{ id: 'k1', secret: randomBytes(32) }]; the first signs new keys, every one verifies.",
      );
    }
    secrets.forEach((entry: unknown, index) => {
      const option = `issuedKeys.secrets[${index}]`;
      if (typeof entry !== 'object' || entry === null) {
        throw new IdempotencyOptionError(option, 'must be an object { id, secret }.');
      }
      const { id, secret } = entry as { id?: unknown; secret?: unknown };
      if (typeof id !== 'string' || !KEY_ID.test(id)) {
        throw new IdempotencyOptionError(
          `${option}.id`,
          `is ${JSON.stringify(id)}; key ids are 1 to 32 letters, digits, "_" or "-" (they are written in clear into every issued key).`,
        );
      }
      if (this.secrets.has(id)) {
        throw new IdempotencyOptionError(
          `${option}.id`,
          `repeats ${JSON.stringify(id)}; give every secret an id of its own.`,
        );
      }
      this.secrets.set(id, createSecretKey(secretBytes(`${option}.secret`, secret)));
    });
    this.signingKeyId = secrets[0].id;
    this.ttlMs = toMs(issued.ttl ?? '1h', 'issuedKeys.ttl');
    if (issued.now !== undefined && typeof issued.now !== 'function') {
      throw new IdempotencyOptionError(
        'issuedKeys.now',
        `must be a function returning epoch milliseconds; got ${typeof issued.now}.`,
      );
    }
    this.now = issued.now ?? Date.now;
  }

  /** Whether the module option `issuedKeys` is set, so keys can be issued and checked. */
  get enabled(): boolean {
    return this.signingKeyId !== undefined;
  }

  /**
   * A new key for `scope`, signed with the first secret of `issuedKeys.secrets`. Issuing writes
   * nothing to the store.
   * @throws Error when `issuedKeys` is not configured, or `scope` or `ttl` is invalid.
   */
  issue(options: IssueIdempotencyKeyOptions = {}): IssuedIdempotencyKey {
    const keyId = this.signingKeyId;
    if (keyId === undefined) {
      throw new Error(notConfigured('IdempotencyKeyIssuer.issue()'));
    }
    const scope = options.scope ?? DEFAULT_ISSUED_KEY_SCOPE;
    assertScope(scope, 'scope of IdempotencyKeyIssuer.issue()');
    const ttlMs =
      options.ttl === undefined
        ? this.ttlMs
        : toMs(options.ttl, 'ttl of IdempotencyKeyIssuer.issue()');
    const expiresAt = Math.min(Math.floor(this.now() + ttlMs), MAX_EXPIRY);
    const payload = Buffer.alloc(PAYLOAD_BYTES);
    payload.writeUIntBE(expiresAt, 0, EXPIRY_BYTES);
    randomBytes(NONCE_BYTES).copy(payload, EXPIRY_BYTES);
    scopeTag(scope).copy(payload, EXPIRY_BYTES + NONCE_BYTES);
    const signed = `${VERSION}.${keyId}.${payload.toString('base64url')}`;
    return {
      key: `${signed}.${this.mac(keyId, signed).toString('base64url')}`,
      expiresAt: new Date(expiresAt),
    };
  }

  /**
   * Checks that `key` was issued by this server for `scope` and has not expired, by its
   * signature alone. Checks run in this order: the shape, the key id, the signature, the scope,
   * the expiry; so only a genuine key is ever told it expired or belongs to another scope.
   * @throws Error when `issuedKeys` is not configured.
   */
  verify(key: string, scope: string = DEFAULT_ISSUED_KEY_SCOPE): IssuedKeyVerification {
    if (!this.enabled) {
      throw new Error(notConfigured('IdempotencyKeyIssuer.verify()'));
    }
    const parts = key.split('.');
    if (parts.length !== 4 || parts[0] !== VERSION) {
      return notIssued('This idempotency key was not issued by this server; request one.');
    }
    const [, keyId, payloadText, macText] = parts;
    const secret = this.secrets.get(keyId);
    if (!secret) {
      return notIssued(
        'This idempotency key is signed with a key id this server does not accept (it may have been retired); request a new one.',
      );
    }
    const payload = fromBase64url(payloadText, PAYLOAD_BYTES);
    const mac = fromBase64url(macText, MAC_BYTES);
    if (!payload || !mac) {
      return notIssued('This idempotency key is malformed or truncated; request a new one.');
    }
    if (!timingSafeEqual(mac, this.mac(keyId, `${VERSION}.${keyId}.${payloadText}`, secret))) {
      return notIssued(
        'The signature of this idempotency key does not match: it was altered, or not issued by this server.',
      );
    }
    if (!payload.subarray(EXPIRY_BYTES + NONCE_BYTES).equals(scopeTag(scope))) {
      return notIssued(
        'This idempotency key was issued for another operation; request one for this one.',
      );
    }
    const expiresAt = new Date(payload.readUIntBE(0, EXPIRY_BYTES));
    if (this.now() >= expiresAt.getTime()) {
      return {
        valid: false,
        rejection: { code: IdempotencyErrorCode.KeyExpired, expiredAt: expiresAt },
      };
    }
    return { valid: true, keyId, expiresAt };
  }

  private mac(keyId: string, signed: string, secret = this.secrets.get(keyId)!): Buffer {
    return createHmac('sha256', secret).update(signed).digest();
  }
}

/**
 * Throws {@link IdempotencyOptionError}, naming `option`, unless `scope` is an issued-key scope
 * name: 1 to 100 printable ASCII characters.
 */
export function assertScope(scope: unknown, option: string): asserts scope is string {
  if (typeof scope !== 'string' || !SCOPE.test(scope)) {
    throw new IdempotencyOptionError(
      option,
      `must be a scope name of 1 to 100 printable ASCII characters, such as 'checkout'; got ${JSON.stringify(scope)}.`,
    );
  }
}

/** The message of a use of issued keys without the module option. */
export function notConfigured(what: string): string {
  return `nestjs-idempotency: ${what} needs the module option "issuedKeys": IdempotencyModule.forRoot({ issuedKeys: { secrets: [{ id: 'k1', secret: process.env.IDEMPOTENCY_KEY_SECRET! }] } }), with a secret of at least 32 bytes.`;
}

/** What the key holds of its scope name: domain-separated, so it matches no other hash. */
function scopeTag(scope: string): Buffer {
  return createHash('sha256')
    .update(`nestjs-idempotency:issued-key-scope\0${scope}`)
    .digest()
    .subarray(0, SCOPE_TAG_BYTES);
}

function notIssued(detail: string): IssuedKeyVerification {
  return { valid: false, rejection: { code: IdempotencyErrorCode.KeyNotIssued, detail } };
}

/**
 * The bytes of canonical base64url text of exactly `length` bytes, else `undefined`. Canonical:
 * a last character whose unused bits are set decodes to the same bytes, and would be a second
 * spelling (a second storage key) of one key.
 */
function fromBase64url(text: string, length: number): Buffer | undefined {
  if (!BASE64URL.test(text)) {
    return undefined;
  }
  const bytes = Buffer.from(text, 'base64url');
  return bytes.length === length && bytes.toString('base64url') === text ? bytes : undefined;
}

function secretBytes(option: string, secret: unknown): Buffer {
  const fix = `a secret is at least ${MIN_SECRET_BYTES} bytes: a Buffer (randomBytes(32)), or a string such as \`openssl rand -base64 32\` prints`;
  let bytes: Buffer;
  if (secret instanceof Uint8Array) {
    bytes = Buffer.from(secret);
  } else if (typeof secret === 'string') {
    bytes = Buffer.from(secret, 'utf8');
  } else {
    throw new IdempotencyOptionError(
      option,
      `is ${secret === null ? 'null' : typeof secret}; ${fix}.`,
    );
  }
  if (bytes.length < MIN_SECRET_BYTES) {
    // Never echo the value: it is meant to be a secret.
    throw new IdempotencyOptionError(option, `is ${bytes.length} bytes; ${fix}.`);
  }
  return bytes;
}
