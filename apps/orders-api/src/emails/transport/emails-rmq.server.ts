import { Logger } from '@nestjs/common';
import { type ConsumerDeserializer, type IncomingEvent, ServerRMQ } from '@nestjs/microservices';
import { EMAILS_PATTERN } from '../email-message';

/** Unacknowledged messages RabbitMQ hands one consumer at a time. */
const PREFETCH = 8;

/**
 * Reads a message of the queue as it is published, a plain JSON body (`{ id, to, subject, body }`),
 * rather than Nest's `{ pattern, data }` packet: the queue holds one kind of message, so its pattern
 * is the queue's, and any producer (another service, `rabbitmqadmin`, the relay) publishes the
 * body alone, with no envelope of Nest's on the wire.
 */
export class EmailMessageDeserializer implements ConsumerDeserializer {
  deserialize(value: unknown): IncomingEvent {
    return { pattern: EMAILS_PATTERN, data: value };
  }
}

/** The parts of an amqplib channel a message is settled with. */
interface SettlingChannel {
  ack(...args: unknown[]): void;
  nack(...args: unknown[]): void;
  reject(...args: unknown[]): void;
}

/**
 * Nest's RabbitMQ server for the `emails` queue, with manual acknowledgements (noAck: false; the
 * library acks or nacks each message once its record is settled, `acknowledge`), a prefetch of
 * 8, and a shutdown that stops consuming and waits until every message delivered to it is acked
 * or nacked (up to `drainTimeoutMs`) before the channel closes: a message cut off there would only
 * be redelivered, but a clean stop sends nothing twice and logs no error.
 */
export class EmailsRmqServer extends ServerRMQ {
  private readonly log = new Logger('EmailsConsumer');
  private readonly consumerTag: string;
  private rawChannel: { cancel(tag: string): Promise<unknown> } | undefined;
  /** Messages delivered to this consumer and not yet acked or nacked. */
  private unsettled = 0;
  private onIdle: (() => void) | undefined;

  constructor(
    options: { url: string; queue: string },
    private readonly drainTimeoutMs: number,
  ) {
    const consumerTag = `orders-api-${process.pid}-${Date.now().toString(36)}`;
    super({
      urls: [options.url],
      queue: options.queue,
      queueOptions: { durable: true },
      noAck: false,
      prefetchCount: PREFETCH,
      consumerTag,
      deserializer: new EmailMessageDeserializer(),
    });
    this.consumerTag = consumerTag;
  }

  override async setupChannel(
    channel: Parameters<ServerRMQ['setupChannel']>[0],
    callback: () => void,
  ): Promise<void> {
    this.rawChannel = channel as unknown as EmailsRmqServer['rawChannel'];
    await super.setupChannel(channel, () => {
      this.log.log(`Consuming the RabbitMQ queue ${this.queue}`);
      callback();
    });
  }

  /** Hands the message on with a channel that counts it settled on its ack, nack or reject. */
  override handleMessage(message: Record<string, unknown>, channel: unknown): Promise<void> {
    if (!message) {
      return super.handleMessage(message, channel);
    }
    this.unsettled++;
    let settled = false;
    const settle = () => {
      if (!settled) {
        settled = true;
        this.unsettled--;
        if (this.unsettled === 0) {
          this.onIdle?.();
        }
      }
    };
    const real = channel as SettlingChannel;
    const tracked = Object.create(real, {
      ack: { value: (...args: unknown[]) => void this.settling(() => real.ack(...args), settle) },
      nack: { value: (...args: unknown[]) => void this.settling(() => real.nack(...args), settle) },
      reject: {
        value: (...args: unknown[]) => void this.settling(() => real.reject(...args), settle),
      },
    }) as SettlingChannel;
    return super.handleMessage(message, tracked);
  }

  override async close(): Promise<void> {
    try {
      await this.rawChannel?.cancel(this.consumerTag);
    } catch (error) {
      this.log.warn(`Could not stop consuming: ${String(error)}`);
    }
    if (this.unsettled > 0) {
      this.log.log(`Waiting for ${this.unsettled} message(s) being delivered`);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => (this.onIdle = resolve)),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, this.drainTimeoutMs);
        }),
      ]);
      clearTimeout(timer);
    }
    await super.close();
  }

  /** Runs `action`, then `after`, even when `action` throws (a closed channel). */
  private settling(action: () => void, after: () => void): void {
    try {
      action();
    } finally {
      after();
    }
  }
}
