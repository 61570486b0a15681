import amqplib, { type ChannelModel, type ConfirmChannel } from 'amqplib';
import { randomBytes } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { IdempotencyChannel } from 'nestjs-idempotency';

/** The machine's RabbitMQ (guest/guest), or `AMQP_URL`. */
export const RABBITMQ_URL = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';

/** A queue name of the test's own on the shared RabbitMQ. */
export const uniqueQueue = (prefix: string) => `${prefix}-${randomBytes(4).toString('hex')}`;

/** The test's own connection to RabbitMQ: publishes as any producer would, and looks at queues. */
export class Rabbit {
  private constructor(
    private readonly connection: ChannelModel,
    private readonly channel: ConfirmChannel,
  ) {}

  static async connect(): Promise<Rabbit> {
    const connection = await amqplib.connect(RABBITMQ_URL);
    return new Rabbit(connection, await connection.createConfirmChannel());
  }

  /** Publishes `body` (JSON unless a Buffer) to `queue` with `messageId`, and waits for the confirm. */
  async publish(queue: string, body: unknown, messageId?: string): Promise<void> {
    await this.channel.assertQueue(queue, { durable: true });
    this.channel.sendToQueue(
      queue,
      Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body)),
      { messageId, persistent: true, contentType: 'application/json' },
    );
    await this.channel.waitForConfirms();
  }

  /** Messages ready in `queue` (not counting those delivered and not yet acknowledged). */
  async ready(queue: string): Promise<number> {
    return (await this.channel.checkQueue(queue)).messageCount;
  }

  async deleteQueue(queue: string): Promise<void> {
    await this.channel.deleteQueue(queue);
  }

  async close(): Promise<void> {
    await this.connection.close();
  }
}

/**
 * Counts the mailer's idempotent calls in this process from the library's diagnostics channels:
 * runs (`executed`) and replays (`replayed`) of the `emails` target.
 */
export class MailerCalls {
  executed = 0;
  replayed = 0;
  private readonly onExecuted = (event: unknown) => {
    if ((event as { target: string }).target.includes('emails')) {
      this.executed++;
    }
  };
  private readonly onReplayed = (event: unknown) => {
    if ((event as { target: string }).target.includes('emails')) {
      this.replayed++;
    }
  };

  constructor() {
    subscribe(IdempotencyChannel.Executed, this.onExecuted);
    subscribe(IdempotencyChannel.Replayed, this.onReplayed);
  }

  close(): void {
    unsubscribe(IdempotencyChannel.Executed, this.onExecuted);
    unsubscribe(IdempotencyChannel.Replayed, this.onReplayed);
  }
}
