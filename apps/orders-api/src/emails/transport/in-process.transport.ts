import { Inject, Injectable } from '@nestjs/common';
import { type CustomTransportStrategy, RmqContext, Server } from '@nestjs/microservices';
import { isObservable, lastValueFrom, type Observable } from 'rxjs';
import { ORDERS_API_CONFIG, type OrdersApiConfig } from '../../config/orders-api.config';
import { EMAILS_PATTERN, type EmailMessage } from '../email-message';

/** How the consumer settled a message handed to it in process. */
type Settlement = 'ack' | 'drop' | 'requeue';

/** How long a message may stay unsettled once its handler finished. */
const SETTLE_GRACE_MS = 5_000;

/**
 * The `emails` queue when no `AMQP_URL` is set: a Nest transport strategy that hands a message
 * straight to the consumer's `@EventPattern('emails')` handler, in this process, through the same
 * interceptors. The handler gets what it gets from RabbitMQ: an {@link RmqContext} with the
 * message (its `content` the JSON body, `properties.messageId` the outbox id) and a channel whose
 * `ack`, `nack` and `reject` settle the delivery, with RabbitMQ's meaning (noAck: false).
 *
 * {@link deliver} resolves once the consumer acked the message, or dropped it (nack or reject
 * without requeue); it rejects when the consumer asked for it again (requeue), or left it unsettled
 * 5 s after its handler finished, which RabbitMQ would redeliver. The relay then leaves the outbox row queued and
 * retries it, so nothing is lost if this process dies: the outbox table is the queue.
 */
@Injectable()
export class InProcessEmailTransport extends Server implements CustomTransportStrategy {
  private readonly running = new Set<Promise<unknown>>();
  private closed = false;

  constructor(@Inject(ORDERS_API_CONFIG) private readonly config: OrdersApiConfig) {
    super();
  }

  listen(callback: () => void): void {
    this.closed = false;
    callback();
  }

  /** Refuses new deliveries and waits for the running ones, up to `SHUTDOWN_TIMEOUT`. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.running.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, this.config.shutdownTimeoutMs);
      });
      await Promise.race([Promise.allSettled([...this.running]), deadline]);
      clearTimeout(timer);
    }
  }

  on(): void {
    // No events: nothing connects or disconnects in process.
  }

  unwrap<T>(): T {
    return this as unknown as T;
  }

  /** Hands `message` to the consumer; see the class for when it resolves. */
  deliver(message: EmailMessage): Promise<void> {
    if (this.closed) {
      return Promise.reject(new Error('The in-process email consumer is closed.'));
    }
    const delivery = this.run(message);
    this.running.add(delivery);
    void delivery.finally(() => this.running.delete(delivery)).catch(() => undefined);
    return delivery;
  }

  private run(message: EmailMessage): Promise<void> {
    const handler = this.getHandlerByPattern(EMAILS_PATTERN);
    if (!handler) {
      return Promise.reject(
        new Error(`No @EventPattern('${EMAILS_PATTERN}') handler is registered.`),
      );
    }
    const content = Buffer.from(JSON.stringify(message));
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const settle = (how: Settlement, error?: Error) => {
        if (settled) {
          return;
        }
        settled = true;
        clearTimeout(timer);
        if (how === 'requeue') {
          reject(error ?? new Error(`The consumer asked for email ${message.id} again (requeue).`));
        } else {
          resolve();
        }
      };
      const channel = {
        ack: () => settle('ack'),
        nack: (_message: unknown, _allUpTo?: boolean, requeue = true) =>
          settle(requeue ? 'requeue' : 'drop'),
        reject: (_message: unknown, requeue = true) => settle(requeue ? 'requeue' : 'drop'),
      };
      const amqpMessage = {
        content,
        fields: {
          deliveryTag: 1,
          redelivered: false,
          exchange: '',
          routingKey: EMAILS_PATTERN,
          consumerTag: 'in-process',
        },
        properties: {
          messageId: message.id,
          contentType: 'application/json',
          headers: {},
          deliveryMode: 2,
        },
      };
      // The consumer may settle after its handler finished (a requeue waits for retryAfter); a
      // message it never settles counts as one to deliver again, as RabbitMQ would.
      const finished = (error?: unknown) => {
        if (settled) {
          return;
        }
        timer = setTimeout(() => {
          const cause = error === undefined ? 'finished' : `failed (${describe(error)})`;
          settle(
            'requeue',
            new Error(`The consumer ${cause} without acknowledging email ${message.id}.`),
          );
        }, SETTLE_GRACE_MS).unref();
      };
      const context = new RmqContext([amqpMessage, channel, EMAILS_PATTERN]);
      void (async () => {
        try {
          const result: unknown = await handler(JSON.parse(content.toString()), context);
          if (isObservable(result)) {
            await lastValueFrom(result as Observable<unknown>, { defaultValue: undefined });
          }
        } catch (error) {
          finished(error);
          return;
        }
        finished();
      })();
    });
  }
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    return error.message;
  }
  try {
    return JSON.stringify(error);
  } catch {
    return String(error);
  }
}
