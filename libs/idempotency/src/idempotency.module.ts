import { type DynamicModule, Module } from '@nestjs/common';
import { ModulesContainer } from '@nestjs/core';
import { IdempotencyInterceptor } from './idempotency.interceptor';
import { IDEMPOTENCY_MODULE_OPTIONS } from './idempotency.constants';
import {
  ConfigurableModuleClass,
  type IdempotencyModuleSyncOptions,
} from './idempotency.module-definition';
import type { IdempotencyModuleOptions } from './idempotency.options';
import { documentIdempotentRoutes } from './idempotency.swagger';
import { IdempotencyStore } from './idempotency-store';
import { MemoryIdempotencyStore } from './memory/memory-idempotency.store';

/**
 * Idempotency-Key support. `forRoot(options)` / `forRootAsync({ useFactory | useClass |
 * useExisting, inject, imports })` register the store and a global interceptor that acts on
 * handlers marked `@Idempotent()`.
 *
 * @example
 * IdempotencyModule.forRoot({ ttl: '24h' })
 * IdempotencyModule.forRootAsync({
 *   inject: [ConfigService],
 *   useFactory: (config: ConfigService) => ({ store: new RedisIdempotencyStore(config.get('REDIS_URL')) }),
 * })
 */
const IDEMPOTENCY_OPENAPI = Symbol('IDEMPOTENCY_OPENAPI');

@Module({
  providers: [
    {
      provide: IdempotencyStore,
      inject: [IDEMPOTENCY_MODULE_OPTIONS],
      useFactory: (options: IdempotencyModuleOptions) =>
        options.store ?? new MemoryIdempotencyStore(),
    },
    IdempotencyInterceptor,
    {
      // Documents @Idempotent() routes in the OpenAPI document when @nestjs/swagger is installed.
      provide: IDEMPOTENCY_OPENAPI,
      inject: [ModulesContainer, IDEMPOTENCY_MODULE_OPTIONS],
      useFactory: documentIdempotentRoutes,
    },
  ],
  exports: [IdempotencyStore, IdempotencyInterceptor, IDEMPOTENCY_MODULE_OPTIONS],
})
export class IdempotencyModule extends ConfigurableModuleClass {
  /** Registers the module with `options` (all optional: the defaults use the memory store). */
  static override forRoot(options: IdempotencyModuleSyncOptions = {}): DynamicModule {
    return super.forRoot(options);
  }
}
