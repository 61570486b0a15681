import { ConfigurableModuleBuilder } from '@nestjs/common';
import type { IdempotencyTracingOptions } from './idempotency-tracing';

/** Injection token of the options of `IdempotencyTracingModule`. */
export const IDEMPOTENCY_TRACING_OPTIONS = Symbol('IDEMPOTENCY_TRACING_OPTIONS');

export const { ConfigurableModuleClass, OPTIONS_TYPE, ASYNC_OPTIONS_TYPE } =
  new ConfigurableModuleBuilder<IdempotencyTracingOptions>({
    moduleName: 'IdempotencyTracing',
    optionsInjectionToken: IDEMPOTENCY_TRACING_OPTIONS,
  })
    .setClassMethodName('forRoot')
    .setFactoryMethodName('createIdempotencyTracingOptions')
    .build();

/** Argument of `IdempotencyTracingModule.forRoot()`. */
export type IdempotencyTracingModuleOptions = typeof OPTIONS_TYPE;
/** Argument of `IdempotencyTracingModule.forRootAsync()`. */
export type IdempotencyTracingModuleAsyncOptions = typeof ASYNC_OPTIONS_TYPE;

/** What a class given to `forRootAsync({ useClass })` implements. */
export interface IdempotencyTracingOptionsFactory {
  createIdempotencyTracingOptions(): IdempotencyTracingOptions | Promise<IdempotencyTracingOptions>;
}
