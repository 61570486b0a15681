import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { transactionalEntityManager } from 'nestjs-idempotency/typeorm';
import { randomUUID } from 'node:crypto';
import type { Repository } from 'typeorm';
import type { SendEmailDto } from './dto/email.dto';
import { OutboxMessage } from './outbox-message.entity';

/**
 * Emails go through an outbox: the request writes the message in the database and a sender
 * process (not part of the sample) delivers it. With the idempotency key, a retried request
 * never queues the message twice.
 */
@Injectable()
export class EmailsService {
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
    });
    // With the record, in transactional mode: a retried request never queues the message twice.
    await transactionalEntityManager(this.outbox.manager)
      .getRepository(OutboxMessage)
      .insert(message);
    return message;
  }

  list(): Promise<OutboxMessage[]> {
    return this.outbox.find({ order: { createdAt: 'ASC', id: 'ASC' } });
  }
}
