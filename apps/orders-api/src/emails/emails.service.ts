import { HttpStatus, Injectable, Logger } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { transactionalEntityManager } from 'nestjs-idempotency/typeorm';
import { randomUUID } from 'node:crypto';
import type { Repository } from 'typeorm';
import { ProblemCode, ProblemException } from '../common/problem';
import type { SendEmailDto } from './dto/email.dto';
import type { EmailMessage } from './email-message';
import type { Delivery } from './mail-sender';
import { OutboxMessage } from './outbox-message.entity';

/**
 * Emails go through an outbox: the request writes the message in the database (with its
 * idempotency record, in transactional mode, so a retried request never queues it twice), the
 * relay publishes it, and the mailer sends it and records the delivery here.
 */
@Injectable()
export class EmailsService {
  private readonly logger = new Logger('Emails');

  constructor(
    @InjectRepository(OutboxMessage) private readonly outbox: Repository<OutboxMessage>,
  ) {}

  async queue({ to, subject, body }: SendEmailDto): Promise<OutboxMessage> {
    const message = this.outbox.create({
      id: randomUUID(),
      to,
      subject,
      body,
      status: 'queued',
      createdAt: new Date(),
      attempts: 0,
      nextAttemptAt: null,
      publishedAt: null,
      sentAt: null,
      messageId: null,
      smtpResponse: null,
      capturedMessage: null,
    });
    await transactionalEntityManager(this.outbox.manager)
      .getRepository(OutboxMessage)
      .insert(message);
    return message;
  }

  list(): Promise<OutboxMessage[]> {
    return this.outbox.find({ order: { createdAt: 'ASC', id: 'ASC' } });
  }

  async get(id: string): Promise<OutboxMessage> {
    const message = await this.outbox.findOneBy({ id });
    if (!message) {
      throw new ProblemException(
        HttpStatus.NOT_FOUND,
        ProblemCode.EmailNotFound,
        'Email not found',
        `There is no email ${id}.`,
      );
    }
    return message;
  }

  /**
   * Records how `message` left, through the mailer's transaction when it runs in one (so it
   * commits with the idempotency record of the delivery), whatever state the row was in: the
   * relay may not have marked it published yet.
   */
  async recordDelivery(message: EmailMessage, delivery: Delivery): Promise<void> {
    const result = await transactionalEntityManager(this.outbox.manager)
      .createQueryBuilder()
      .update(OutboxMessage)
      .set({
        status: delivery.outcome === 'sent' ? 'sent' : 'failed',
        sentAt: new Date(),
        messageId: delivery.messageId,
        smtpResponse: delivery.smtpResponse,
        capturedMessage: delivery.outcome === 'sent' ? delivery.capturedMessage : null,
      })
      .where('id = :id', { id: message.id })
      .execute();
    if (!result.affected) {
      this.logger.warn(
        `Sent email ${message.id}, which is not in the outbox (published by another producer).`,
      );
    }
  }
}
