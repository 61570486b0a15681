import { type DynamicModule, Module } from '@nestjs/common';
import { IdempotencyPrometheusModule } from 'nestjs-idempotency/prometheus';
import { Registry } from 'prom-client';
import { MetricsController } from './metrics.controller';

/**
 * The app's Prometheus registry (injectable as `Registry`), the idempotency metrics in it, and
 * `GET /metrics`. Each `forRoot()` makes its own registry, so apps built side by side in one
 * process (the e2e tests) each serve their own; the counts are the process's, since the engine's
 * events are process-wide.
 */
@Module({})
export class MetricsModule {
  static forRoot(): DynamicModule {
    const registry = new Registry();
    return {
      module: MetricsModule,
      imports: [IdempotencyPrometheusModule.forRoot({ registry })],
      controllers: [MetricsController],
      providers: [{ provide: Registry, useValue: registry }],
      exports: [Registry],
    };
  }
}
