import { ConfigurableModuleBuilder } from '@nestjs/common';
import { APP_INTERCEPTOR } from '@nestjs/core';
import { IDEMPOTENCY_MODULE_OPTIONS } from './idempotency.constants';
import { IdempotencyInterceptor } from './idempotency.interceptor';
import type { IdempotencyModuleOptions } from './idempotency.options';

/** Static options of `forRoot()` / `forRootAsync()` that shape the module itself. */
export interface IdempotencyModuleExtras {
  /**
   * Register the module globally, so its store and interceptor are visible everywhere.
   * @default true
   */
  isGlobal?: boolean;
  /**
   * Register `IdempotencyInterceptor` as a global interceptor (`APP_INTERCEPTOR`). Set it to
   * `false` to apply it yourself with `@UseInterceptors(IdempotencyInterceptor)`.
   * @default true
   */
  registerInterceptor?: boolean;
}

export const { ConfigurableModuleClass, OPTIONS_TYPE, ASYNC_OPTIONS_TYPE } =
  new ConfigurableModuleBuilder<IdempotencyModuleOptions>({
    moduleName: 'Idempotency',
    optionsInjectionToken: IDEMPOTENCY_MODULE_OPTIONS,
  })
    .setClassMethodName('forRoot')
    .setFactoryMethodName('createIdempotencyOptions')
    .setExtras<IdempotencyModuleExtras>(
      { isGlobal: true, registerInterceptor: true },
      (definition, extras) => ({
        ...definition,
        global: extras.isGlobal,
        providers: [
          ...(definition.providers ?? []),
          ...(extras.registerInterceptor === false
            ? []
            : [{ provide: APP_INTERCEPTOR, useExisting: IdempotencyInterceptor }]),
        ],
      }),
    )
    .build();

/** Argument of `IdempotencyModule.forRoot()`. */
export type IdempotencyModuleSyncOptions = typeof OPTIONS_TYPE;
/** Argument of `IdempotencyModule.forRootAsync()`. */
export type IdempotencyModuleAsyncOptions = typeof ASYNC_OPTIONS_TYPE;
