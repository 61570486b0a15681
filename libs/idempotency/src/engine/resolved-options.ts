import type { ExecutionContext } from '@nestjs/common';
import { IdempotencyOptionError, toMs } from './duration';
import {
  DEFAULT_IDEMPOTENCY_HEADER,
  DEFAULT_REPLAY_HEADERS,
  NEVER_STORED_HEADERS,
} from '../idempotency.constants';
import { assertScope, DEFAULT_ISSUED_KEY_SCOPE } from '../idempotency-key-issuer';
import type {
  IdempotencyScope,
  IdempotencyTransactionOptions,
  IdempotentOptions,
} from '../idempotency.options';

/** The options of one handler (or one `run()` call) after merging, durations in milliseconds. */
export interface ResolvedIdempotencyOptions {
  ttlMs: number;
  lockTtlMs: number;
  maxLockHoldMs: number;
  retryAfterMs: number;
  waitTimeoutMs: number;
  concurrent: 'reject' | 'wait';
  storeIf: (status: number, error?: unknown) => boolean;
  maxResponseBytes: number;
  unreplayable: 'reject' | 'release';
  onStoreError: 'closed' | 'open';
  /** Transactional mode, or `undefined` when off. */
  transaction: Required<IdempotencyTransactionOptions> | undefined;
  mismatchStatus: number;
  /** RabbitMQ messages are acknowledged by the library (see `IdempotentOptions.acknowledge`). */
  acknowledge: boolean;
  scope: IdempotencyScope;
  required: boolean;
  /** Where the key is read from; an issued key is read from the header or its `from` function. */
  key: ResolvedKeySource;
  /** Scope name the key must have been issued for, or `undefined` when any key is accepted. */
  issued: string | undefined;
  fingerprint: NonNullable<IdempotentOptions['fingerprint']> | undefined;
  replayHeaders: ReadonlySet<string>;
  headerName: string;
  /** `undefined`: the context's own (over HTTP, `request.user.id ?? request.user.sub`). */
  principal: IdempotentOptions['principal'];
}

/**
 * Where a handler's key is read from: the context's own header (or its transport's), the
 * fingerprint, a field of the payload (the path split at its dots), or a function.
 */
export type ResolvedKeySource =
  | 'header'
  | 'fingerprint'
  | { path: readonly string[] }
  | ((context: ExecutionContext) => string | undefined);

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

const defaultStoreIf = (status: number): boolean => status < 500;

/**
 * Validates and resolves merged options. Throws {@link IdempotencyOptionError}, naming the option,
 * for the first invalid one; callers add where the options came from.
 */
export function resolveOptions(options: IdempotentOptions): ResolvedIdempotencyOptions {
  const maxResponseBytes = options.maxResponseBytes ?? 1024 * 1024;
  if (!Number.isInteger(maxResponseBytes) || maxResponseBytes < 0) {
    throw new IdempotencyOptionError(
      'maxResponseBytes',
      `must be a non-negative integer; got ${String(maxResponseBytes)}.`,
    );
  }
  const headerName = options.headerName ?? DEFAULT_IDEMPOTENCY_HEADER;
  if (typeof headerName !== 'string' || !HEADER_NAME.test(headerName)) {
    throw new IdempotencyOptionError(
      'headerName',
      `must be a valid HTTP header name; got ${JSON.stringify(headerName)}.`,
    );
  }
  const mismatchStatus = options.mismatchStatus ?? 422;
  if (!Number.isInteger(mismatchStatus) || mismatchStatus < 400 || mismatchStatus > 499) {
    throw new IdempotencyOptionError(
      'mismatchStatus',
      `must be a 4xx status code such as 422 or 409; got ${JSON.stringify(mismatchStatus)}.`,
    );
  }
  return {
    ttlMs: toMs(options.ttl ?? '24h', 'ttl'),
    lockTtlMs: toMs(options.lockTtl ?? '30s', 'lockTtl'),
    maxLockHoldMs: toMs(options.maxLockHold ?? '1h', 'maxLockHold'),
    retryAfterMs: toMs(options.retryAfter ?? '1s', 'retryAfter'),
    waitTimeoutMs: toMs(options.waitTimeout ?? '10s', 'waitTimeout'),
    concurrent: oneOf(options.concurrent, 'concurrent', ['reject', 'wait']),
    storeIf: fn(options.storeIf, 'storeIf') ?? defaultStoreIf,
    maxResponseBytes,
    unreplayable: oneOf(options.unreplayable, 'unreplayable', ['reject', 'release']),
    onStoreError: oneOf(options.onStoreError, 'onStoreError', ['closed', 'open']),
    transaction: transaction(options.transaction),
    mismatchStatus,
    acknowledge: bool(options.acknowledge, 'acknowledge') ?? false,
    scope:
      typeof options.scope === 'function'
        ? options.scope
        : oneOf<'endpoint' | 'user' | 'global'>(options.scope as 'endpoint' | undefined, 'scope', [
            'endpoint',
            'user',
            'global',
          ]),
    required: options.required ?? true,
    ...keySource(options.key),
    fingerprint: options.fingerprint === false ? false : fn(options.fingerprint, 'fingerprint'),
    replayHeaders: new Set(
      [...DEFAULT_REPLAY_HEADERS, ...(options.replayHeaders ?? [])]
        .map((name) => name.toLowerCase())
        .filter((name) => !NEVER_STORED_HEADERS.has(name)),
    ),
    headerName,
    principal: fn(options.principal, 'principal'),
  };
}

/** Where the key comes from, and the scope name an issued key must have. */
function keySource(
  value: IdempotentOptions['key'],
): Pick<ResolvedIdempotencyOptions, 'key' | 'issued'> {
  if (value === undefined || value === 'header' || value === 'fingerprint') {
    return { key: value ?? 'header', issued: undefined };
  }
  if (typeof value === 'function') {
    return { key: value, issued: undefined };
  }
  if (value === 'issued') {
    return { key: 'header', issued: DEFAULT_ISSUED_KEY_SCOPE };
  }
  if (typeof value !== 'object' || value === null) {
    throw new IdempotencyOptionError(
      'key',
      `must be 'header', 'fingerprint', 'issued', { path }, { issued, from? } or a function; got ${JSON.stringify(value)}.`,
    );
  }
  if ('path' in value) {
    const { path } = value;
    const parts = typeof path === 'string' ? path.split('.') : [];
    if (parts.length === 0 || parts.some((part) => part === '')) {
      throw new IdempotencyOptionError(
        'key.path',
        `must be a dot-separated field path such as 'meta.eventId'; got ${JSON.stringify(path)}.`,
      );
    }
    return { key: { path: parts }, issued: undefined };
  }
  assertScope(value.issued, 'key.issued');
  const from = value.from ?? 'header';
  if (from !== 'header' && typeof from !== 'function') {
    throw new IdempotencyOptionError(
      'key.from',
      `must be 'header' or a function; got ${JSON.stringify(from)}.`,
    );
  }
  return { key: from, issued: value.issued };
}

const ISOLATION_LEVELS = [
  'READ COMMITTED',
  'READ UNCOMMITTED',
  'REPEATABLE READ',
  'SERIALIZABLE',
] as const;

function transaction(
  value: IdempotentOptions['transaction'],
): Required<IdempotencyTransactionOptions> | undefined {
  if (value === undefined || value === false) {
    return undefined;
  }
  if (value === true) {
    return { isolationLevel: 'READ COMMITTED' };
  }
  if (typeof value !== 'object' || value === null) {
    throw new IdempotencyOptionError(
      'transaction',
      `must be true, false or { isolationLevel }; got ${JSON.stringify(value)}.`,
    );
  }
  return {
    isolationLevel: oneOf(value.isolationLevel, 'transaction.isolationLevel', ISOLATION_LEVELS),
  };
}

/** The value when it is one of `allowed`; the first of them when unset. */
function oneOf<T extends string>(value: T | undefined, option: string, allowed: readonly T[]): T {
  if (value === undefined) {
    return allowed[0];
  }
  if (!allowed.includes(value)) {
    throw new IdempotencyOptionError(
      option,
      `must be ${allowed.map((a) => `'${a}'`).join(' or ')}; got ${JSON.stringify(value)}.`,
    );
  }
  return value;
}

function bool(value: boolean | undefined, option: string): boolean | undefined {
  if (value !== undefined && typeof value !== 'boolean') {
    throw new IdempotencyOptionError(
      option,
      `must be true or false; got ${JSON.stringify(value)}.`,
    );
  }
  return value;
}

function fn<T>(value: T | undefined, option: string): T | undefined {
  if (value !== undefined && typeof value !== 'function') {
    throw new IdempotencyOptionError(option, `must be a function; got ${typeof value}.`);
  }
  return value;
}
