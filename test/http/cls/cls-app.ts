/**
 * An app as teams on @nestjs-cls/transactional write it: services reach the database through
 * `TransactionHost.tx`, and the TypeORM store is given that TransactionHost, so an
 * `@Idempotent({ transaction: true })` route's writes commit with its record. Started as a child
 * process by cls-transaction.e2e-spec.ts (nestjs-cls is CommonJS and requires Nest, which only
 * Node's require(esm) loads: Jest's ESM mode on Node 20 cannot).
 *
 * Environment: CLS_APP_PORT, CLS_APP_PLATFORM (express | fastify), CLS_APP_DB_TYPE (postgres |
 * mariadb | better-sqlite3), CLS_APP_DB (URL, or the SQLite file), CLS_APP_EFFECTS (table name).
 */
import 'reflect-metadata';
import { Body, Controller, Injectable, Module, Post } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { ClsPluginTransactional, TransactionHost } from '@nestjs-cls/transactional';
import { TransactionalAdapterTypeOrm } from '@nestjs-cls/transactional-adapter-typeorm';
import { ClsModule } from 'nestjs-cls';
import { randomUUID } from 'node:crypto';
import { Idempotent, IdempotencyModule } from 'nestjs-idempotency';
import {
  CreateIdempotencyRecordsTable1763800000000,
  TypeOrmIdempotencyStore,
} from 'nestjs-idempotency/typeorm';
import { DataSource, type DataSourceOptions } from 'typeorm';

const type = process.env.CLS_APP_DB_TYPE ?? 'postgres';
const target = process.env.CLS_APP_DB ?? '';
const EFFECTS = process.env.CLS_APP_EFFECTS ?? 'tx_effects';
const placeholders = (n: number) =>
  Array.from({ length: n }, (_, i) => (type === 'postgres' ? `$${i + 1}` : '?')).join(', ');

const dataSource = new DataSource({
  ...(type === 'better-sqlite3'
    ? { type, database: target, enableWAL: true, timeout: 10_000 }
    : { type, url: target }),
  migrations: [CreateIdempotencyRecordsTable1763800000000],
  migrationsTableName: 'idempotency_cls_migrations',
} as DataSourceOptions);

/** Runs of each effect key: only a first run is held (see `holdMs`). */
const started = new Map<string, number>();

@Injectable()
class EffectsService {
  constructor(private readonly txHost: TransactionHost<TransactionalAdapterTypeOrm>) {}

  async create(body: { key: string; holdMs?: number; fail?: boolean }) {
    const run = (started.get(body.key) ?? 0) + 1;
    started.set(body.key, run);
    const id = randomUUID();
    await this.txHost.tx.query(
      `INSERT INTO ${EFFECTS} (id, effect_key) VALUES (${placeholders(2)})`,
      [id, body.key],
    );
    if (body.holdMs && run === 1) {
      await new Promise((resolve) => setTimeout(resolve, body.holdMs));
    }
    if (body.fail) {
      throw new Error('crashed after the write');
    }
    return { id, run, inTransaction: this.txHost.isTransactionActive() };
  }
}

@Controller('cls-effects')
class EffectsController {
  constructor(private readonly effects: EffectsService) {}

  @Post()
  @Idempotent({ transaction: true })
  create(@Body() body: { key: string; fail?: boolean }) {
    return this.effects.create(body);
  }

  @Post('stalling')
  @Idempotent({ transaction: true, lockTtl: 400, maxLockHold: 1 })
  stalling(@Body() body: { key: string; holdMs?: number }) {
    return this.effects.create(body);
  }
}

@Module({ providers: [{ provide: DataSource, useValue: dataSource }], exports: [DataSource] })
class DatabaseModule {}

@Module({
  imports: [
    DatabaseModule,
    ClsModule.forRoot({
      global: true,
      middleware: { mount: true },
      plugins: [
        new ClsPluginTransactional({
          imports: [DatabaseModule],
          adapter: new TransactionalAdapterTypeOrm({ dataSourceToken: DataSource }),
        }),
      ],
    }),
    IdempotencyModule.forRootAsync({
      imports: [DatabaseModule],
      inject: [TransactionHost, DataSource],
      useFactory: (
        transactionHost: TransactionHost<TransactionalAdapterTypeOrm>,
        source: DataSource,
      ) => ({
        store: new TypeOrmIdempotencyStore({
          dataSource: source,
          transactionHost,
          purgeIntervalMs: 0,
        }),
      }),
    }),
  ],
  controllers: [EffectsController],
  providers: [EffectsService],
})
class AppModule {}

async function main(): Promise<void> {
  await dataSource.initialize();
  await dataSource.runMigrations();
  const app =
    process.env.CLS_APP_PLATFORM === 'fastify'
      ? await NestFactory.create(AppModule, new FastifyAdapter(), { logger: ['error'] })
      : await NestFactory.create(AppModule, { logger: ['error'] });
  await app.listen(Number(process.env.CLS_APP_PORT ?? 0), '127.0.0.1');
  console.log(`cls-app listening on ${process.env.CLS_APP_PORT}`);
  const stop = () =>
    void app
      .close()
      .then(() => dataSource.destroy())
      .then(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

void main();
