import { type DynamicModule, Module } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { getDataSourceToken, TypeOrmModule } from '@nestjs/typeorm';
import { IdempotencyModule } from 'nestjs-idempotency';
import type { DataSource } from 'typeorm';
import { CheckoutModule } from './checkout/checkout.module';
import { ProblemDetailsFilter } from './common/problem-details.filter';
import { ORDERS_API_CONFIG, type OrdersApiConfig } from './config/orders-api.config';
import { dataSourceOptions, openDatabase } from './database/database';
import { EmailsModule } from './emails/emails.module';
import { HealthModule } from './health/health.module';
import { MetricsModule } from './metrics/metrics.module';
import { createIdempotencyStore } from './idempotency/idempotency-store.factory';
import { OrdersModule } from './orders/orders.module';
import { PaymentsModule } from './payments/payments.module';

/** Holds the configuration, for every module of the app. */
@Module({})
class ConfigHolderModule {
  static register(config: OrdersApiConfig): DynamicModule {
    return {
      module: ConfigHolderModule,
      global: true,
      providers: [{ provide: ORDERS_API_CONFIG, useValue: config }],
      exports: [ORDERS_API_CONFIG],
    };
  }
}

/** The orders API; `forRoot(loadConfig())` builds it from the environment. */
@Module({})
export class AppModule {
  static forRoot(config: OrdersApiConfig): DynamicModule {
    return {
      module: AppModule,
      imports: [
        ConfigHolderModule.register(config),
        TypeOrmModule.forRootAsync({
          useFactory: () => ({
            ...dataSourceOptions(config.database),
            retryAttempts: 3,
            retryDelay: 1_000,
          }),
          dataSourceFactory: async (options) => openDatabase(options!),
        }),
        IdempotencyModule.forRootAsync({
          inject: [getDataSourceToken()],
          useFactory: (dataSource: DataSource) => ({
            lockTtl: config.idempotencyLockTtlMs,
            store: createIdempotencyStore(config, dataSource),
            // With the records in the app's own database, each POST's writes commit in one
            // transaction with its record: a retry never doubles an order, a payment or an email.
            transaction: config.idempotencyStore === 'typeorm',
            // Keys for the checkout page (POST /idempotency-keys): the first secret signs.
            issuedKeys: { secrets: config.issuedKeySecrets, ttl: config.issuedKeyTtlMs },
          }),
        }),
        OrdersModule,
        PaymentsModule,
        EmailsModule,
        HealthModule,
        CheckoutModule,
        MetricsModule.forRoot(),
      ],
      providers: [{ provide: APP_FILTER, useClass: ProblemDetailsFilter }],
    };
  }
}
