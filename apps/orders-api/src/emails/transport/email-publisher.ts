import { Inject, Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import amqp, { type AmqpConnectionManager, type ChannelWrapper } from 'amqp-connection-manager';
import type { ConfirmChannel } from 'amqplib';
import { ORDERS_API_CONFIG, type OrdersApiConfig } from '../../config/orders-api.config';
import type { EmailMessage } from '../email-message';
import { InProcessEmailTransport } from './in-process.transport';

/** How long a publish may wait for the broker's confirmation before it counts as failed. */
const PUBLISH_TIMEOUT_MS = 10_000;

/** Where the relay publishes: RabbitMQ, or the consumer in process. */
export abstract class EmailPublisher {
  /** How many messages the relay may publish at once. */
  abstract readonly concurrency: number;

  /**
   * Publishes `message`. Resolves once it is safe to mark the outbox row published: RabbitMQ
   * confirmed it (publisher confirms: it is in the durable queue), or the in-process consumer
   * was done with it. Rejects otherwise, and the row stays queued.
   */
  abstract publish(message: EmailMessage): Promise<void>;
}

/**
 * Publishes to the durable queue `AMQP_QUEUE` on `AMQP_URL` over a confirm channel: the body is
 * the JSON message, `messageId` the outbox id, persistent. The connection is kept up and
 * re-established by amqp-connection-manager; while it is down, publishing fails at once.
 */
@Injectable()
export class AmqpEmailPublisher extends EmailPublisher implements OnApplicationShutdown {
  readonly concurrency = 32;
  private readonly logger = new Logger('OutboxRelay');
  private readonly connection: AmqpConnectionManager;
  private readonly channel: ChannelWrapper;
  private state: 'connecting' | 'up' | 'down' = 'connecting';

  constructor(@Inject(ORDERS_API_CONFIG) private readonly config: OrdersApiConfig) {
    super();
    this.connection = amqp.connect([config.amqpUrl!], {
      heartbeatIntervalInSeconds: 5,
      reconnectTimeInSeconds: 1,
    });
    this.connection.on('connect', () => {
      this.state = 'up';
      this.logger.log(`Publishing to the RabbitMQ queue ${config.amqpQueue}`);
    });
    const down = (error: Error | undefined) => {
      if (this.state !== 'down') {
        this.logger.warn(
          `RabbitMQ is unreachable (${error?.message ?? 'connection closed'}); emails wait in the outbox until it is back`,
        );
      }
      this.state = 'down';
    };
    this.connection.on('disconnect', ({ err }: { err?: Error }) => down(err));
    this.connection.on('connectFailed', ({ err }: { err?: Error }) => down(err));
    this.channel = this.connection.createChannel({
      confirm: true,
      json: false,
      publishTimeout: PUBLISH_TIMEOUT_MS,
      // The queue exists before anything is published to it: a message sent to a queue that
      // does not exist yet would be confirmed and dropped.
      setup: (channel: ConfirmChannel) =>
        channel.assertQueue(config.amqpQueue, { durable: true }).then(() => undefined),
    });
  }

  async publish(message: EmailMessage): Promise<void> {
    if (this.state !== 'up') {
      throw new Error('RabbitMQ is not connected');
    }
    await this.channel.sendToQueue(this.config.amqpQueue, Buffer.from(JSON.stringify(message)), {
      messageId: message.id,
      contentType: 'application/json',
      persistent: true,
    });
  }

  async onApplicationShutdown(): Promise<void> {
    await this.channel.close();
    await this.connection.close();
  }
}

/** Hands messages to the consumer in this process (no `AMQP_URL`), one at a time. */
@Injectable()
export class InProcessEmailPublisher extends EmailPublisher {
  readonly concurrency = 1;

  constructor(private readonly transport: InProcessEmailTransport) {
    super();
  }

  publish(message: EmailMessage): Promise<void> {
    return this.transport.deliver(message);
  }
}
