import {
  type DynamicModule,
  Inject,
  Module,
  type OnModuleDestroy,
  type OnModuleInit,
} from '@nestjs/common';
import { type IdempotencyTracingOptions, registerIdempotencyTracing } from './idempotency-tracing';
import {
  ConfigurableModuleClass,
  IDEMPOTENCY_TRACING_OPTIONS,
  type IdempotencyTracingModuleOptions,
} from './idempotency-tracing.module-definition';

/**
 * OpenTelemetry span attributes and events for idempotent calls, on `@opentelemetry/api` (an
 * optional peer: `npm install @opentelemetry/api`). It subscribes
 * {@link registerIdempotencyTracing} while the application starts and unsubscribes when it
 * closes. The tracer provider, exporter and HTTP instrumentation are the app's own (the
 * OpenTelemetry Node SDK).
 *
 * @example
 * IdempotencyTracingModule.forRoot()
 * IdempotencyTracingModule.forRoot({ keyHash: false })
 */
@Module({})
export class IdempotencyTracingModule
  extends ConfigurableModuleClass
  implements OnModuleInit, OnModuleDestroy
{
  private dispose?: () => void;

  constructor(
    @Inject(IDEMPOTENCY_TRACING_OPTIONS) private readonly options: IdempotencyTracingOptions,
  ) {
    super();
  }

  /** Registers the module with `options` (all optional). */
  static override forRoot(options: IdempotencyTracingModuleOptions = {}): DynamicModule {
    return super.forRoot(options);
  }

  /** @throws Error naming `npm install @opentelemetry/api` when it is not installed. */
  async onModuleInit(): Promise<void> {
    this.dispose = await registerIdempotencyTracing(this.options);
  }

  onModuleDestroy(): void {
    this.dispose?.();
    this.dispose = undefined;
  }
}
