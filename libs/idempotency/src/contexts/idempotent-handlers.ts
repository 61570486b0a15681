import { Inject, Injectable, type OnModuleInit, type Type } from '@nestjs/common';
import { DiscoveryService, MetadataScanner, Reflector } from '@nestjs/core';
import { IdempotencyOptionError } from '../engine/duration';
import { transactionUnsupported } from '../engine/idempotency.engine';
import { IdempotencyStore } from '../stores/idempotency-store';
import { resolveOptions, type ResolvedIdempotencyOptions } from '../engine/resolved-options';
import { IDEMPOTENCY_MODULE_OPTIONS } from '../idempotency.constants';
import type { IdempotencyModuleOptions, IdempotentOptions } from '../idempotency.options';
import { Idempotent } from '../idempotent.decorator';
import { resolverFieldName, resolverMethodKind } from './graphql/graphql-resolvers';

/** Verbs a class-level `@Idempotent()` covers unless its `methods` say otherwise. */
export const DEFAULT_METHODS = ['POST', 'PATCH'] as const;

/** A handler `@Idempotent()` applies to, with its options resolved once. */
export interface IdempotentHandler {
  /** Module, class and handler options merged field by field, resolved. */
  options: ResolvedIdempotencyOptions;
  /**
   * Upper-case verbs a class-level decorator covers; `undefined` when the handler carries its own
   * decorator (it covers whatever its handler serves).
   */
  methods?: ReadonlySet<string>;
  /** The controller, or the GraphQL resolver. */
  controller: Type;
  handler: (...args: unknown[]) => unknown;
  /** `Controller.method` (or `Resolver.method`), for messages. */
  name: string;
}

/** Options of `@Idempotent()` as found on a handler and on its class, and merged. */
export interface MergedOptions {
  /** Module, class and handler options, merged field by field. */
  options: IdempotentOptions;
  onHandler?: IdempotentOptions;
  onClass?: IdempotentOptions;
}

/** The merged options of `handler` when `@Idempotent()` is on it or on its class. */
export function mergedOptions(
  reflector: Reflector,
  controller: Type,
  handler: object,
  defaults: IdempotentOptions,
): MergedOptions | undefined {
  const onHandler = reflector.get(Idempotent, handler as never);
  const onClass = reflector.get(Idempotent, controller);
  if (!onHandler && !onClass) {
    return undefined;
  }
  return { options: { ...defaults, ...onClass, ...onHandler }, onHandler, onClass };
}

/**
 * Every handler `@Idempotent()` applies to. At bootstrap it finds them all (the routes of
 * controllers and the mutations of GraphQL resolvers) and resolves their options, so an invalid
 * option fails the start with a message naming the controller (or resolver), the handler and the
 * option, rather than every request to that route failing later. Lookups after that are one
 * `WeakMap` read.
 */
@Injectable()
export class IdempotentHandlers implements OnModuleInit {
  private readonly byHandler = new WeakMap<object, IdempotentHandler | null>();
  private readonly defaults: IdempotentOptions;
  /** Whether the module option `issuedKeys` is set (routes with `key: 'issued'` need it). */
  private readonly issuing: boolean;
  /** The module's options alone, resolved: what `IdempotencyService.run()` starts from. */
  readonly moduleOptions: ResolvedIdempotencyOptions;

  constructor(
    @Inject(IDEMPOTENCY_MODULE_OPTIONS) options: IdempotencyModuleOptions,
    private readonly reflector: Reflector,
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
    private readonly store: IdempotencyStore,
  ) {
    const { store: _store, encryption: _encryption, issuedKeys, ...defaults } = options;
    this.defaults = defaults;
    this.issuing = issuedKeys !== undefined;
    // Throws at bootstrap, naming the option, when a module default is invalid.
    this.moduleOptions = resolveOptions(defaults);
    if (this.moduleOptions.issued !== undefined && !this.issuing) {
      throw new Error(issuedKeysMissing('the module option "key" of IdempotencyModule.forRoot()'));
    }
  }

  /** The module options merged under `options`, resolved (for `run()` calls with options). */
  resolve(options: IdempotentOptions): ResolvedIdempotencyOptions {
    return resolveOptions({ ...this.defaults, ...options });
  }

  onModuleInit(): void {
    for (const wrapper of this.discovery.getControllers()) {
      const controller = wrapper.metatype as Type | null;
      if (!controller?.prototype) {
        continue;
      }
      for (const name of this.scanner.getAllMethodNames(controller.prototype)) {
        this.get(controller, controller.prototype[name] as object);
      }
    }
    for (const wrapper of this.discovery.getProviders()) {
      const resolver = wrapper.metatype as Type | null;
      if (!resolver?.prototype) {
        continue;
      }
      for (const name of this.scanner.getAllMethodNames(resolver.prototype)) {
        this.checkResolverMethod(resolver, resolver.prototype[name] as object, name);
      }
    }
  }

  /**
   * GraphQL resolvers are providers: a root mutation is resolved here like a route, and a
   * handler-level `@Idempotent()` on any other field (a query, a subscription, a field resolver)
   * fails the start, since it would never be covered. A class-level one covers the mutations only.
   */
  private checkResolverMethod(resolver: Type, method: object, methodName: string): void {
    const kind = resolverMethodKind(method);
    if (kind === 'mutation') {
      this.get(resolver, method);
    } else if (kind !== undefined && this.reflector.get(Idempotent, method as never)) {
      const field = resolverFieldName(resolver, method, methodName);
      const what = kind === 'field' || kind === 'reference' ? 'a field resolver' : `a ${kind}`;
      throw new Error(
        `nestjs-idempotency: @Idempotent() on ${resolver.name}.${methodName}: the GraphQL field ${field} is ${what}; only root mutation fields can be idempotent. Remove the decorator (queries, subscriptions and field resolvers run on every call).`,
      );
    }
  }

  /** The handler's entry, or `null` when `@Idempotent()` is neither on it nor on its class. */
  get(controller: Type, handler: object): IdempotentHandler | null {
    let entry = this.byHandler.get(handler);
    if (entry === undefined) {
      entry = this.build(controller, handler as IdempotentHandler['handler']);
      this.byHandler.set(handler, entry);
    }
    return entry;
  }

  private build(controller: Type, handler: IdempotentHandler['handler']): IdempotentHandler | null {
    const merged = mergedOptions(this.reflector, controller, handler, this.defaults);
    if (!merged) {
      return null;
    }
    const name = `${controller.name}.${handler.name}`;
    let options: ResolvedIdempotencyOptions;
    try {
      options = resolveOptions(merged.options);
    } catch (error) {
      if (error instanceof IdempotencyOptionError) {
        const where =
          merged.onHandler && error.option in merged.onHandler
            ? `@Idempotent() on ${name}`
            : `@Idempotent() on the class ${controller.name}, which covers ${name}`;
        throw new Error(`nestjs-idempotency: ${where}: option "${error.option}" ${error.problem}`);
      }
      throw error;
    }
    if (options.issued !== undefined && !this.issuing) {
      const where =
        merged.onHandler && 'key' in merged.onHandler
          ? `@Idempotent() on ${name}`
          : `@Idempotent() on the class ${controller.name}, which covers ${name}`;
      throw new Error(issuedKeysMissing(where));
    }
    if (options.transaction && !this.store.transaction) {
      throw new Error(transactionUnsupported(this.store, `@Idempotent() on ${name}`));
    }
    return {
      options,
      methods: merged.onHandler
        ? undefined
        : new Set((merged.options.methods ?? DEFAULT_METHODS).map((m) => m.toUpperCase())),
      controller,
      handler,
      name,
    };
  }
}

/** The message of `key: 'issued'` without the module option `issuedKeys`. */
function issuedKeysMissing(where: string): string {
  return `nestjs-idempotency: ${where}: option "key" accepts only issued keys, which needs the module option "issuedKeys": IdempotencyModule.forRoot({ issuedKeys: { secrets: [{ id: 'k1', secret: process.env.IDEMPOTENCY_KEY_SECRET! }] } }), with a secret of at least 32 bytes.`;
}
