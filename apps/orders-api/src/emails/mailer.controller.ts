import {
  type ArgumentsHost,
  Catch,
  Controller,
  Logger,
  UseFilters,
  UseInterceptors,
} from '@nestjs/common';
import {
  BaseRpcExceptionFilter,
  Ctx,
  EventPattern,
  Payload,
  type RmqContext,
} from '@nestjs/microservices';
import { IdempotencyInterceptor, Idempotent } from 'nestjs-idempotency';
import { type Observable, throwError } from 'rxjs';
import { EMAILS_PATTERN, parseEmailMessage } from './email-message';
import { EmailsService } from './emails.service';
import { MailNotSentError, MailSender } from './mail-sender';

/**
 * Nest's RPC exception filter, but a send that failed for now is one warning line, not an error
 * with its stack: it is expected while an SMTP server is busy or down, and it is retried.
 */
@Catch()
export class MailerExceptionFilter extends BaseRpcExceptionFilter {
  private readonly logger = new Logger('Mailer');

  override catch(exception: unknown, host: ArgumentsHost): Observable<unknown> {
    if (exception instanceof MailNotSentError) {
      this.logger.warn(exception.message);
      return throwError(() => exception);
    }
    return super.catch(exception, host);
  }
}

/**
 * The mailer: consumes the `emails` queue (RabbitMQ, or the relay in process) and sends each
 * message once. `@Idempotent()` keys it by the AMQP `messageId` (the outbox id; an
 * `Idempotency-Key` header would take precedence), scoped to the pattern. With the TypeORM store
 * the app runs it in transactional mode: the row marked sent commits with the idempotency record,
 * and the library acknowledges the message only after that COMMIT (`acknowledge`), so a
 * redelivery finds the record completed and is acknowledged without a second send. A duplicate
 * arriving while the first is being sent is requeued after `retryAfter` (1 s); a send that failed
 * for now (a 4xx answer, no connection) releases the key and is requeued the same way.
 *
 * The interceptor is applied here rather than through `inheritAppConfig`: the app's global filter
 * and pipe are HTTP's.
 */
@Controller()
@UseInterceptors(IdempotencyInterceptor)
@UseFilters(MailerExceptionFilter)
export class MailerController {
  private readonly logger = new Logger('Mailer');

  constructor(
    private readonly emails: EmailsService,
    private readonly mailer: MailSender,
  ) {}

  @EventPattern<string>(EMAILS_PATTERN)
  @Idempotent({ acknowledge: true })
  async deliver(@Payload() data: unknown, @Ctx() context: RmqContext): Promise<void> {
    const email = parseEmailMessage(data);
    const messageId = (context.getMessage() as { properties?: { messageId?: unknown } }).properties
      ?.messageId;
    if ('invalid' in email || messageId !== email.id) {
      // Acknowledged and dropped: sending it again would not make it an email.
      this.logger.warn(
        `Dropped a message of the ${EMAILS_PATTERN} queue: ${'invalid' in email ? email.invalid : 'its messageId is not its id'}`,
      );
      return;
    }
    const delivery = await this.mailer.send(email);
    await this.emails.recordDelivery(email, delivery);
  }
}
