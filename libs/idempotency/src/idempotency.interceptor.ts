import {
  type CallHandler,
  type ExecutionContext,
  HttpException,
  Inject,
  Injectable,
  Logger,
  type NestInterceptor,
  type OnApplicationShutdown,
  StreamableFile,
} from '@nestjs/common';
import {
  PATH_METADATA,
  RESPONSE_PASSTHROUGH_METADATA,
  ROUTE_ARGS_METADATA,
} from '@nestjs/common/constants';
import { RouteParamtypes } from '@nestjs/common/enums/route-paramtypes.enum';
import { HttpAdapterHost, Reflector } from '@nestjs/core';
import { randomUUID } from 'node:crypto';
import { EMPTY, from, lastValueFrom, mergeMap, type Observable, of, throwError } from 'rxjs';
import { decodeBody, encodeBody } from './body-codec';
import { toMs } from './duration';
import {
  DEFAULT_IDEMPOTENCY_HEADER,
  DEFAULT_REPLAY_HEADERS,
  IDEMPOTENCY_MODULE_OPTIONS,
  IDEMPOTENT_REPLAYED_HEADER,
  NEVER_STORED_HEADERS,
  PROBLEM_CONTENT_TYPE,
} from './idempotency.constants';
import {
  IdempotencyException,
  IdempotencyFingerprintFailedException,
  IdempotencyKeyInvalidException,
  IdempotencyKeyMissingException,
  IdempotencyKeyReusedException,
  IdempotencyRequestInProgressException,
  IdempotencyStoreUnavailableException,
} from './idempotency.errors';
import {
  ENCRYPTED_BODY_PREFIX,
  IdempotencyDecryptionError,
  IdempotencyResponseCipher,
} from './idempotency.encryption';
import { requestFingerprint, storageKey } from './idempotency.hashing';
import type {
  IdempotencyModuleOptions,
  IdempotencyScope,
  IdempotentMethod,
  IdempotentOptions,
} from './idempotency.options';
import { type ClaimResult, IdempotencyStore, type StoredResponse } from './idempotency-store';
import {
  InvalidKeyError,
  parseIdempotencyKey,
  rawHeaderValues,
  validateIdempotencyKey,
} from './idempotency-key';
import { Idempotent } from './idempotent.decorator';

/** Options of one route after merging module, class and handler options, durations in ms. */
export interface ResolvedIdempotencyOptions {
  ttlMs: number;
  lockTtlMs: number;
  waitTimeoutMs: number;
  scope: IdempotencyScope;
  required: boolean;
  key: NonNullable<IdempotentOptions['key']>;
  fingerprint: NonNullable<IdempotentOptions['fingerprint']> | undefined;
  concurrent: 'reject' | 'wait';
  storeIf: (status: number) => boolean;
  replayHeaders: ReadonlySet<string>;
  maxResponseBytes: number;
  onStoreError: 'closed' | 'open';
  headerName: string;
  mismatchStatus: number;
  principal: NonNullable<IdempotentOptions['principal']>;
}

interface RouteConfig {
  options: ResolvedIdempotencyOptions;
  /** Verbs this route is protected for; `undefined` means whatever verb the handler serves. */
  methods?: ReadonlySet<string>;
  /** Route template from metadata, used when the platform does not expose the matched one. */
  route: string;
  /** The handler writes the response itself (`@Res()` / `@Next()` without passthrough). */
  respondsItself: boolean;
}

/** One request's claim: who holds it and the lease renewal that keeps it. */
interface Claim {
  key: string;
  ownerToken: string;
  fingerprint: string | null;
  options: ResolvedIdempotencyOptions;
  timer?: NodeJS.Timeout;
  settled: boolean;
}

type HttpRequest = {
  method: string;
  body?: unknown;
  query?: unknown;
  headers: Record<string, string | string[] | undefined>;
  rawHeaders?: string[];
  raw?: { rawHeaders?: string[] };
  route?: { path?: unknown };
  routeOptions?: { url?: string };
  user?: { id?: string | number; sub?: string | number };
  [HANDLED]?: boolean;
};

type HttpResponse = {
  statusCode: number;
  getHeaders(): Record<string, number | string | string[] | undefined>;
};

const NEVER_PROTECTED = new Set(['GET', 'HEAD', 'OPTIONS']);
const NO_VALUE = Symbol('no value');
const HANDLED = Symbol('nestjs-idempotency:handled');
const KEY_PREFIX = 'nestjs-idempotency:v1';
const DEFAULT_METHODS: readonly IdempotentMethod[] = ['POST', 'PATCH'];

const defaultPrincipal = (context: ExecutionContext): string | number | undefined => {
  const user = context.switchToHttp().getRequest<HttpRequest>().user;
  return user?.id ?? user?.sub;
};

/**
 * The global interceptor registered by `IdempotencyModule`. On handlers marked `@Idempotent()` it
 * claims the client's key atomically, runs the handler once, stores the response and replays it
 * for retries. Other handlers pass through untouched.
 *
 * Subclass it and override the `protected` hooks (`getKey`, `getScopeParts`, `getFingerprint`,
 * `getRoute`) to change how a request is identified.
 */
@Injectable()
export class IdempotencyInterceptor implements NestInterceptor, OnApplicationShutdown {
  protected readonly logger = new Logger('Idempotency');
  private readonly routes = new WeakMap<object, RouteConfig | null>();
  private readonly claims = new Set<Claim>();
  private readonly defaults: IdempotentOptions;
  /** Set when `encryption` is configured; `undefined` keeps the stored form in clear. */
  private readonly cipher?: IdempotencyResponseCipher;

  constructor(
    @Inject(IDEMPOTENCY_MODULE_OPTIONS) moduleOptions: IdempotencyModuleOptions,
    protected readonly store: IdempotencyStore,
    protected readonly reflector: Reflector,
    protected readonly adapterHost: HttpAdapterHost,
  ) {
    const { store: _store, encryption, ...defaults } = moduleOptions;
    this.defaults = defaults;
    // Throws at bootstrap, naming the option, when a key or the key id is invalid.
    this.cipher = encryption ? new IdempotencyResponseCipher(encryption) : undefined;
    // Throws at bootstrap, naming the option, when a module default is invalid.
    this.resolveOptions(defaults);
  }

  async intercept(context: ExecutionContext, next: CallHandler): Promise<Observable<unknown>> {
    if (context.getType() !== 'http') {
      return next.handle();
    }
    const request = context.switchToHttp().getRequest<HttpRequest>();
    const method = request.method.toUpperCase();
    const route = this.getRouteConfig(context);
    if (
      !route ||
      request[HANDLED] ||
      NEVER_PROTECTED.has(method) ||
      (route.methods && !route.methods.has(method))
    ) {
      return next.handle();
    }
    // Registered globally and with @UseInterceptors() too, it must claim once, not twice.
    request[HANDLED] = true;
    const { options } = route;
    const template = this.getRoute(context, route.route);
    const fingerprint =
      options.fingerprint === false
        ? null
        : (options.fingerprint ?? this.defaultFingerprint.bind(this, template))(context);
    const clientKey =
      options.key === 'fingerprint'
        ? (fingerprint ?? this.defaultFingerprint(template, context))
        : this.getKey(context, options);
    if (clientKey === undefined) {
      if (options.required) {
        throw this.problem(context, new IdempotencyKeyMissingException(options.headerName));
      }
      return next.handle();
    }
    const claim: Claim = {
      key: storageKey([KEY_PREFIX, ...this.getScopeParts(context, options, template), clientKey]),
      ownerToken: randomUUID(),
      fingerprint,
      options,
      settled: false,
    };

    let result: ClaimResult;
    try {
      result = await this.claim(claim);
    } catch (error) {
      return this.onStoreFailure(context, next, error);
    }
    if (result.outcome === 'in_flight' && options.concurrent === 'wait') {
      this.checkFingerprint(context, claim, result);
      try {
        result = await this.waitForCompletion(context, claim, result);
      } catch (error) {
        if (error instanceof IdempotencyException) {
          throw error;
        }
        return this.onStoreFailure(context, next, error);
      }
    }
    this.checkFingerprint(context, claim, result);
    switch (result.outcome) {
      case 'completed': {
        try {
          return this.replay(context, this.readStored(result.response, claim.key));
        } catch (error) {
          // A record that cannot be read (undecryptable, or corrupt) is never replayed and never
          // run: it is answered like a store failure (onStoreError).
          return this.onStoreFailure(context, next, error);
        }
      }
      case 'in_flight':
        throw this.inProgress(context, result.leaseRemainingMs);
      case 'acquired':
        return this.execute(context, next, claim, route);
    }
  }

  /** Stops every lease renewal timer; in-flight records are left to lapse. */
  onApplicationShutdown(): void {
    for (const claim of this.claims) {
      this.stopRenewal(claim);
    }
  }

  /**
   * Reads the client's key. With the default `key: 'header'`, the header is parsed as a Structured
   * Field string or a bare token; `undefined` when absent; a 400 when invalid or sent twice with
   * different values.
   */
  protected getKey(
    context: ExecutionContext,
    options: ResolvedIdempotencyOptions,
  ): string | undefined {
    try {
      if (typeof options.key === 'function') {
        const key = options.key(context);
        if (key !== undefined && key !== null) {
          validateIdempotencyKey(key);
        }
        return key ?? undefined;
      }
      const request = context.switchToHttp().getRequest<HttpRequest>();
      const raw = request.raw?.rawHeaders ?? request.rawHeaders;
      const header = request.headers[options.headerName.toLowerCase()];
      const values = raw
        ? rawHeaderValues(raw, options.headerName)
        : header === undefined
          ? []
          : ([] as string[]).concat(header);
      if (values.length === 0) {
        return undefined;
      }
      const keys = new Set(values.map(parseIdempotencyKey));
      if (keys.size > 1) {
        throw new InvalidKeyError(
          `The ${options.headerName} header was sent more than once with different values.`,
        );
      }
      return keys.values().next().value;
    } catch (error) {
      if (error instanceof InvalidKeyError) {
        throw this.problem(context, new IdempotencyKeyInvalidException(error.message));
      }
      throw error;
    }
  }

  /** What the key is unique within, as string parts hashed into the storage key. */
  protected getScopeParts(
    context: ExecutionContext,
    options: ResolvedIdempotencyOptions,
    route: string,
  ): readonly string[] {
    if (typeof options.scope === 'function') {
      return ['custom', ...options.scope(context)];
    }
    const principal = options.principal(context);
    const who =
      principal === undefined || principal === null ? 'anonymous' : `principal:${principal}`;
    switch (options.scope) {
      case 'global':
        return ['global'];
      case 'user':
        return ['user', who];
      default: {
        const method = context.switchToHttp().getRequest<HttpRequest>().method.toUpperCase();
        return ['endpoint', method, route, who];
      }
    }
  }

  /**
   * The route template of the request (for example `/orders/:id`): the matched route on Express
   * and Fastify, else the controller and handler paths from metadata.
   */
  protected getRoute(context: ExecutionContext, fallback: string): string {
    const request = context.switchToHttp().getRequest<HttpRequest>();
    const matched = request.routeOptions?.url ?? request.route?.path;
    return typeof matched === 'string' ? matched : fallback;
  }

  private defaultFingerprint(route: string, context: ExecutionContext): string {
    const request = context.switchToHttp().getRequest<HttpRequest>();
    try {
      return requestFingerprint({
        method: request.method,
        route,
        body: request.body,
        query: request.query,
      });
    } catch (error) {
      // JSON.parse accepts nesting deeper than a recursive walk can follow: a client's mistake
      // (or an attack), answered 400 before anything runs, never a 500.
      if (error instanceof RangeError) {
        throw this.problem(context, new IdempotencyFingerprintFailedException());
      }
      throw error;
    }
  }

  private async claim(claim: Claim): Promise<ClaimResult> {
    return this.store.claim({
      key: claim.key,
      fingerprint: claim.fingerprint,
      ownerToken: claim.ownerToken,
      leaseMs: claim.options.lockTtlMs,
    });
  }

  private checkFingerprint(context: ExecutionContext, claim: Claim, result: ClaimResult): void {
    if (
      result.outcome !== 'acquired' &&
      claim.fingerprint !== null &&
      result.fingerprint !== null &&
      result.fingerprint !== claim.fingerprint
    ) {
      throw this.problem(context, new IdempotencyKeyReusedException(claim.options.mismatchStatus));
    }
  }

  /** Polls with a growing delay until the holder finishes, its lease lapses, or the wait times out. */
  private async waitForCompletion(
    context: ExecutionContext,
    claim: Claim,
    first: ClaimResult,
  ): Promise<ClaimResult> {
    const deadline = Date.now() + claim.options.waitTimeoutMs;
    let result = first;
    let delay = 10;
    while (result.outcome === 'in_flight') {
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        return result;
      }
      await new Promise<void>((resolve) => setTimeout(resolve, Math.min(delay, remaining)).unref());
      delay = Math.min(delay * 2, 250);
      result = await this.claim(claim);
      this.checkFingerprint(context, claim, result);
    }
    return result;
  }

  /** The stored response in clear: decrypted, or refused when encrypted and encryption is off. */
  private readStored(stored: StoredResponse, key: string): StoredResponse {
    if (this.cipher) {
      return this.cipher.decrypt(stored, key);
    }
    if (stored.body.startsWith(ENCRYPTED_BODY_PREFIX)) {
      throw new IdempotencyDecryptionError(
        'The stored response is encrypted but the "encryption" option is not set; it cannot be replayed until it expires.',
      );
    }
    return stored;
  }

  private replay(context: ExecutionContext, stored: StoredResponse): Observable<unknown> {
    const adapter = this.adapterHost.httpAdapter;
    const response = context.switchToHttp().getResponse();
    // Decoded first: a corrupt record throws before any header of a replay is set.
    const body = decodeBody(stored.body);
    for (const [name, value] of Object.entries(stored.headers)) {
      adapter.setHeader(response, name, value as string);
    }
    adapter.setHeader(response, IDEMPOTENT_REPLAYED_HEADER, 'true');
    if (stored.error) {
      return throwError(() => new HttpException(body as Record<string, unknown>, stored.status));
    }
    adapter.status(response, stored.status);
    return from([body]);
  }

  private execute(
    context: ExecutionContext,
    next: CallHandler,
    claim: Claim,
    route: RouteConfig,
  ): Observable<unknown> {
    this.startRenewal(claim);
    // The handler runs to completion and settles the record even if the client goes away and Nest
    // unsubscribes: releasing the key while the handler still runs would let a retry run it twice.
    const outcome = lastValueFrom(next.handle(), { defaultValue: NO_VALUE }).then(
      async (value) => {
        await (value === NO_VALUE
          ? this.settle(claim, 'release')
          : this.onResult(context, claim, route, value));
        return value;
      },
      async (error: unknown) => {
        await this.onError(claim, error);
        throw error;
      },
    );
    outcome.catch(() => undefined);
    return from(outcome).pipe(mergeMap((value) => (value === NO_VALUE ? EMPTY : of(value))));
  }

  private async onResult(
    context: ExecutionContext,
    claim: Claim,
    route: RouteConfig,
    value: unknown,
  ): Promise<void> {
    const response = context.switchToHttp().getResponse<HttpResponse>();
    const unstorable = route.respondsItself
      ? 'it writes the response itself (@Res() without passthrough)'
      : value instanceof StreamableFile || isStream(value)
        ? 'its response is a stream'
        : undefined;
    if (unstorable) {
      this.logger.warn(`Response not stored: ${unstorable}; the key was released.`);
      return this.settle(claim, 'release');
    }
    if (!claim.options.storeIf(response.statusCode)) {
      return this.settle(claim, 'release');
    }
    let body: string;
    try {
      body = encodeBody(value);
    } catch (error) {
      this.logger.warn(
        `Response not stored: it cannot be serialized (${String(error)}); the key was released.`,
      );
      return this.settle(claim, 'release');
    }
    if (Buffer.byteLength(body) > claim.options.maxResponseBytes) {
      this.logger.warn(
        `Response not stored: larger than maxResponseBytes (${claim.options.maxResponseBytes}); the key was released.`,
      );
      return this.settle(claim, 'release');
    }
    return this.settle(claim, 'complete', {
      status: response.statusCode,
      headers: this.pickHeaders(response.getHeaders(), claim.options.replayHeaders),
      body,
    });
  }

  private async onError(claim: Claim, error: unknown): Promise<void> {
    if (error instanceof HttpException && claim.options.storeIf(error.getStatus())) {
      let body: string;
      try {
        body = encodeBody(error.getResponse());
      } catch {
        return this.settle(claim, 'release');
      }
      return this.settle(claim, 'complete', {
        status: error.getStatus(),
        headers: {},
        body,
        error: true,
      });
    }
    return this.settle(claim, 'release');
  }

  /**
   * Completes or releases the claim, fenced by its owner token. A failure is logged, never thrown:
   * the client still gets its response, and the unrenewed lease lapses.
   */
  private async settle(claim: Claim, action: 'release'): Promise<void>;
  private async settle(claim: Claim, action: 'complete', response: StoredResponse): Promise<void>;
  private async settle(
    claim: Claim,
    action: 'complete' | 'release',
    response?: StoredResponse,
  ): Promise<void> {
    claim.settled = true;
    this.stopRenewal(claim);
    const { key, ownerToken } = claim;
    try {
      const done =
        action === 'complete' && response
          ? await this.store.complete({
              key,
              ownerToken,
              response: this.cipher ? this.cipher.encrypt(response, key) : response,
              ttlMs: claim.options.ttlMs,
            })
          : await this.store.release({ key, ownerToken });
      if (!done) {
        this.logger.warn(
          `Lease lost before ${action === 'complete' ? 'the response was stored' : 'release'}; another request may have run the handler. Consider a longer lockTtl.`,
        );
      }
    } catch (error) {
      this.logger.error(
        `Could not ${action} the idempotency record; it stays in flight until its lease lapses (${claim.options.lockTtlMs} ms).`,
        error instanceof Error ? error.stack : String(error),
      );
    }
  }

  private startRenewal(claim: Claim): void {
    this.claims.add(claim);
    const { key, ownerToken, options } = claim;
    claim.timer = setInterval(
      () => {
        this.store.renew({ key, ownerToken, leaseMs: options.lockTtlMs }).then(
          (renewed) => {
            if (!renewed && !claim.settled) {
              this.logger.warn(
                'Lease lost while the handler was running; its response will not be stored.',
              );
              this.stopRenewal(claim);
            }
          },
          (error: unknown) => this.logger.error(`Lease renewal failed: ${String(error)}`),
        );
      },
      Math.max(1, Math.floor(options.lockTtlMs / 3)),
    );
    claim.timer.unref();
  }

  private stopRenewal(claim: Claim): void {
    clearInterval(claim.timer);
    claim.timer = undefined;
    this.claims.delete(claim);
  }

  private pickHeaders(
    headers: Record<string, number | string | string[] | undefined>,
    allowed: ReadonlySet<string>,
  ): Record<string, string | string[]> {
    const picked: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(headers)) {
      const lower = name.toLowerCase();
      if (value !== undefined && allowed.has(lower)) {
        picked[lower] = typeof value === 'number' ? String(value) : value;
      }
    }
    return picked;
  }

  private async onStoreFailure(
    context: ExecutionContext,
    next: CallHandler,
    error: unknown,
  ): Promise<Observable<unknown>> {
    const route = this.getRouteConfig(context);
    const detail = error instanceof Error ? error.stack : String(error);
    if (route?.options.onStoreError === 'open') {
      this.logger.error(
        'Idempotency store failed; running the handler unprotected (onStoreError: open).',
        detail,
      );
      return next.handle();
    }
    this.logger.error('Idempotency store failed; answering 503 (onStoreError: closed).', detail);
    throw this.problem(context, new IdempotencyStoreUnavailableException());
  }

  private inProgress(context: ExecutionContext, leaseRemainingMs: number): IdempotencyException {
    return this.problem(
      context,
      new IdempotencyRequestInProgressException(Math.max(1, Math.ceil(leaseRemainingMs / 1000))),
    );
  }

  /** Sets the problem's headers (Content-Type, Retry-After) on the response and returns it to throw. */
  private problem(
    context: ExecutionContext,
    exception: IdempotencyException,
  ): IdempotencyException {
    const adapter = this.adapterHost.httpAdapter;
    const response = context.switchToHttp().getResponse();
    adapter.setHeader(response, 'Content-Type', PROBLEM_CONTENT_TYPE);
    for (const [name, value] of Object.entries(exception.headers)) {
      adapter.setHeader(response, name, value);
    }
    return exception;
  }

  private getRouteConfig(context: ExecutionContext): RouteConfig | null {
    const handler = context.getHandler();
    let config = this.routes.get(handler);
    if (config === undefined) {
      config = this.buildRouteConfig(context);
      this.routes.set(handler, config);
    }
    return config;
  }

  private buildRouteConfig(context: ExecutionContext): RouteConfig | null {
    const handler = context.getHandler();
    const controller = context.getClass();
    const onHandler = this.reflector.get(Idempotent, handler);
    const onClass = this.reflector.get(Idempotent, controller);
    if (!onHandler && !onClass) {
      return null;
    }
    const merged: IdempotentOptions = { ...this.defaults, ...onClass, ...onHandler };
    const routeArgs: Record<string, { index: number }> =
      Reflect.getMetadata(ROUTE_ARGS_METADATA, controller, handler.name) ?? {};
    const passthrough: boolean =
      Reflect.getMetadata(RESPONSE_PASSTHROUGH_METADATA, controller, handler.name) === true;
    const takesResponse = Object.keys(routeArgs).some((key) => {
      const type = Number(key.split(':')[0]);
      return type === RouteParamtypes.RESPONSE || type === RouteParamtypes.NEXT;
    });
    return {
      options: this.resolveOptions(merged),
      methods: onHandler
        ? undefined
        : new Set((merged.methods ?? DEFAULT_METHODS).map((m) => m.toUpperCase())),
      route: metadataRoute(controller, handler),
      respondsItself: takesResponse && !passthrough,
    };
  }

  private resolveOptions(options: IdempotentOptions): ResolvedIdempotencyOptions {
    const maxResponseBytes = options.maxResponseBytes ?? 1024 * 1024;
    if (!Number.isInteger(maxResponseBytes) || maxResponseBytes < 0) {
      throw new Error(
        `nestjs-idempotency: option "maxResponseBytes" must be a non-negative integer; got ${String(maxResponseBytes)}.`,
      );
    }
    const headerName = options.headerName ?? DEFAULT_IDEMPOTENCY_HEADER;
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(headerName)) {
      throw new Error(
        `nestjs-idempotency: option "headerName" must be a valid HTTP header name; got ${JSON.stringify(headerName)}.`,
      );
    }
    return {
      ttlMs: toMs(options.ttl ?? '24h', 'ttl'),
      lockTtlMs: toMs(options.lockTtl ?? '30s', 'lockTtl'),
      waitTimeoutMs: toMs(options.waitTimeout ?? '10s', 'waitTimeout'),
      scope: options.scope ?? 'endpoint',
      required: options.required ?? true,
      key: options.key ?? 'header',
      fingerprint: options.fingerprint,
      concurrent: options.concurrent ?? 'reject',
      storeIf: options.storeIf ?? ((status) => status < 500),
      replayHeaders: new Set(
        [...DEFAULT_REPLAY_HEADERS, ...(options.replayHeaders ?? [])]
          .map((name) => name.toLowerCase())
          .filter((name) => !NEVER_STORED_HEADERS.has(name)),
      ),
      maxResponseBytes,
      onStoreError: options.onStoreError ?? 'closed',
      headerName,
      mismatchStatus: options.mismatchStatus ?? 422,
      principal: options.principal ?? defaultPrincipal,
    };
  }
}

function isStream(value: unknown): boolean {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { pipe?: unknown }).pipe === 'function'
  );
}

function metadataRoute(controller: object, handler: object): string {
  const first = (path: unknown): string =>
    String((Array.isArray(path) ? path[0] : path) ?? '').replace(/^\/+|\/+$/g, '');
  const parts = [
    first(Reflect.getMetadata(PATH_METADATA, controller)),
    first(Reflect.getMetadata(PATH_METADATA, handler)),
  ];
  return `/${parts.filter(Boolean).join('/')}`;
}
