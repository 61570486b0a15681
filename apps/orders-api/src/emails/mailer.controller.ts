import { Controller, Logger } from '@nestjs/common';
import { Ctx, EventPattern, Payload, RmqContext } from '@nestjs/microservices';
import { IdempotencyRequestInProgressException, IdempotencyService } from 'nestjs-idempotency';
import { setTimeout as sleep } from 'node:timers/promises';
import { EMAILS_PATTERN, type EmailMessage, parseEmailMessage } from './email-message';
import { EmailsService } from './emails.service';
import { MailSender } from './mail-sender';

/** How long a message that failed waits before it goes back to the queue: no hot loop. */
const REQUEUE_DELAY_MS = 1_000;

/**
 * The mailer: consumes the `emails` queue (RabbitMQ, or the relay in process) and sends each
 * message once per outbox id. The delivery is idempotent, keyed by the AMQP `messageId` (the
 * outbox id); with the TypeORM store it is transactional, so the row marked sent commits with the
 * idempotency record and a redelivered message is acknowledged without a second send.
 */
@Controller()
export class MailerController {
  private readonly logger = new Logger('Mailer');

  constructor(
    private readonly emails: EmailsService,
    private readonly mailer: MailSender,
    private readonly idempotency: IdempotencyService,
  ) {}

  @EventPattern<string>(EMAILS_PATTERN)
  async deliver(@Payload() data: unknown, @Ctx() context: RmqContext): Promise<void> {
    const message = context.getMessage() as { properties?: { messageId?: unknown } };
    const channel = context.getChannelRef() as {
      ack(message: unknown): void;
      nack(message: unknown, allUpTo?: boolean, requeue?: boolean): void;
    };
    const messageId = message.properties?.messageId;
    const email = parseEmailMessage(data);
    if ('invalid' in email || typeof messageId !== 'string' || messageId !== email.id) {
      this.logger.warn(
        `Dropped a message of the ${EMAILS_PATTERN} queue: ${'invalid' in email ? email.invalid : 'its messageId is not its id'}`,
      );
      channel.nack(message, false, false);
      return;
    }
    try {
      await this.idempotency.run(messageId, () => this.send(email), {
        scope: EMAILS_PATTERN,
        payload: email,
      });
      channel.ack(message);
    } catch (error) {
      if (!(error instanceof IdempotencyRequestInProgressException)) {
        this.logger.warn(
          `Could not send email ${email.id}, it goes back to the queue: ${String(error)}`,
        );
      }
      await sleep(REQUEUE_DELAY_MS);
      channel.nack(message, false, true);
    }
  }

  /** Sends, then records the delivery (in the idempotency record's transaction, when there is one). */
  private async send(email: EmailMessage): Promise<void> {
    const delivery = await this.mailer.send(email);
    await this.emails.recordDelivery(email, delivery);
  }
}
