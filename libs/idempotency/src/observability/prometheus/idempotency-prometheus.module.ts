import {
  type DynamicModule,
  Inject,
  Module,
  type OnModuleDestroy,
  type OnModuleInit,
} from '@nestjs/common';
import { type IdempotencyMetricsOptions, registerIdempotencyMetrics } from './idempotency-metrics';
import {
  ConfigurableModuleClass,
  IDEMPOTENCY_PROMETHEUS_OPTIONS,
  type IdempotencyPrometheusModuleOptions,
} from './idempotency-prometheus.module-definition';

/**
 * Prometheus metrics of the idempotency engine, on prom-client (an optional peer:
 * `npm install prom-client`). It subscribes {@link registerIdempotencyMetrics} while the
 * application starts and unsubscribes when it closes. Serving the registry (`GET /metrics`) is
 * left to the app, which knows its registry and its routes.
 *
 * @example
 * const registry = new Registry();
 * IdempotencyPrometheusModule.forRoot({ registry })
 * IdempotencyPrometheusModule.forRootAsync({
 *   inject: [Registry],
 *   useFactory: (registry: Registry) => ({ registry, prefix: 'orders_' }),
 * })
 */
@Module({})
export class IdempotencyPrometheusModule
  extends ConfigurableModuleClass
  implements OnModuleInit, OnModuleDestroy
{
  private dispose?: () => void;

  constructor(
    @Inject(IDEMPOTENCY_PROMETHEUS_OPTIONS) private readonly options: IdempotencyMetricsOptions,
  ) {
    super();
  }

  /** Registers the module with `options` (all optional: the defaults use prom-client's `register`). */
  static override forRoot(options: IdempotencyPrometheusModuleOptions = {}): DynamicModule {
    return super.forRoot(options);
  }

  /** @throws Error naming `npm install prom-client` when prom-client is not installed. */
  async onModuleInit(): Promise<void> {
    this.dispose = await registerIdempotencyMetrics(this.options);
  }

  onModuleDestroy(): void {
    this.dispose?.();
    this.dispose = undefined;
  }
}
