import type { ExecutionContext } from '@nestjs/common';
import { storageKeyOf } from '../engine/idempotency.hashing';
import { InvalidKeyError } from '../engine/idempotency-key';
import { IdempotencyErrorCode } from '../engine/idempotency-rejection';
import type { ResolvedIdempotencyOptions } from '../engine/resolved-options';
import type { IdempotencyKeyIssuer } from '../idempotency-key-issuer';
import type { CallDescription } from './context-adapter';

/** What differs per context when a call is described: where its key, fingerprint and scope come from. */
export interface CallParts {
  /** Route template, pattern or field, for events and logs. */
  target: string;
  /**
   * The client's key, or `undefined` when none was sent; throws `InvalidKeyError` for an invalid
   * one. Not called with `key: 'fingerprint'`, and always before the other two.
   */
  readKey(): string | undefined;
  /** The context's default fingerprint of the call. */
  fingerprint(): string;
  /** What the key is unique within, as string parts hashed into the storage key. */
  scopeParts(): readonly string[];
}

/**
 * The rules every context shares when it reads a call: the key (the client's, or the fingerprint
 * with `key: 'fingerprint'`), the fingerprint (the option's function, the context's default, or
 * none), the rejections of bad input (an invalid key, a body too deeply nested to fingerprint, a
 * missing key when one is required, a key not issued by this server), checked before the store is
 * touched. Answers `absent` for a call without a key where none is required.
 */
export function describeCall<Absent>(
  context: ExecutionContext,
  options: ResolvedIdempotencyOptions,
  issuer: IdempotencyKeyIssuer,
  parts: CallParts,
  absent: Absent,
): CallDescription | Absent {
  const { target } = parts;
  let fingerprint: string | null;
  let key: string | undefined;
  try {
    key = options.key === 'fingerprint' ? undefined : parts.readKey();
    fingerprint =
      options.fingerprint === false
        ? null
        : options.fingerprint
          ? options.fingerprint(context)
          : parts.fingerprint();
    if (options.key === 'fingerprint') {
      key = fingerprint ?? parts.fingerprint();
    }
  } catch (error) {
    if (error instanceof InvalidKeyError) {
      return {
        target,
        rejection: { code: IdempotencyErrorCode.KeyInvalid, detail: error.message },
      };
    }
    // JSON.parse accepts nesting deeper than a recursive walk can follow: a client's mistake (or
    // an attack), refused before anything runs, never a 500.
    if (error instanceof RangeError) {
      return { target, rejection: { code: IdempotencyErrorCode.FingerprintFailed } };
    }
    throw error;
  }
  if (key === undefined) {
    return options.required
      ? { target, rejection: { code: IdempotencyErrorCode.KeyMissing } }
      : absent;
  }
  if (options.issued !== undefined) {
    // By its signature alone, before the store is touched.
    const verification = issuer.verify(key, options.issued);
    if (!verification.valid) {
      return { target, rejection: verification.rejection };
    }
  }
  return { key: storageKeyOf(parts.scopeParts(), key), fingerprint, target };
}
