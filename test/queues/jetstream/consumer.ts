/**
 * A NATS JetStream consumer (a durable pull consumer, explicit acks) written as the README's
 * recipe writes it: `run()` keyed by the publisher's `Nats-Msg-Id`, then ack; an in-progress
 * duplicate is nak'ed with the delay `retryAfterMs`; `working()` keeps a long run's message from
 * being redelivered. Plus the fault hooks of ../fixtures/faults.ts on a message's first delivery
 * (named by its `x-test-fault` header). Started as a child process, twice, by
 * jetstream.e2e-spec.ts.
 *
 * Environment, besides that of ../fixtures/shipments.ts: NATS_URL, STREAM, CONSUMER (durable,
 * created by the suite) and ACK_WAIT_MS (the consumer's ack_wait).
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
import { type ConsumerMessages, jetstream, type JsMsg } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import {
  IdempotencyRequestInProgressException,
  IdempotencyService,
  IdempotencyStoreUnavailableException,
} from 'nestjs-idempotency';
import { DeliveryFaults, type Fault } from '../fixtures/faults';
import { report, ShipmentsModule, ShipmentsService } from '../fixtures/shipments';

const ACK_WAIT_MS = Number(process.env.ACK_WAIT_MS ?? 30_000);

/** A message's body. */
interface ShipOrder {
  orderId: string;
}

@Injectable()
class ShipmentsConsumer implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger(ShipmentsConsumer.name);
  private connection?: NatsConnection;
  private messages?: ConsumerMessages;

  constructor(
    private readonly idempotency: IdempotencyService,
    private readonly shipments: ShipmentsService,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    this.connection = await connect({ servers: process.env.NATS_URL ?? 'nats://127.0.0.1:4222' });
    const consumer = await jetstream(this.connection).consumers.get(
      process.env.STREAM!,
      process.env.CONSUMER!,
    );
    this.messages = await consumer.consume({ max_messages: 1 });
    void this.loop(this.messages);
  }

  async onApplicationShutdown(): Promise<void> {
    await this.messages?.close();
    await this.connection?.drain();
  }

  private async loop(messages: ConsumerMessages): Promise<void> {
    for await (const message of messages) {
      await this.handle(message).catch((error: unknown) =>
        this.logger.error(`message ${message.seq}: ${String(error)}`),
      );
    }
  }

  private async handle(message: JsMsg): Promise<void> {
    const key = message.headers?.get('Nats-Msg-Id');
    if (!key) {
      message.term('no Nats-Msg-Id');
      return;
    }
    const order = message.json<ShipOrder>();
    const { deliveryCount } = message.info;
    const { seq } = message;
    const faults = new DeliveryFaults(
      key,
      deliveryCount === 1 ? (message.headers?.get('x-test-fault') as Fault) : undefined,
    );
    faults.beforeRun('shipments', key);
    const working = setInterval(() => message.working(), ACK_WAIT_MS / 3);
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
      message.ack();
      report('done', {
        delivery: key,
        seq,
        deliveryCount,
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
        report('in-progress', { delivery: key, seq, deliveryCount, retryAfterMs: delayMs });
        message.nak(delayMs);
        return;
      }
      this.logger.error(`message ${key} failed: ${String(error)}`);
      message.nak(1_000);
    } finally {
      clearInterval(working);
    }
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
