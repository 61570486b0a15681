// A consumer process of test/rpc/rpc-processes.e2e-spec.ts: one Nest app listening on every broker
// named in TRANSPORTS, its @Idempotent() handlers in transactional mode on PostgreSQL, each effect
// an INSERT through transactionalEntityManager(). It prints one line per outcome, and kills itself
// (SIGKILL) right after the record of a `crash` event commits, before the message is acked.
import 'reflect-metadata';
import { subscribe } from 'node:diagnostics_channel';
import { Controller, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Ctx, EventPattern, MessagePattern, Payload } from '@nestjs/microservices';
import { DataSource } from 'typeorm';
import {
  IdempotencyChannel,
  type IdempotencyEventBase,
  type IdempotencyExecutedEvent,
  type IdempotencyRejectedEvent,
  Idempotent,
  IdempotencyModule,
} from 'nestjs-idempotency';
import {
  CreateIdempotencyRecordsTable1763800000000,
  TypeOrmIdempotencyStore,
  transactionalEntityManager,
} from 'nestjs-idempotency/typeorm';
import { brokerTransports, consumerPatterns as patterns } from './brokers';

const env = (name: string): string => {
  const value = process.env[name];
  if (!value) {
    throw new Error(`consumer: ${name} is not set`);
  }
  return value;
};

const NAME = env('CONSUMER');
const SUFFIX = env('SUFFIX');
const TRANSPORTS = env('TRANSPORTS').split(',');
const PATTERNS = patterns(SUFFIX);

/** Which transport a message came on, from its context class. */
const transportOf = (ctx: unknown) => (ctx as object).constructor.name.replace(/Context$/, '');

@Controller()
@Idempotent({ transaction: true, concurrent: 'wait', acknowledge: true, lockTtl: '5s' })
class EffectsController {
  constructor(private readonly dataSource: DataSource) {}

  @EventPattern<Record<string, { key: string }>>(PATTERNS.effect)
  async effect(@Payload() data: { key: string }, @Ctx() ctx: unknown) {
    await this.write(data.key, transportOf(ctx));
  }

  @EventPattern<Record<string, { key: string }>>(PATTERNS.crash)
  async crash(@Payload() data: { key: string }, @Ctx() ctx: unknown) {
    await this.write(data.key, transportOf(ctx));
  }

  @MessagePattern(PATTERNS.charge)
  async charge(@Payload() data: { key: string; amount: number }, @Ctx() ctx: unknown) {
    const id = await this.write(data.key, transportOf(ctx));
    return { effectId: id, amount: data.amount, by: NAME };
  }

  private async write(key: string, transport: string): Promise<number> {
    const transactional = transactionalEntityManager();
    const manager = transactional ?? this.dataSource.manager;
    const [row] = await manager.query(
      'INSERT INTO rpc_effects (effect_key, transport, consumer, in_transaction) VALUES ($1, $2, $3, $4) RETURNING id',
      [key, transport, NAME, transactional !== undefined],
    );
    return Number(row.id);
  }
}

async function main(): Promise<void> {
  const dataSource = await new DataSource({
    type: 'postgres',
    url: env('DATABASE_URL'),
    migrations: [CreateIdempotencyRecordsTable1763800000000],
  }).initialize();

  @Module({
    imports: [
      IdempotencyModule.forRoot({
        store: new TypeOrmIdempotencyStore({ dataSource, purgeIntervalMs: 0 }),
      }),
    ],
    controllers: [EffectsController],
    providers: [{ provide: DataSource, useValue: dataSource }],
  })
  class ConsumerModule {}

  const print = (what: string, event: IdempotencyEventBase, extra = '') =>
    process.stdout.write(`${NAME} ${what} ${event.target} ${extra}\n`);
  subscribe(IdempotencyChannel.Executed, (message) => {
    const event = message as IdempotencyExecutedEvent;
    print('executed', event, event.record);
    if (event.target === PATTERNS.crash && event.record === 'stored') {
      // The record and the effect have committed; the ack has not been sent.
      process.kill(process.pid, 'SIGKILL');
    }
  });
  subscribe(IdempotencyChannel.Replayed, (message) =>
    print('replayed', message as IdempotencyEventBase),
  );
  subscribe(IdempotencyChannel.Rejected, (message) =>
    print('rejected', message as IdempotencyEventBase, (message as IdempotencyRejectedEvent).code),
  );

  const app = await NestFactory.create(ConsumerModule, { logger: ['error', 'warn'] });
  for (const transport of brokerTransports(SUFFIX)) {
    if (TRANSPORTS.includes(transport.name)) {
      app.connectMicroservice(transport.server, { inheritAppConfig: true });
    }
  }
  await app.startAllMicroservices();
  await app.init();
  app.enableShutdownHooks();
  process.stdout.write(`${NAME} ready\n`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
