/**
 * A raw amqplib consumer (manual acks, no Nest transport) written as the README's recipe writes
 * it: `run()` keyed by the AMQP `messageId`, then ack; an in-progress duplicate is nacked with
 * requeue after `retryAfterMs`. Plus the fault hooks of ../fixtures/faults.ts on a message's first
 * delivery (named by its `x-test-fault` header). Started as a child process, twice, by
 * amqp.e2e-spec.ts.
 *
 * Environment, besides that of ../fixtures/shipments.ts: AMQP_URL and QUEUE.
 */
import 'reflect-metadata';
import {
  Injectable,
  Logger,
  Module,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { type Channel, type ChannelModel, connect, type ConsumeMessage } from 'amqplib';
import {
  IdempotencyRequestInProgressException,
  IdempotencyService,
  IdempotencyStoreUnavailableException,
} from 'nestjs-idempotency';
import { DeliveryFaults, type Fault } from '../fixtures/faults';
import { report, ShipmentsModule, ShipmentsService } from '../fixtures/shipments';

const QUEUE = process.env.QUEUE ?? 'shipments';

/** A message's body. */
interface ShipOrder {
  orderId: string;
}

@Injectable()
class ShipmentsConsumer implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger(ShipmentsConsumer.name);
  private connection?: ChannelModel;

  constructor(
    private readonly idempotency: IdempotencyService,
    private readonly shipments: ShipmentsService,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    this.connection = await connect(process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672');
    const channel = await this.connection.createChannel();
    await channel.assertQueue(QUEUE, { durable: true });
    await channel.prefetch(4);
    await channel.consume(
      QUEUE,
      (message) =>
        message &&
        void this.handle(channel, message).catch((error: unknown) =>
          this.logger.error(`message ${message.properties.messageId}: ${String(error)}`),
        ),
      { noAck: false },
    );
  }

  async onApplicationShutdown(): Promise<void> {
    await this.connection?.close();
  }

  private async handle(channel: Channel, message: ConsumeMessage): Promise<void> {
    const key: unknown = message.properties.messageId;
    if (typeof key !== 'string') {
      channel.nack(message, false, false);
      return;
    }
    const order = JSON.parse(message.content.toString()) as ShipOrder;
    const { redelivered } = message.fields;
    const faults = new DeliveryFaults(
      key,
      redelivered ? undefined : (message.properties.headers?.['x-test-fault'] as Fault),
    );
    faults.beforeRun('shipments', key);
    try {
      const { value, replayed } = await this.idempotency.run(
        key,
        async () => {
          const shipped = await this.shipments.ship(order.orderId, key);
          faults.inWork();
          return shipped;
        },
        { scope: 'shipments', payload: order, transaction: true },
      );
      channel.ack(message);
      report('done', {
        delivery: key,
        redelivered,
        replayed,
        shipmentId: value.shipmentId,
        shippedBy: value.worker,
      });
    } catch (error) {
      if (
        error instanceof IdempotencyRequestInProgressException ||
        error instanceof IdempotencyStoreUnavailableException
      ) {
        const delayMs =
          error instanceof IdempotencyRequestInProgressException ? error.retryAfterMs : 1_000;
        report('in-progress', { delivery: key, redelivered, retryAfterMs: delayMs });
        setTimeout(() => requeue(channel, message), delayMs);
        return;
      }
      this.logger.error(`message ${key} failed: ${String(error)}`);
      channel.nack(message, false, false);
    }
  }
}

/** Nacks with requeue; on a channel closed meanwhile, the broker has requeued it already. */
function requeue(channel: Channel, message: ConsumeMessage): void {
  try {
    channel.nack(message, false, true);
  } catch {
    // IllegalOperationError: the channel closed, and its unacked messages went back to the queue.
  }
}

@Module({ imports: [ShipmentsModule], providers: [ShipmentsConsumer] })
class ConsumerModule {}

async function main(): Promise<void> {
  const app = await NestFactory.createApplicationContext(ConsumerModule, {
    logger: ['error', 'warn'],
  });
  app.enableShutdownHooks();
  report('ready');
}

void main();
