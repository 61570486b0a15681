import { type DynamicModule, Module } from '@nestjs/common';
import { DiscoveryModule, ModulesContainer } from '@nestjs/core';
import { HttpContextAdapter } from './contexts/http/http-context.adapter';
import { documentIdempotentRoutes } from './contexts/http/idempotency.swagger';
import { RpcContextAdapter } from './contexts/rpc/rpc-context.adapter';
import { IdempotentHandlers } from './contexts/idempotent-handlers';
import { IdempotencyEngine } from './engine/idempotency.engine';
import { IdempotencyInterceptor } from './idempotency.interceptor';
import { IdempotencyKeyIssuer } from './idempotency-key-issuer';
import { IDEMPOTENCY_MODULE_OPTIONS } from './idempotency.constants';
import {
  ConfigurableModuleClass,
  type IdempotencyModuleSyncOptions,
} from './idempotency.module-definition';
import type { IdempotencyModuleOptions } from './idempotency.options';
import { IdempotencyService } from './idempotency.service';
import { IdempotencyStore } from './stores/idempotency-store';
import { MemoryIdempotencyStore } from './stores/memory/memory-idempotency.store';

const IDEMPOTENCY_OPENAPI = Symbol('IDEMPOTENCY_OPENAPI');

/**
 * Idempotency-Key support. `forRoot(options)` / `forRootAsync({ useFactory | useClass |
 * useExisting, inject, imports })` register the store, the engine, `IdempotencyService`,
 * `IdempotencyKeyIssuer` and a global interceptor that acts on handlers marked `@Idempotent()`.
 *
 * @example
 * IdempotencyModule.forRoot({ ttl: '24h' })
 * IdempotencyModule.forRootAsync({
 *   imports: [ConfigModule],
 *   inject: [ConfigService],
 *   useFactory: (config: ConfigService) => ({
 *     store: new RedisIdempotencyStore(config.getOrThrow<string>('REDIS_URL')),
 *   }),
 * })
 */
@Module({
  imports: [DiscoveryModule],
  providers: [
    {
      provide: IdempotencyStore,
      inject: [IDEMPOTENCY_MODULE_OPTIONS],
      useFactory: (options: IdempotencyModuleOptions) =>
        options.store ?? new MemoryIdempotencyStore(),
    },
    IdempotencyEngine,
    IdempotentHandlers,
    IdempotencyKeyIssuer,
    HttpContextAdapter,
    RpcContextAdapter,
    IdempotencyInterceptor,
    IdempotencyService,
    {
      // Documents @Idempotent() routes in the OpenAPI document when @nestjs/swagger is installed.
      provide: IDEMPOTENCY_OPENAPI,
      inject: [ModulesContainer, IDEMPOTENCY_MODULE_OPTIONS],
      useFactory: documentIdempotentRoutes,
    },
  ],
  // The interceptor's own dependencies too: `@UseInterceptors(IdempotencyInterceptor)` builds it
  // in the module that uses it.
  exports: [
    IdempotencyStore,
    IdempotencyEngine,
    IdempotentHandlers,
    IdempotencyKeyIssuer,
    HttpContextAdapter,
    RpcContextAdapter,
    IdempotencyInterceptor,
    IdempotencyService,
    IDEMPOTENCY_MODULE_OPTIONS,
  ],
})
export class IdempotencyModule extends ConfigurableModuleClass {
  /** Registers the module with `options` (all optional: the defaults use the memory store). */
  static override forRoot(options: IdempotencyModuleSyncOptions = {}): DynamicModule {
    return super.forRoot(options);
  }
}
