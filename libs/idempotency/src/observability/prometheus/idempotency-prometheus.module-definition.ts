import { ConfigurableModuleBuilder } from '@nestjs/common';
import type { IdempotencyMetricsOptions } from './idempotency-metrics';

/** Injection token of the options of `IdempotencyPrometheusModule`. */
export const IDEMPOTENCY_PROMETHEUS_OPTIONS = Symbol('IDEMPOTENCY_PROMETHEUS_OPTIONS');

export const { ConfigurableModuleClass, OPTIONS_TYPE, ASYNC_OPTIONS_TYPE } =
  new ConfigurableModuleBuilder<IdempotencyMetricsOptions>({
    moduleName: 'IdempotencyPrometheus',
    optionsInjectionToken: IDEMPOTENCY_PROMETHEUS_OPTIONS,
  })
    .setClassMethodName('forRoot')
    .setFactoryMethodName('createIdempotencyMetricsOptions')
    .build();

/** Argument of `IdempotencyPrometheusModule.forRoot()`. */
export type IdempotencyPrometheusModuleOptions = typeof OPTIONS_TYPE;
/** Argument of `IdempotencyPrometheusModule.forRootAsync()`. */
export type IdempotencyPrometheusModuleAsyncOptions = typeof ASYNC_OPTIONS_TYPE;

/** What a class given to `forRootAsync({ useClass })` implements. */
export interface IdempotencyMetricsOptionsFactory {
  createIdempotencyMetricsOptions(): IdempotencyMetricsOptions | Promise<IdempotencyMetricsOptions>;
}
